"""The snapshot contract: its summary per metric, the limits the core keeps it to, the frames."""

from __future__ import annotations

from servermanager.common import protocol as p
from servermanager.common.incidents import (
    MAX_JOURNAL_LINES,
    MAX_SNAPSHOT_BYTES,
    MAX_TOP,
    IncidentSnapshot,
    ProcessInfo,
    problems,
    summary,
)

PG = ProcessInfo(pid=1, name="postgres", cpu_pct=71.4, rss=3 << 30, read_bps=2e6, write_bps=9 << 20)
NGINX = ProcessInfo(pid=2, name="nginx", cpu_pct=12.0, rss=40 << 20, read_bps=0, write_bps=1024)
CRON = ProcessInfo(pid=3, name="cron", cpu_pct=0.3, rss=2 << 20)
IDLE = ProcessInfo(pid=4, name="idle", cpu_pct=0.0, rss=0)


def snap(**over: object) -> IncidentSnapshot:
    values: dict[str, object] = dict(
        ts=1.0, window=0.4, top_cpu=[PG, NGINX, CRON, IDLE], top_memory=[PG, NGINX]
    )
    values.update(over)
    return IncidentSnapshot(**values)  # type: ignore[arg-type]


def test_the_summary_names_what_matters_for_the_metric() -> None:
    s = snap()
    assert summary(s, "cpu_pct") == "top: postgres 71 %, nginx 12 %, cron 0.3 %"
    assert summary(s, "load1") == summary(s, "cpu_pct")
    assert summary(s, "mem_pct") == "top: postgres 3.0 GiB, nginx 40.0 MiB"
    assert summary(s, "disk_write_bps") == "top: postgres 9.0 MiB/s, nginx 1.0 KiB/s"
    assert summary(s, "disk_read_bps") == "top: postgres 1.9 MiB/s"
    assert summary(snap(top_cpu=[IDLE]), "cpu_pct") == "top by CPU: nothing busy"


def test_the_core_keeps_only_snapshots_within_the_limits() -> None:
    assert problems(snap()) is None
    assert problems(snap(top_memory=[PG] * (MAX_TOP + 1))) == "more than 20 processes in a list"
    assert problems(snap(journal=["x"] * (MAX_JOURNAL_LINES + 1))) == "more than 500 journal lines"
    big = snap(journal=["x" * 1000] * 200)
    assert problems(big) is not None and problems(big).endswith(
        f"more than the {MAX_SNAPSHOT_BYTES} a snapshot may take"
    )  # type: ignore[union-attr]


def test_the_frames_travel_both_ways() -> None:
    req = p.IncidentRequest(request_id="r1", lookback=90.0)
    assert p.decode(p.decoder(p.CoreToAgent), p.encode(req)) == req
    ans = p.Incident(request_id="r1", snapshot=snap(journal=["a", "b"], note="journal: only 2"))
    assert p.decode(p.decoder(p.AgentToCore), p.encode(ans)) == ans
    assert p.encode(p.Incident(request_id="r2", error="off")) == (
        b'{"type":"incident","request_id":"r2","snapshot":null,"error":"off"}'
    )
