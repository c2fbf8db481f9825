"""Named series: stored with their sample, rolled up by the rollup job, pruned and deleted with the node."""

from __future__ import annotations

import asyncio
import time

from servermanager.common.metrics import Sample
from servermanager.common.series import SeriesPoint
from servermanager.core.store.samples import SampleStore
from tests.helpers.core import metrics


def sample(seq: int, ts: float, *points: SeriesPoint) -> Sample:
    return Sample(seq=seq, ts=ts, metrics=metrics(series=list(points)))


def up(v: float, check: str = "web") -> SeriesPoint:
    return SeriesPoint("check_up", v, {"check": check})


async def test_points_stored_listed_and_read_back(store: SampleStore) -> None:
    runner = asyncio.create_task(store.run())
    try:
        t0 = time.time() - 100
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
