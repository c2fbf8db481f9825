"""The agent's log service on real files: floods cut at the configured bytes with a truncated flag,
the follow cap, and the follow timeout."""

from __future__ import annotations

from pathlib import Path

from servermanager.agent.logread.config import LogsSettings
from servermanager.agent.logread.service import LogService
from servermanager.common.protocol import LogQuery, LogsCancel, LogsRequest
from tests.agent.logread.test_journal import Collector


def flood(path: Path, n: int) -> None:
    with path.open("a") as fh:
        fh.write("".join(f"flood line {i:07d} " + "x" * 60 + "\n" for i in range(n)))


async def test_a_one_shot_flood_is_cut_at_max_bytes(tmp_path: Path) -> None:
    f = tmp_path / "big.log"
    flood(f, 50_000)
    svc = LogService(LogsSettings(files=[str(f)], max_bytes_per_request=8192, max_lines_per_request=10_000))
    out = Collector()
    svc.handle(LogsRequest(request_id="a", query=LogQuery(source=str(f), lines=10_000)), out.send)
    await out.until(lambda: any(c.eof for c in out.chunks))
    last = out.chunks[-1]
    assert last.truncated and "max_bytes_per_request = 8192" in (last.note or "")
    lines = out.messages()
    assert len(lines) > 0 and sum(len(x) + 1 for x in lines) <= 8192
    assert lines[-1].startswith("flood line 0049999")  # the newest are kept


async def test_a_follow_flood_is_rate_cut_and_said_so(tmp_path: Path) -> None:
    f = tmp_path / "app.log"
    f.write_text("")
    svc = LogService(LogsSettings(files=[str(f)], max_bytes_per_second=2048), poll_every=0.05)
    out = Collector()
    svc.handle(LogsRequest(request_id="f", query=LogQuery(source=str(f), lines=0), follow=True), out.send)
    await out.until(lambda: svc.following == 1 and bool(out.chunks))
    flood(f, 20_000)  # 1.5 MB at once
    await out.until(lambda: any(c.truncated for c in out.chunks))
    cut = next(c for c in out.chunks if c.truncated)
    assert "bytes skipped: more than max_bytes_per_second = 2048" in (cut.note or "")
    assert sum(len(e.message) + 1 for c in out.chunks for e in c.entries) <= 2 * 2048
    with f.open("a") as fh:
        fh.write("calm\n")
    await out.until(lambda: "calm" in out.messages())
    svc.handle(LogsCancel(request_id="f"), out.send)
    await out.until(lambda: svc.following == 0)


async def test_follow_cap_and_timeout(tmp_path: Path) -> None:
    f = tmp_path / "app.log"
    f.write_text("one\n")
    svc = LogService(LogsSettings(files=[str(f)], max_follows=1, follow_timeout=1.0), poll_every=0.05)
    first, second = Collector(), Collector()
    svc.handle(LogsRequest(request_id="a", query=LogQuery(source=str(f)), follow=True), first.send)
    svc.handle(LogsRequest(request_id="b", query=LogQuery(source=str(f)), follow=True), second.send)
    await second.until(lambda: any(c.eof for c in second.chunks))
    assert second.chunks[-1].code == "busy" and "max_follows" in (second.chunks[-1].error or "")
    await first.until(lambda: any(c.eof for c in first.chunks), timeout=5)
    assert "follow_timeout" in (first.chunks[-1].note or "")
    assert first.messages() == ["one"]
    assert svc.following == 0
