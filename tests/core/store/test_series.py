"""Named series: stored with their sample, rolled up by the rollup job, pruned and deleted with the node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from servermanager.common.metrics import Sample
from servermanager.common.series import SeriesPoint
from servermanager.core.store import series
from servermanager.core.store.db import Database
from servermanager.core.store.samples import SampleStore
from tests.helpers.core import metrics


def sample(seq: int, ts: float, *points: SeriesPoint) -> Sample:
    return Sample(seq=seq, ts=ts, metrics=metrics(series=list(points)))


def up(v: float, check: str = "web") -> SeriesPoint:
    return SeriesPoint("check_up", v, {"check": check})


async def test_points_stored_listed_and_read_back(store: SampleStore) -> None:
    runner = asyncio.create_task(store.run())
    try:
        t0 = float(int(time.time()) - 100)  # whole seconds: ts read back compare exactly
        await store.store(
            1,
            [
                sample(1, t0, up(1), SeriesPoint("queue_depth", 5, unit="jobs")),
                sample(2, t0 + 1, up(0), SeriesPoint("queue_depth", 7, unit="jobs")),
                sample(3, t0 + 2, up(1, "db")),
            ],
        )
        await store.store(2, [sample(1, t0, up(1))])
        listed = await store.series.list(1)
        assert [(n, lab, unit, v) for _, n, lab, unit, _, v in listed] == [
            ("check_up", {"check": "db"}, None, 1.0),
            ("check_up", {"check": "web"}, None, 0.0),
            ("queue_depth", {}, "jobs", 7.0),
        ]
        found = await store.series.find(1, "check_up", {"check": "web"})
        assert found is not None
        got = await store.series.history(found[0], t0 - 1, t0 + 10, "raw")
        assert got["avg"] == [1.0, 0.0]
        assert [round(t, 3) for t in got["ts"]] == [round(t0, 3), round(t0 + 1, 3)]
        # Another node's series of the same name and labels is its own.
        other = await store.series.find(2, "check_up", {"check": "web"})
        assert other is not None and other[0] != found[0]
        # A replay (lost ack, resent batch) adds nothing.
        await store.store(1, [sample(2, t0 + 1, up(1))])
        again = await store.series.history(found[0], t0 - 1, t0 + 10, "raw")
        assert again["avg"] == [1.0, 0.0]
        # The sample's detail blob does not carry them a second time.
        back = await store.latest(1)
        assert back is not None and back.metrics.series == []
    finally:
        runner.cancel()


async def test_rollups_prune_and_node_deletion(store: SampleStore) -> None:
    runner = asyncio.create_task(store.run())
    try:
        base = (int(time.time()) // 3600 - 3) * 3600  # an hour boundary, three hours back
        await store.store(1, [sample(i + 1, base + 10 * i, up(float(i % 2), "web")) for i in range(6)])
        await store.rollup(now=base + 7200)
        found = await store.series.find(1, "check_up", {"check": "web"})
        assert found is not None
        m1 = await store.series.history(found[0], base - 1, base + 3600, "1m")
        assert m1["ts"] == [base] and m1["avg"] == [0.5] and m1["min"] == [0.0] and m1["max"] == [1.0]
        h1 = await store.series.history(found[0], base - 1, base + 3600, "1h")
        assert h1["ts"] == [base] and h1["avg"] == [0.5]
        # Raw past retention goes; the rollups stay.
        removed = await store.prune({"raw": 60, "1m": 86400, "1h": 86400}, now=base + 7200)
        assert removed >= 6
        assert (await store.series.history(found[0], base - 1, base + 3600, "raw"))["ts"] == []
        assert (await store.series.history(found[0], base - 1, base + 3600, "1m"))["avg"] == [0.5]
        # Deleting the node takes its series, points and rollups; a new point makes a new series.
        await store.delete_node(1)
        assert await store.series.list(1) == []
        assert await store.series.find(1, "check_up", {"check": "web"}) is None
        await store.store(1, [sample(10, base + 7000, up(1))])
        assert [n for _, n, *_ in await store.series.list(1)] == ["check_up"]
    finally:
        runner.cancel()


async def _count(store: SampleStore, table: str) -> int:
    row = await store.db.fetchone(f"SELECT count(*) FROM {table}")
    return int(row[0])


async def test_new_points_wait_in_arrival_order_and_reads_see_them_before_and_after_the_move(
    store: SampleStore,
) -> None:
    def sample(seq: int, ts: float, *points: SeriesPoint) -> Sample:  # no device series
        return Sample(seq=seq, ts=ts, metrics=metrics(series=list(points), disks=[], nets=[]))

    runner = asyncio.create_task(store.run())
    try:
        t0 = float(int(time.time()) - 100)  # whole seconds: ts read back compare exactly
        await store.store(1, [sample(1, t0, up(1)), sample(2, t0 + 1, up(0))])
        assert (await _count(store, "series_incoming"), await _count(store, "series_raw")) == (2, 0)
        [(sid, *_, last_ts, last)] = await store.series.list(1)
        assert (round(last_ts, 3), last) == (round(t0 + 1, 3), 0.0)
        assert (await store.series.history(sid, t0 - 1, t0 + 10, "raw"))["avg"] == [1.0, 0.0]
        # A series whose only points are new is not "expired".
        assert await store.series.prune_dictionary() == 0
        # The rollup pass moves them to the head, in series order. Its clock stays in t0's chunk
        # window: at the real time, that window may have settled (into chunks) a minute after it
        # ended, which a run in the first minutes of a ten-minute window once hit.
        await store.rollup(now=t0 + 10)
        assert (await _count(store, "series_incoming"), await _count(store, "series_raw")) == (0, 2)
        # A replay of a moved point, then a new point: each ts read once, the first stored copy kept.
        await store.store(1, [sample(2, t0 + 1, up(1)), sample(3, t0 + 2, up(1))])
        assert await _count(store, "series_incoming") == 2
        got = await store.series.history(sid, t0 - 1, t0 + 10, "raw")
        assert got["avg"] == [1.0, 0.0, 1.0]
        assert [round(t, 3) for t in got["ts"]] == [round(t0 + i, 3) for i in range(3)]
        [(_, *_, last_ts, last)] = await store.series.list(1)
        assert (round(last_ts, 3), last) == (round(t0 + 2, 3), 1.0)
        await store.rollup(now=t0 + 10)
        assert (await _count(store, "series_incoming"), await _count(store, "series_raw")) == (0, 3)
        assert (await store.series.history(sid, t0 - 1, t0 + 10, "raw"))["avg"] == [1.0, 0.0, 1.0]
        # Deleting the node takes what waits too.
        await store.store(1, [sample(4, t0 + 3, up(0))])
        await store.delete_node(1)
        assert await _count(store, "series_incoming") == 0
    finally:
        runner.cancel()


async def test_a_thousand_new_series_in_one_commit_each_get_their_own_id(store: SampleStore) -> None:
    """Looked up in one statement per 512 (a fleet's first samples): every key finds its own row."""
    runner = asyncio.create_task(store.run())
    try:
        t0 = time.time() - 100
        points = [SeriesPoint("queue", float(k), {"q": f"q{k}"}) for k in range(1000)]
        await store.store(1, [Sample(seq=1, ts=t0, metrics=metrics(series=points, disks=[], nets=[]))])
        listed = await store.series.list(1)
        assert sorted((labels["q"], value) for _, _, labels, _, _, value in listed) == sorted(
            (f"q{k}", float(k)) for k in range(1000)
        )
        assert len({sid for sid, *_ in listed}) == 1000
        # The next sample of the same series is written through the ids remembered.
        await store.store(1, [Sample(seq=2, ts=t0 + 1, metrics=metrics(series=points, disks=[], nets=[]))])
        found = await store.series.find(1, "queue", {"q": "q999"})
        assert found is not None
        assert (await store.series.history(found[0], t0 - 1, t0 + 2, "raw"))["avg"] == [999.0, 999.0]
    finally:
        runner.cancel()


async def test_expired_series_are_probed_on_a_reader_and_checked_again_under_the_write_lock(
    store: SampleStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probing every series in seven tables took seconds at 1,500 agents: no ack may wait for it,
    and a series that gets a point between the probe and the lock stays."""

    def bare(seq: int, ts: float, *points: SeriesPoint) -> Sample:  # no device series
        return Sample(seq=seq, ts=ts, metrics=metrics(series=list(points), disks=[], nets=[]))

    runner = asyncio.create_task(store.run())
    try:
        t0 = float(int(time.time()) - 100)
        await store.store(1, [bare(1, t0, up(1, "web"), up(1, "db"))])
        await store.db.execute("DELETE FROM series_incoming")  # as a retention would take them
        web = await store.series.find(1, "check_up", {"check": "web"})
        assert web is not None
        probe = store.db.fetchall
        locked_while_probing: list[bool] = []

        async def probed(sql: str, params: Sequence[Any] = ()) -> list[Any]:
            rows = await probe(sql, params)
            if "NOT EXISTS" in sql:
                locked_while_probing.append(store.db.write_lock.locked())
                await store.store(1, [bare(2, t0 + 1, up(0, "web"))])  # "web" is a candidate no more
            return rows

        monkeypatch.setattr(store.db, "fetchall", probed)
        assert await store.series.prune_dictionary() == 1
        assert locked_while_probing == [False]
        assert await store.series.find(1, "check_up", {"check": "db"}) is None
        assert await store.series.find(1, "check_up", {"check": "web"}) == web
        assert (await store.series.history(web[0], t0 - 1, t0 + 10, "raw"))["avg"] == [0.0]
    finally:
        runner.cancel()


async def test_the_expired_series_probe_seeks_each_table_through_its_key(tmp_path: Path) -> None:
    """The waiting points' key leads with ts: probed per series, SQLite scanned them all for each
    of a fleet's series (44 s at 5,000 agents). They are gathered once, and every probe seeks."""
    db = Database(tmp_path / "s.db")
    await db.open()
    try:
        for sql in (series.EXPIRED, series.EXPIRED_AMONG.format(values="(1), (2)")):
            plan = {r[0]: (r[1], str(r[3])) for r in await db.fetchall("EXPLAIN QUERY PLAN " + sql)}
            details = [d for _, d in plan.values()]
            for table in (
                "series_raw",
                "series_1m",
                "series_1h",
                "series_chunks",
                "series_1m_chunks",
                "waiting",
            ):
                assert any(
                    d.startswith(f"SEARCH {table} ") and d.endswith("(series_id=?)") for d in details
                ), details
            scans = [
                (plan.get(parent, (0, ""))[1], d)
                for parent, d in plan.values()
                if d.startswith("SCAN") and not d.startswith("SCAN s ") and not d.endswith("CONSTANT ROWS")
            ]
            assert scans == [("MATERIALIZE waiting", "SCAN series_incoming")], plan
    finally:
        await db.close()


async def test_prune_deletes_old_points_a_range_of_series_at_a_time(
    store: SampleStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All of a 5,000-agent fleet's series in one statement held the writer 0.8 s every pass: each
    transaction takes a range of ids, and together they leave no old point behind."""

    def bare(seq: int, ts: float, value: float) -> Sample:  # no device series
        points = [up(value, f"c{k}") for k in range(5)]
        return Sample(seq=seq, ts=ts, metrics=metrics(series=points, disks=[], nets=[]))

    monkeypatch.setattr(series, "PRUNE_SERIES", 2)
    runner = asyncio.create_task(store.run())
    try:
        base = float(int(time.time()) - 3 * 3600)
        await store.store(1, [bare(1, base, 1), bare(2, base + 3000, 0)])
        await store.settle()  # into the head, series_raw
        ranges: list[tuple[int, int]] = []
        execute = store.db.execute

        async def counted(sql: str, params: Sequence[Any] = ()) -> int:
            if sql.startswith("DELETE FROM series_raw"):
                ranges.append((params[0], params[1]))
            return await execute(sql, params)

        monkeypatch.setattr(store.db, "execute", counted)
        removed = await store.prune({"raw": 3600, "1m": 86400, "1h": 86400}, now=base + 3700)
        assert removed >= 5
        assert len(ranges) == 3 and all(hi - lo == 1 for lo, hi in ranges), ranges
        assert [lo for lo, _ in ranges] == [ranges[0][0] + 2 * i for i in range(3)]
        for k in range(5):
            found = await store.series.find(1, "check_up", {"check": f"c{k}"})
            assert found is not None
            got = await store.series.history(found[0], base - 1, base + 3700, "raw")
            assert got["avg"] == [0.0], (k, got)
    finally:
        runner.cancel()
