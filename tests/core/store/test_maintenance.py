"""Upkeep on a real SQLite file: settling the head, rollups (late backfill, decimals, the minute's grace,
the hourly cadence), retention, and commits that land between a rollup's steps."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devkit.cores import RunningCore
from servermanager.common.metrics import Sample
from servermanager.common.series import SeriesPoint
from servermanager.core.store import maintenance
from servermanager.core.store.db import Database
from servermanager.core.store.devices import device_points
from servermanager.core.store.maintenance import HOURLY_EVERY, ROLLUP_GRACE_MS
from servermanager.core.store.rows import to_row
from servermanager.core.store.samples import SampleStore
from servermanager.core.store.series import POINT_INSERT
from servermanager.core.store.values import execute_values
from servermanager.core.store.writer import _DIRTY_INSERT, _HEAD_INSERT
from tests.helpers.core import RawAgent, metrics
from tests.helpers.store import make_samples, write_samples


async def test_rollups_avg_min_max_and_weighted_hours(store: SampleStore) -> None:
    t0 = 1_700_000_040.0 - (1_700_000_040.0 % 3600)  # an hour boundary
    # Minute 0: 60 samples of cpu 0..59; minute 1: 30 samples of cpu 100.
    await write_samples(store, 1, make_samples(t0, 60, 1.0, cpu=[float(i) for i in range(60)]))
    await write_samples(store, 1, make_samples(t0 + 60, 30, 2.0, cpu=[100.0] * 30, seq0=61))
    await store.rollup()
    m = await store.history(1, t0, t0 + 3600, "1m", ["cpu_pct"])
    assert m["ts"] == [t0, t0 + 60]
    assert m["avg"]["cpu_pct"] == [29.5, 100.0]
    assert m["min"]["cpu_pct"] == [0.0, 100.0]
    assert m["max"]["cpu_pct"] == [59.0, 100.0]
    h = await store.history(1, t0, t0 + 3600, "1h", ["cpu_pct"])
    assert h["ts"] == [t0]
    # Weighted by sample count: (60 * 29.5 + 30 * 100) / 90, not the mean of the two minutes.
    assert h["avg"]["cpu_pct"][0] == pytest.approx((60 * 29.5 + 30 * 100) / 90)
    assert (h["min"]["cpu_pct"][0], h["max"]["cpu_pct"][0]) == (0.0, 100.0)


async def test_late_backfill_recomputes_its_buckets(store: SampleStore) -> None:
    t0 = 1_700_000_000.0 - (1_700_000_000.0 % 60)
    await write_samples(store, 1, make_samples(t0, 10, 1.0, cpu=[10.0] * 10))
    await store.rollup()
    # Samples for the same minute arrive after it was rolled up (agent backfilling a spool).
    await write_samples(store, 1, make_samples(t0 + 30, 10, 1.0, cpu=[50.0] * 10, seq0=11))
    await store.rollup()
    m = await store.history(1, t0, t0 + 60, "1m", ["cpu_pct"])
    assert m["avg"]["cpu_pct"] == [30.0]
    assert m["max"]["cpu_pct"] == [50.0]


async def test_retention_per_resolution(store: SampleStore) -> None:
    now = 1_800_000_000.0
    old = now - 3 * 86400
    old_samples = make_samples(old, 5, 1.0)
    await write_samples(store, 1, old_samples + make_samples(now - 10, 5, 1.0, seq0=6))
    await store.rollup(now=now)
    removed = await store.prune({"raw": 48 * 3600, "1m": 30 * 86400, "1h": 730 * 86400}, now=now)
    # The five raw rows and their device series points (core/store/devices.py).
    assert removed == 5 + len(device_points(1, old_samples))
    assert await store.seqs(1) == [6, 7, 8, 9, 10]
    # The old minute survives as a rollup, so history beyond raw retention still works.
    m = await store.history(1, old - 60, now, "1m", ["cpu_pct"])
    assert m["ts"][0] == old - old % 60
    removed = await store.prune({"raw": 1, "1m": 1, "1h": 1}, now=now + 7200)
    assert await store.history(1, 0, now + 7200, "1h", ["cpu_pct"]) == {
        "ts": [],
        "avg": {"cpu_pct": []},
        "min": {"cpu_pct": []},
        "max": {"cpu_pct": []},
        "step": None,
    }


async def test_rollups_keep_each_fields_decimals(store: SampleStore) -> None:
    t0 = 1_700_000_040.0 - (1_700_000_040.0 % 3600)
    cpu = [10.0, 10.0, 10.1]  # mean 10.0333..., kept to hundredths
    mem = [1000, 1001, 1001]  # mean 1000.666..., bytes: whole
    rx = [0.2, 0.5, 0.51]  # rates: mean 0.40333..., whole bytes/s
    samples = [
        Sample(seq=i + 1, ts=t0 + i, metrics=metrics(cpu=c, mem_used=m, net_rx_bps=r))
        for i, (c, m, r) in enumerate(zip(cpu, mem, rx, strict=True))
    ]
    await write_samples(store, 1, samples)
    await store.rollup()
    fields = ["cpu_pct", "mem_used", "net_rx_bps"]
    for res, points in (("1m", None), ("1h", None), ("1m", 10), ("raw", 2)):
        h = await store.history(1, t0, t0 + 59, res, fields, points=points)
        assert h["avg"] == {"cpu_pct": [10.03], "mem_used": [1001], "net_rx_bps": [0]}, (res, points)
        assert h["max"] == {"cpu_pct": [10.1], "mem_used": [1001], "net_rx_bps": [1]}, (res, points)
    # Whole-unit fields go out as JSON integers, not `1001.0`.
    raw = await store.history(1, t0, t0 + 59, "1m", fields, encoded=True)
    assert bytes(raw["avg"]["mem_used"]) == b"[1001]"
    assert bytes(raw["min"]["net_rx_bps"]) == b"[0]" and bytes(raw["avg"]["cpu_pct"]) == b"[10.03]"
    # Raw rows too, rounded (not truncated) to whole units: 0.2, 0.5 and 0.51 bytes/s.
    rows = await store.history(1, t0, t0 + 59, "raw", fields, encoded=True)
    assert (
        bytes(rows["avg"]["net_rx_bps"]) == b"[0,1,1]"
        and bytes(rows["avg"]["mem_used"]) == b"[1000,1001,1001]"
    )


async def _tier_counts(store: SampleStore) -> tuple[int, int]:
    head = await store.db.fetchone("SELECT count(*) FROM samples_head")
    raw = await store.db.fetchone("SELECT count(*) FROM samples_raw")
    return head[0], raw[0]


async def test_commits_land_in_the_head_and_settle_moves_them_in_node_order(store: SampleStore) -> None:
    t0 = 1_700_000_000.0
    await write_samples(store, 1, make_samples(t0, 5, 1.0, cpu=[1.0] * 5))
    await write_samples(store, 2, make_samples(t0, 3, 1.0, cpu=[2.0] * 3))
    assert await _tier_counts(store) == (8, 0)
    # Readers see head rows before any settle: history, seqs and the latest sample.
    m = await store.history(1, t0, t0 + 10, "raw", ["cpu_pct"])
    assert m["ts"] == [t0 + i for i in range(5)]
    assert await store.seqs(2) == [1, 2, 3]
    latest = await store.latest(1)
    assert latest is not None and latest.seq == 5
    assert await store.settle() == 8
    assert await _tier_counts(store) == (0, 8)
    assert (await store.history(1, t0, t0 + 10, "raw", ["cpu_pct"])) == m
    assert await store.seqs(2) == [1, 2, 3]


async def test_a_resend_in_both_tiers_is_read_and_settled_once(store: SampleStore) -> None:
    t0 = 1_700_000_000.0
    first = make_samples(t0, 4, 1.0)
    await write_samples(store, 1, first)
    await store.settle()
    # The agent never heard the ack and resends the last two, plus a new one.
    await write_samples(store, 1, first[2:] + make_samples(t0 + 4, 1, 1.0, seq0=5))
    assert await _tier_counts(store) == (3, 4)
    assert await store.seqs(1) == [1, 2, 3, 4, 5]
    m = await store.history(1, t0, t0 + 10, "raw", ["cpu_pct", "procs"])
    assert m["ts"] == [t0 + i for i in range(5)]
    assert await store.settle() == 1  # the two duplicates are dropped, not stored twice
    assert await _tier_counts(store) == (0, 5)


async def test_rollup_settles_first_so_buckets_see_every_row(store: SampleStore) -> None:
    t0 = 1_700_000_040.0 - (1_700_000_040.0 % 60)
    await write_samples(store, 1, make_samples(t0, 10, 1.0, cpu=[10.0] * 10))
    await store.settle()
    await write_samples(store, 1, make_samples(t0 + 10, 10, 1.0, cpu=[30.0] * 10, seq0=11))
    await store.rollup()
    m = await store.history(1, t0, t0 + 60, "1m", ["cpu_pct"])
    assert m["avg"]["cpu_pct"] == [20.0]
    assert await _tier_counts(store) == (0, 20)


async def test_background_jobs_roll_up_and_prune(tmp_path: Path) -> None:
    from tests.helpers.wait import wait_until

    server = await RunningCore(
        tmp_path / "c", rollup_every=0.05, prune_every=0.05, retention_raw=3600.0, sample_max_age=3500.0
    ).start()
    try:
        agent = RawAgent(server)
        welcome = await agent.hello(token=await server.enroll_token())
        now = time.time()
        await agent.send_samples(agent.make(5, ts=now - 3400, cpu=20.0))  # soon past raw retention
        await agent.send_samples(agent.make(5, ts=now - 125, cpu=40.0))  # a minute that is over
        token = await server.admin_token()
        path = f"/api/v1/nodes/{welcome.node_id}/metrics?from={now - 3500}&to={now + 60}&resolution=1m&fields=cpu_pct"
        _, body = await wait_until(
            # Both minutes: the first five samples can straddle two minutes of their own.
            lambda: server.request("GET", path, token),
            lambda r: {20.0, 40.0} <= set(r[1]["avg"]["cpu_pct"]),
            what="rollup job",
        )
        assert len(body["ts"]) >= 2
        # Shrink retention under the old samples: the prune job drops raw rows, rollups stay.
        server.settings.retention_raw = 1000.0
        await wait_until(
            lambda: server.core.store.seqs(welcome.node_id), lambda s: s == [6, 7, 8, 9, 10], what="prune job"
        )
        _, body = await server.request("GET", path, token)
        assert 20.0 in body["avg"]["cpu_pct"]
    finally:
        await server.stop()


async def test_a_minute_is_rolled_up_once_it_is_over(store: SampleStore) -> None:
    t0 = 1_700_000_040.0 - (1_700_000_040.0 % 3600)
    await write_samples(store, 1, make_samples(t0, 30, 1.0, cpu=[20.0] * 30))
    # Mid-minute, and within the grace after it: the bucket stays marked, nothing is written.
    for now in (t0 + 30, t0 + 60 + ROLLUP_GRACE_MS / 1000 - 0.5):
        assert await store.rollup(now=now) == 0
        assert (await store.history(1, t0, t0 + 60, "1m", ["cpu_pct"]))["ts"] == []
    await write_samples(store, 1, make_samples(t0 + 30, 30, 1.0, cpu=[40.0] * 30, seq0=31))
    assert await store.rollup(now=t0 + 60 + ROLLUP_GRACE_MS / 1000) == 2  # the minute, then its hour
    m = await store.history(1, t0, t0 + 60, "1m", ["cpu_pct"])
    assert m["avg"]["cpu_pct"] == [30.0] and m["min"]["cpu_pct"] == [20.0]
    assert (await store.history(1, t0, t0 + 3600, "1h", ["cpu_pct"]))["avg"]["cpu_pct"] == [30.0]


async def test_minute_only_pass_keeps_hours_marked_for_later(store: SampleStore) -> None:
    t0 = 1_700_000_040.0 - (1_700_000_040.0 % 3600)
    await write_samples(store, 1, make_samples(t0, 60, 1.0, cpu=[20.0] * 60))
    await store.rollup(hours=False)
    assert (await store.history(1, t0, t0 + 60, "1m", ["cpu_pct"]))["avg"]["cpu_pct"] == [20.0]
    assert (await store.history(1, t0, t0 + 3600, "1h", ["cpu_pct"]))["ts"] == []
    await store.rollup(hours=True)
    assert (await store.history(1, t0, t0 + 3600, "1h", ["cpu_pct"]))["avg"]["cpu_pct"] == [20.0]


async def test_the_periodic_pass_refreshes_hours_every_sixth_pass(store: SampleStore) -> None:
    t0 = 1_700_000_040.0 - (1_700_000_040.0 % 3600)
    grace = ROLLUP_GRACE_MS / 1000

    async def minute(k: int, cpu: float) -> int:
        """Write minute k of the hour, then run one pass once it is over; returns buckets done."""
        await write_samples(store, 1, make_samples(t0 + 60 * k, 60, 1.0, cpu=[cpu] * 60, seq0=60 * k + 1))
        return await store.rollup_pass(now=t0 + 60 * (k + 1) + grace)

    async def hour() -> list[float]:
        return (await store.history(1, t0, t0 + 3599, "1h", ["cpu_pct"]))["avg"]["cpu_pct"]

    assert await minute(0, 20.0) == 2  # the first pass does both levels
    assert await hour() == [20.0]
    for k in range(1, HOURLY_EVERY):
        assert await minute(k, 80.0) == 1, k  # the minute only: its hour stays marked
        assert len((await store.history(1, t0, t0 + 3599, "1m", ["cpu_pct"]))["ts"]) == k + 1
        assert await hour() == [20.0], k
    assert await store.rollup_pass(now=t0 + 3600) == 1  # the sixth pass after the first: the hour
    assert await hour() == [(20.0 + 80.0 * (HOURLY_EVERY - 1)) / HOURLY_EVERY]


class _CommitBetween(Database):
    """A real database that commits a late batch just before its `at`-th transaction begins.

    The commit loop and the rollup job share the writer, and a commit may take it between any
    two of the job's transactions; this makes that happen at one chosen point.
    """

    def __init__(self, path: Path, late: list[Sample]) -> None:
        super().__init__(path)
        self.late, self.opened = late, 0
        self.at: int | None = None

    @contextlib.asynccontextmanager
    async def transaction(self, bulk: bool = False, held: bool = False):  # type: ignore[no-untyped-def,override]
        self.opened += 1
        if self.opened == self.at:
            rows = [to_row(1, x) for x in self.late]
            async with super().transaction() as con:
                await execute_values(con, _HEAD_INSERT, rows)
                await execute_values(con, _DIRTY_INSERT, [("1m", 1, r[1] // 60_000 * 60_000) for r in rows])
        async with super().transaction(bulk, held) as con:
            yield con


@pytest.mark.parametrize("at", [1, 2], ids=["before-the-pass", "between-its-steps"])
async def test_a_commit_between_rollup_steps_is_rolled_up(tmp_path: Path, at: int) -> None:
    t0 = 1_700_000_040.0 - (1_700_000_040.0 % 3600)
    db = _CommitBetween(tmp_path / "s.db", make_samples(t0 - 120, 5, 1.0, cpu=[70.0] * 5, seq0=100))
    await db.open()
    try:
        await db.execute("INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', x'00', 0)")
        store = SampleStore(db, flush_every=0.001)
        await write_samples(store, 1, make_samples(t0, 5, 1.0, cpu=[10.0] * 5))
        db.at, db.opened = at, 0  # count the rollup pass's transactions from here
        await store.rollup()
        assert db.opened >= at, "the late batch was never committed"
        await store.rollup()  # whatever the first pass could not see, the next one does
        m = await store.history(1, t0 - 120, t0 + 59, "1m", ["cpu_pct"])
        assert m["ts"] == [t0 - 120, t0] and m["avg"]["cpu_pct"] == [70.0, 10.0]
    finally:
        await db.close()


@pytest.mark.parametrize(
    "at", [1, 2, 3, 4], ids=["before-the-settle", "before-node-1", "between-slices", "before-the-hours"]
)
async def test_a_commit_between_rollup_slices_is_rolled_up(
    store: SampleStore, monkeypatch: pytest.MonkeyPatch, at: int
) -> None:
    """With a slice per node, late rows of node 2 (samples and a series point) committed before
    each of the pass's transactions in turn all reach node 2's minute, in this pass or the next."""
    monkeypatch.setattr(maintenance, "SLICE_MARKS", 1)
    t0 = 1_700_000_040.0 - (1_700_000_040.0 % 3600)
    late_ts = round((t0 - 120) * 1000)

    def with_point(samples: list[Sample], value: float) -> list[Sample]:
        return [
            Sample(
                seq=s.seq,
                ts=s.ts,
                metrics=metrics(cpu=s.metrics.cpu_pct, series=[SeriesPoint("q", value)], disks=[], nets=[]),
            )
            for s in samples
        ]

    for node in (1, 2):
        await write_samples(store, node, with_point(make_samples(t0, 5, 1.0, cpu=[10.0] * 5), 10.0))
    found = await store.series.find(2, "q", {})
    assert found is not None
    sid = found[0]
    late = [to_row(2, s) for s in make_samples(t0 - 120, 5, 1.0, cpu=[70.0] * 5, seq0=100)]
    begin, opened = store.db.transaction, 0

    @contextlib.asynccontextmanager
    async def transaction(bulk: bool = False, held: bool = False) -> AsyncIterator[Any]:
        nonlocal opened
        opened += 1
        if opened == at:
            async with begin() as con:
                await execute_values(con, _HEAD_INSERT, late)
                await execute_values(con, POINT_INSERT, [(sid, r[1], 70.0) for r in late])
                await execute_values(con, _DIRTY_INSERT, [("1m", 2, late_ts // 60_000 * 60_000)])
        async with begin(bulk, held) as con:
            yield con

    monkeypatch.setattr(store.db, "transaction", transaction)
    await store.rollup()
    assert opened >= 4, "the pass did not go in a settle, a slice per node, and the hours"
    monkeypatch.setattr(store.db, "transaction", begin)
    await store.rollup()  # whatever the first pass could not see, the next one does
    m = await store.history(2, t0 - 120, t0 + 59, "1m", ["cpu_pct"])
    assert m["ts"] == [t0 - 120, t0] and m["avg"]["cpu_pct"] == [70.0, 10.0]
    s = await store.series.history(sid, t0 - 120, t0 + 59, "1m")
    assert s["ts"] == [t0 - 120, t0] and s["avg"] == [70.0, 10.0]
    assert (await store.history(1, t0 - 120, t0 + 59, "1m", ["cpu_pct"]))["ts"] == [t0]


def test_slices_cover_every_node_in_order_with_about_slice_marks_each() -> None:
    marks = [(3, 400), (5, 200), (9, 700), (12, 10), (20, 10)]
    assert maintenance._slices(marks) == [(0, 8), (9, 11), (12, 1 << 62)]
    assert maintenance._slices([]) == []
    assert maintenance._slices([(7, 1)]) == [(0, 1 << 62)]


@pytest.mark.parametrize("table", ["samples_raw", "samples_1m", "samples_1h"])
async def test_prune_seeks_each_nodes_old_rows_through_the_key(tmp_path: Path, table: str) -> None:
    """Not a scan of the whole table under the write lock on every prune pass."""
    db = Database(tmp_path / "s.db")
    await db.open()
    try:
        plan = await db.fetchall("EXPLAIN QUERY PLAN " + maintenance.PRUNE.format(table=table), (0, 10))
        details = [str(r[3]) for r in plan]
        assert f"SCAN {table}" not in details, details
        assert any(d.startswith(f"SEARCH {table} USING PRIMARY KEY (node_id=? AND ts<?)") for d in details)
    finally:
        await db.close()
