"""History reads on a real SQLite file: both raw tiers in time order, points merged exactly, resolution by range."""

from __future__ import annotations

import time

import pytest

from devkit.cores import RunningCore
from servermanager.core.store.daycache import DAY_MS
from servermanager.core.store.history import _bucket_width
from servermanager.core.store.samples import SampleStore
from tests.helpers.core import RawAgent
from tests.helpers.store import make_samples, write_samples


async def test_points_merge_rows_exactly(store: SampleStore) -> None:
    t0 = 1_700_000_040.0 - (1_700_000_040.0 % 3600)
    # Four minutes: 60 samples at cpu 10, 30 at cpu 40, 60 at 0..59, 60 at 90.
    await write_samples(store, 1, make_samples(t0, 60, 1.0, cpu=[10.0] * 60))
    await write_samples(store, 1, make_samples(t0 + 60, 30, 2.0, cpu=[40.0] * 30, seq0=61))
    await write_samples(store, 1, make_samples(t0 + 120, 60, 1.0, cpu=[float(i) for i in range(60)], seq0=91))
    await write_samples(store, 1, make_samples(t0 + 180, 60, 1.0, cpu=[90.0] * 60, seq0=151))
    await store.rollup()
    full = await store.history(1, t0, t0 + 239, "1m", ["cpu_pct"])
    assert len(full["ts"]) == 4 and full["step"] is None
    # Two points of two minutes each: avg weighted by sample count, min of mins, max of maxes.
    two = await store.history(1, t0, t0 + 239, "1m", ["cpu_pct"], points=3)
    assert two["ts"] == [t0, t0 + 120]
    assert two["step"] == 120.0
    assert two["avg"]["cpu_pct"] == pytest.approx([(60 * 10 + 30 * 40) / 90, (60 * 29.5 + 60 * 90) / 120])
    assert two["min"]["cpu_pct"] == [10.0, 0.0]
    assert two["max"]["cpu_pct"] == [40.0, 90.0]
    # More points than rows asks for nothing to merge: the rows come back as stored.
    assert await store.history(1, t0, t0 + 239, "1m", ["cpu_pct"], points=100) == full
    # Raw rows merge too, into avg/min/max of the raw values.
    raw = await store.history(1, t0, t0 + 59.999, "raw", ["cpu_pct"], points=2)
    assert raw["ts"] == [t0] and raw["avg"]["cpu_pct"] == [10.0] and raw["max"]["cpu_pct"] == [10.0]


async def test_history_is_in_time_order_across_both_tiers(store: SampleStore) -> None:
    t0 = 1_700_000_000.0
    late = make_samples(t0 + 5, 5, 1.0, cpu=[float(5 + i) for i in range(5)], seq0=6)
    await write_samples(store, 1, late)
    await store.settle()
    # An agent backfilling its spool: older samples arrive after newer ones were settled.
    await write_samples(store, 1, make_samples(t0, 5, 1.0, cpu=[float(i) for i in range(5)]))
    m = await store.history(1, t0, t0 + 10, "raw", ["cpu_pct"])
    assert m["ts"] == [t0 + i for i in range(10)]
    assert m["avg"]["cpu_pct"] == [float(i) for i in range(10)]


async def test_auto_resolution_follows_range(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    welcome = await agent.hello(token=await core_server.enroll_token())
    token = await core_server.admin_token()
    now = time.time()
    expect = {
        600: "raw",
        3 * 3600: "raw",
        24 * 3600: "1m",
        7 * 86400: "1m",
        30 * 86400: "1h",
        365 * 86400: "1h",
    }
    for span, res in expect.items():
        status, body = await core_server.request(
            "GET", f"/api/v1/nodes/{welcome.node_id}/metrics?from={now - span}&to={now}&fields=cpu_pct", token
        )
        assert status == 200
        assert body["resolution"] == res, span
    # A short range that lies beyond raw retention comes from the rollups.
    start = now - 5 * 86400
    status, body = await core_server.request(
        "GET", f"/api/v1/nodes/{welcome.node_id}/metrics?from={start}&to={start + 600}", token
    )
    assert body["resolution"] == "1m"


@pytest.mark.parametrize(
    ("span", "points", "unit", "width"),
    [
        (30 * DAY_MS, 2000, 60_000, 30 * 60_000),  # 21.6 min wanted: the next step, 30 min
        (240_000, 3, 60_000, 120_000),
        (60_000, 2, 1000, 60_000),
        (10_000, 100, 1000, 1000),  # never below the resolution's own step
        (4 * 3_600_000, 100, 3_600_000, 3_600_000),
        (2 * 365 * DAY_MS, 100, 3_600_000, 10 * DAY_MS),  # 7.4 days wanted
        (40 * 365 * DAY_MS, 10, 3_600_000, 1623 * DAY_MS),  # beyond the table: whole days
    ],
)
def test_points_buckets_are_steps_that_tile_a_day(span: int, points: int, unit: int, width: int) -> None:
    assert _bucket_width(span, points, unit) == width
    assert width % unit == 0 and (DAY_MS % width == 0 or width % DAY_MS == 0)
