"""Named series' raw points in chunks: the codec, history across head and chunks, rollups, pruning,
the dictionary's clean-up, and a settle killed half-way."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from servermanager.common.metrics import Metrics, Sample
from servermanager.common.series import SeriesPoint
from servermanager.core.store.chunks import CHUNK_MS, ChunkError, decode, decode_columns, encode
from servermanager.core.store.db import Database
from servermanager.core.store.samples import SampleStore
from servermanager.core.store.series import ROLLUP_CHUNK_MS, ROLLUP_SETTLE_GRACE_MS, SETTLE_GRACE_MS
from tests.helpers.core import metrics as _metrics

ROOT = Path(__file__).resolve().parents[3]  # the checkout: the killed child imports from it
# A chunk window's start, in seconds, well in the past of any clock the store is given here.
BASE = 1_700_000_000 // (CHUNK_MS // 1000) * (CHUNK_MS // 1000)
WINDOW = CHUNK_MS // 1000


def metrics(series: list[SeriesPoint]) -> Metrics:
    """A reading with these named series and no devices (whose dev: series would join them)."""
    return _metrics(series=series, disks=[], nets=[])


def _value(i: int) -> float:
    # One-decimal values, with a spike now and then: what a gauge looks like.
    return round(50 + 10 * math.sin(i / 7) + (40 if i % 97 == 0 else 0), 1)


def _samples(start: int, count: int, every: int = 5, seq0: int = 1) -> list[Sample]:
    return [
        Sample(
            seq=seq0 + i,
            ts=float(start + every * i),
            metrics=metrics(series=[SeriesPoint("queue", _value(start + every * i), {"q": "a"})]),
        )
        for i in range(count)
    ]


async def _store(store: SampleStore, node: int, samples: list[Sample]) -> None:
    runner = asyncio.create_task(store.run())
    try:
        await store.store(node, samples)
    finally:
        runner.cancel()


async def _counts(
    db: Database, head: str = "series_raw", chunks: str = "series_chunks"
) -> tuple[int, int, int]:
    """Head rows, chunks, points in chunks, read through the store's own database (either backend)."""
    rows = await db.fetchone(f"SELECT count(*) FROM {head}")
    n, points = await db.fetchone(f"SELECT count(*), coalesce(sum(n), 0) FROM {chunks}")
    return int(rows[0]), int(n), int(points)


# ------------------------------------------------------------------ the codec


@pytest.mark.parametrize(
    "values",
    [
        [float(i % 3) for i in range(600)],  # integral
        [_value(i) for i in range(600)],  # one decimal, deltas
        [87_424_011_631.0 + 9_000 * i for i in range(300)],  # large and growing (bytes used)
        [float((i * 7919) % 250_000) for i in range(300)],  # noise: kept plain, not as deltas
        [0.1 * i + 1e-9 * (i % 5) for i in range(100)],  # more digits than any decimal form
        [-1.5, 0.0, math.inf, -math.inf, 1e300, 5e-324],  # no decimal form at all
        [3.25],
    ],
)
def test_a_chunk_gives_every_point_back_exactly(values: list[float]) -> None:
    ts = [BASE * 1000 + 1000 * i + (i % 3) for i in range(len(values))]  # jittered timestamps
    blob = encode(ts, values)
    back_ts, back = decode(blob)
    assert back_ts == ts
    assert back == values
    assert [math.copysign(1, v) for v in back] == [math.copysign(1, v) for v in values]


def test_a_chunk_of_several_columns_gives_each_back() -> None:
    ts = [BASE * 1000 + 60_000 * i for i in range(360)]
    cnt = [60.0] * 360
    avg = [_value(i) / 7 for i in range(360)]  # no decimal form: float bits
    lo = [_value(i) - 3 for i in range(360)]
    hi = [_value(i) + 3 for i in range(360)]
    back_ts, columns = decode_columns(encode(ts, cnt, avg, lo, hi))
    assert back_ts == ts and columns == [cnt, avg, lo, hi]
    with pytest.raises(ChunkError, match="4 columns where one"):
        decode(encode(ts, cnt, avg, lo, hi))
    with pytest.raises(ValueError, match="in each column"):
        encode(ts, cnt, avg[:-1])


def test_a_steady_series_packs_into_a_few_bytes_per_point() -> None:
    ts = [BASE * 1000 + 1000 * i for i in range(600)]
    assert len(encode(ts, [_value(i) for i in range(600)])) < 600 * 2


def test_a_damaged_or_foreign_chunk_is_a_precise_error() -> None:
    blob = encode([1000, 2000], [1.0, 2.0])
    with pytest.raises(ChunkError, match="damaged chunk"):
        decode(blob[:-3])
    with pytest.raises(ChunkError, match="chunk format 9"):
        decode(bytes([9]) + blob[1:])
    with pytest.raises(ValueError, match="one or more points"):
        encode([], [])


@pytest.mark.parametrize("count", [1, 3, 512, 513, 1300])
def test_a_settle_limited_to_some_series_binds_them_in_few_statement_texts(count: int) -> None:
    from servermanager.core.store.series import _id_lists

    ids = {7 * i + 1 for i in range(count)}
    lists = _id_lists(ids)
    # Every id once, in order, at most 512 to a statement, each list a power of two long (padded
    # with its last id): a handful of distinct "IN (?, ...)" texts whatever the count.
    assert [i for part in lists for i in dict.fromkeys(part)] == sorted(ids)
    assert all(len(part) <= 512 and len(part) & (len(part) - 1) == 0 for part in lists)
    assert len(lists) == -(-count // 512)


# ------------------------------------------------------------------ the store


async def test_history_across_head_and_chunks_has_every_point_once(store: SampleStore) -> None:
    # Three windows and a bit, one point every 5 s.
    samples = _samples(BASE, 3 * WINDOW // 5 + 20)
    await _store(store, 1, samples)
    found = await store.series.find(1, "queue", {"q": "a"})
    assert found is not None
    sid = found[0]
    end = BASE + 3 * WINDOW + 100
    before = await store.series.history(sid, BASE - 1, end, "raw")
    # The maintenance pass as of after the third window's grace: three windows settle, the rest stays.
    await store.rollup(now=BASE + 3 * WINDOW + SETTLE_GRACE_MS / 1000 + 1)
    head, chunks, points = await _counts(store.db)
    assert chunks == 3 and points == 3 * WINDOW // 5 and head == 20
    after = await store.series.history(sid, BASE - 1, end, "raw")
    assert after == before
    assert after["ts"] == [s.ts for s in samples]
    assert after["avg"] == [s.metrics.series[0].value for s in samples]
    # Ranges that start and end inside chunks and inside the head.
    part = await store.series.history(sid, BASE + WINDOW - 12, BASE + 3 * WINDOW + 12, "raw")
    want = [s.ts for s in samples if BASE + WINDOW - 12 <= s.ts <= BASE + 3 * WINDOW + 12]
    assert part["ts"] == want
    # A replay of a settled point (a lost ack) adds nothing, and the value first stored stays.
    replay = Sample(
        seq=2, ts=float(BASE + 5), metrics=metrics(series=[SeriesPoint("queue", -1.0, {"q": "a"})])
    )
    await _store(store, 1, [replay])
    again = await store.series.history(sid, BASE - 1, end, "raw")
    assert again == after
    # The next pass puts the chunk back in the head for the rollup, and settles it again.
    await store.rollup(now=BASE + 3 * WINDOW + SETTLE_GRACE_MS / 1000 + 1)
    assert await _counts(store.db) == (20, 3, 3 * WINDOW // 5)
    assert await store.series.history(sid, BASE - 1, end, "raw") == after
    # The series' list reads its newest point from the head, or from the newest chunk.
    listed = await store.series.list(1)
    assert [(v, t) for *_, t, v in listed] == [(samples[-1].metrics.series[0].value, samples[-1].ts)]


async def test_the_last_point_of_a_quiet_series_comes_from_its_chunk(store: SampleStore) -> None:
    samples = _samples(BASE, 10)
    await _store(store, 1, samples)
    await store.rollup(now=BASE + WINDOW + SETTLE_GRACE_MS / 1000 + 1)
    listed = await store.series.list(1)
    assert [(t, v) for *_, t, v in listed] == [(samples[-1].ts, samples[-1].metrics.series[0].value)]


async def test_rollups_equal_the_raw_points_including_a_late_point_in_a_settled_window(
    store: SampleStore,
) -> None:
    samples = _samples(BASE, 2 * WINDOW // 5)
    await _store(store, 1, samples)
    now = BASE + 2 * WINDOW + SETTLE_GRACE_MS / 1000 + 1
    await store.rollup(now=now)
    assert (await _counts(store.db))[1] == 2
    # A point of a minute already rolled up, in a window already settled: its bucket is redone
    # from every point of the minute, those in the chunk included.
    late = Sample(
        seq=9999, ts=float(BASE + 62), metrics=metrics(series=[SeriesPoint("queue", 1000.0, {"q": "a"})])
    )
    await _store(store, 1, [late])
    await store.rollup(now=now)
    found = await store.series.find(1, "queue", {"q": "a"})
    assert found is not None
    raw = await store.series.history(found[0], BASE - 1, BASE + 2 * WINDOW, "raw")
    assert len(raw["ts"]) == len(samples) + 1
    m1 = await store.series.history(found[0], BASE - 1, BASE + 2 * WINDOW, "1m")
    assert len(m1["ts"]) == 2 * WINDOW // 60
    for i, minute in enumerate(m1["ts"]):
        vs = [v for t, v in zip(raw["ts"], raw["avg"], strict=True) if minute <= t < minute + 60]
        assert m1["avg"][i] == pytest.approx(sum(vs) / len(vs))
        assert (m1["min"][i], m1["max"][i]) == (min(vs), max(vs))
    assert m1["max"][1] == 1000.0
    h1 = await store.series.history(found[0], BASE - 3600, BASE + 2 * WINDOW, "1h")
    assert len(h1["ts"]) == 1
    points = [v for t, v in zip(raw["ts"], raw["avg"], strict=True) if h1["ts"][0] <= t < h1["ts"][0] + 3600]
    assert h1["avg"][0] == pytest.approx(sum(points) / len(points))
    assert (h1["min"][0], h1["max"][0]) == (min(points), max(points))
    # And the reopened window is a chunk again, with the late point.
    assert await _counts(store.db) == (0, 2, len(samples) + 1)


async def test_prune_drops_whole_expired_chunks_and_clips_the_partial_one(store: SampleStore) -> None:
    samples = _samples(BASE, 3 * WINDOW // 5)
    await _store(store, 1, samples)
    await store.rollup(now=BASE + 3 * WINDOW + SETTLE_GRACE_MS / 1000 + 1)
    assert await _counts(store.db) == (0, 3, len(samples))
    found = await store.series.find(1, "queue", {"q": "a"})
    assert found is not None
    # The raw cutoff falls 100 s into the second window: the first chunk goes whole, the second
    # keeps its points from the cutoff on, the third is untouched.
    cutoff = BASE + WINDOW + 100
    now = BASE + 10 * WINDOW
    removed = await store.series.prune({"raw": now - cutoff, "1m": 10**9, "1h": 10**9}, now=now)
    kept = [s for s in samples if s.ts >= cutoff]
    assert removed == len(samples) - len(kept)
    assert await _counts(store.db) == (0, 2, len(kept))
    raw = await store.series.history(found[0], BASE - 1, BASE + 3 * WINDOW, "raw")
    assert raw["ts"] == [s.ts for s in kept]
    assert raw["avg"] == [s.metrics.series[0].value for s in kept]
    # The rollups keep their own retention.
    assert len((await store.series.history(found[0], BASE - 1, BASE + 3 * WINDOW, "1m"))["ts"]) == 30


async def test_minute_rollups_settle_into_chunks_and_a_late_point_redoes_minute_and_hour(
    store: SampleStore,
) -> None:
    span = ROLLUP_CHUNK_MS // 1000
    start = BASE // span * span
    samples = _samples(start, 7 * 60, every=60)  # a point a minute for seven hours
    await _store(store, 1, samples)
    now = start + 2 * span + ROLLUP_SETTLE_GRACE_MS / 1000 + 120  # the last minute rolled up too
    await store.rollup(now=now)
    minutes = ("series_1m", "series_1m_chunks")
    assert await _counts(store.db, *minutes) == (60, 2, 360)
    found = await store.series.find(1, "queue", {"q": "a"})
    assert found is not None
    sid = found[0]
    values = [s.metrics.series[0].value for s in samples]
    m1 = await store.series.history(sid, start - 1, start + 7 * 3600, "1m")
    assert m1["ts"] == [s.ts for s in samples]
    assert m1["avg"] == values and m1["min"] == values and m1["max"] == values
    # From inside one chunk to inside the head.
    part = await store.series.history(sid, start + 3600 + 30, start + 6 * 3600 + 90, "1m")
    assert part["ts"] == [s.ts for s in samples if start + 3600 + 30 <= s.ts <= start + 6 * 3600 + 90]

    # A late point in minute 5, whose raw window and 1m window are both settled: the minute is
    # recomputed (the head's new row wins over the chunk's), and so is its hour, from every minute.
    late = Sample(
        seq=9999, ts=float(start + 5 * 60 + 30), metrics=metrics([SeriesPoint("queue", 1000.0, {"q": "a"})])
    )
    await _store(store, 1, [late])
    await store.rollup(now=now)
    assert await _counts(store.db, *minutes) == (60, 2, 360)
    m1 = await store.series.history(sid, start - 1, start + 7 * 3600, "1m")
    assert m1["ts"] == [s.ts for s in samples]
    assert m1["avg"][5] == pytest.approx((values[5] + 1000.0) / 2) and m1["max"][5] == 1000.0
    assert m1["avg"][:5] + m1["avg"][6:] == values[:5] + values[6:]
    h1 = await store.series.history(sid, start - 1, start + 3599, "1h")
    first_hour = [*values[:60], 1000.0]
    assert h1["ts"] == [start]
    assert h1["avg"][0] == pytest.approx(sum(first_hour) / len(first_hour))
    assert (h1["min"][0], h1["max"][0]) == (min(first_hour), 1000.0)

    # 1m retention cutting the first chunk 100 minutes in: its rows from there on stay.
    cutoff = start + 100 * 60
    await store.series.prune({"raw": 10**9, "1m": now - cutoff, "1h": 10**9}, now=now)
    assert await _counts(store.db, *minutes) == (60, 2, 360 - 100)
    m1 = await store.series.history(sid, start - 1, start + 7 * 3600, "1m")
    assert m1["ts"] == [s.ts for s in samples[100:]]


async def test_series_whose_points_all_expired_leave_the_dictionary(store: SampleStore) -> None:
    old = _samples(BASE, 4)
    # "kept" has a point in the next hour: its 1h bucket outlives "queue"'s.
    later = BASE + 3600
    other = [Sample(seq=100, ts=float(later), metrics=metrics(series=[SeriesPoint("kept", 1.0)]))]
    await _store(store, 1, old + other)
    now = later + WINDOW
    await store.rollup(now=now)
    gone = await store.series.find(1, "queue", {"q": "a"})
    assert gone is not None
    # Raw and 1m past retention for both, but their 1h buckets are kept: both stay.
    assert await store.series.prune({"raw": 100, "1m": 100, "1h": 10**9}, now=now) > 0
    assert await store.series.find(1, "queue", {"q": "a"}) == gone
    # The 1h cutoff at the later hour: every resolution of "queue" is past it, "kept" keeps its bucket.
    await store.series.prune({"raw": 100, "1m": 100, "1h": now - (later - later % 3600)}, now=now)
    assert await store.series.find(1, "queue", {"q": "a"}) is None
    assert [n for _, n, *_ in await store.series.list(1)] == ["kept"]
    # A new point of the forgotten series makes a new series, not a point under the deleted id.
    fresh = _samples(now, 1, seq0=500)
    await _store(store, 1, fresh)
    again = await store.series.find(1, "queue", {"q": "a"})
    assert again is not None and again[0] != gone[0]
    got = await store.series.history(again[0], now - 1, now + 1, "raw")
    assert got["avg"] == [fresh[0].metrics.series[0].value]
    dangling = await store.db.fetchone(
        "SELECT count(*) FROM series_raw WHERE series_id NOT IN (SELECT id FROM series)"
    )
    assert dangling[0] == 0


async def test_delete_node_takes_its_chunks_and_series(store: SampleStore) -> None:
    await _store(store, 1, _samples(BASE, WINDOW // 5 + 3))
    await _store(store, 2, _samples(BASE, WINDOW // 5 + 3))
    await store.rollup(now=BASE + WINDOW + SETTLE_GRACE_MS / 1000 + 1)
    assert await _counts(store.db) == (6, 2, 2 * WINDOW // 5)
    await store.delete_node(1)
    assert await _counts(store.db) == (3, 1, WINDOW // 5)
    assert await store.series.list(1) == []
    assert await store.series.find(2, "queue", {"q": "a"}) is not None


# ------------------------------------------------------------------ a crash half-way

_CRASHING_SETTLE = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path

    from servermanager.core.store import series
    from servermanager.core.store.db import Database
    from servermanager.core.store.series import SeriesStore

    path, kill_at, now_ms = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    real = series.execute_values
    upserts = 0

    async def crashing(con, template, rows):
        # The process dies right after its kill_at-th chunk write, before that slice's head rows
        # are deleted and before its commit: as a kill -9 at the worst moment would.
        global upserts
        await real(con, template, rows)
        if template.startswith("INSERT OR REPLACE INTO series_chunks "):
            upserts += 1
            if upserts == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    series.execute_values = crashing
    series.SETTLE_ROWS = int(sys.argv[4])  # a transaction per series: the first ones commit, one is cut short

    async def main():
        db = Database(path)
        await db.open()
        try:
            await SeriesStore(db).settle(now_ms)
        finally:
            await db.close()

    asyncio.run(main())
    """
)


async def test_a_settle_killed_half_way_loses_and_doubles_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = Database(path)
    await db.open()
    samples = [
        Sample(
            seq=i + 1,
            ts=float(BASE + 5 * i),
            metrics=metrics(series=[SeriesPoint(f"s{k}", float(i * k)) for k in range(4)]),
        )
        for i in range(2 * WINDOW // 5)
    ]
    try:
        await db.execute("INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', x'00', 0)")
        await _store(SampleStore(db, flush_every=0.001), 1, samples)
    finally:
        await db.close()
    now_ms = (BASE + 2 * WINDOW) * 1000 + SETTLE_GRACE_MS + 1000
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CRASHING_SETTLE,
        str(path),
        "3",
        str(now_ms),
        str(len(samples) + 1),  # a series and a bit: the bit waits for the next transaction
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 120)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == -signal.SIGKILL, err.decode()

    db = Database(path)
    await db.open()
    try:
        # Two series settled and committed, the third's transaction died with its chunk written.
        head, chunks, points = await _counts(db)
        assert chunks == 2 * 2 and head + points == 4 * len(samples)
        store = SampleStore(db)

        async def every_point() -> dict[str, list[tuple[float, float]]]:
            out = {}
            for k in range(4):
                found = await store.series.find(1, f"s{k}", {})
                assert found is not None
                got = await store.series.history(found[0], BASE - 1, BASE + 2 * WINDOW, "raw")
                out[f"s{k}"] = list(zip(got["ts"], got["avg"], strict=True))
            return out

        want = {f"s{k}": [(s.ts, float(i * k)) for i, s in enumerate(samples)] for k in range(4)}
        assert await every_point() == want
        # The next settle (a restarted core's first) finishes the job.
        await store.series.settle(now_ms)
        assert await _counts(db) == (0, 4 * 2, 4 * len(samples))
        assert await every_point() == want
    finally:
        await db.close()


async def test_a_settle_in_small_transactions_cuts_no_window_wrongly(
    store: SampleStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from servermanager.core.store import series

    # 50 rows per transaction against windows of 120: a window's rows span transactions, and
    # the later ones join the chunk the first one wrote.
    monkeypatch.setattr(series, "SETTLE_ROWS", 50)
    samples = [
        Sample(
            seq=i + 1,
            ts=float(BASE + 5 * i),
            metrics=metrics([SeriesPoint(f"s{k}", float(i * k + 1)) for k in range(3)]),
        )
        for i in range(2 * WINDOW // 5 + 7)
    ]
    await _store(store, 1, samples)
    moved = await store.series.settle(int((BASE + 2 * WINDOW) * 1000 + SETTLE_GRACE_MS + 1000))
    assert moved == 3 * 2 * WINDOW // 5
    assert await _counts(store.db) == (3 * 7, 3 * 2, 3 * 2 * WINDOW // 5)
    for k in range(3):
        found = await store.series.find(1, f"s{k}", {})
        assert found is not None
        got = await store.series.history(found[0], BASE - 1, BASE + 3 * WINDOW, "raw")
        assert got["ts"] == [s.ts for s in samples]
        assert got["avg"] == [float(i * k + 1) for i in range(len(samples))]


async def test_a_settle_groups_and_packs_chunks_off_the_event_loops_thread(
    store: SampleStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At fleet scale a window's settle is minutes of Python work (grouping rows, encoding chunks):
    on the event loop it stalled every agent's socket for 100 ms and more per transaction."""
    import threading

    from servermanager.core.store import series

    threads: set[threading.Thread] = set()
    blob, grouped = series._blob, series._grouped

    def blob_where(points: series.Points) -> bytes:
        threads.add(threading.current_thread())
        return blob(points)

    def grouped_where(rows: list[tuple[int, ...]], tier: series.Tier) -> dict[tuple[int, int], series.Points]:
        threads.add(threading.current_thread())
        return grouped(rows, tier)

    monkeypatch.setattr(series, "_blob", blob_where)
    monkeypatch.setattr(series, "_grouped", grouped_where)
    samples = _samples(BASE, WINDOW // 5 + 3)
    await _store(store, 1, samples)
    moved = await store.series.settle(int((BASE + WINDOW) * 1000 + SETTLE_GRACE_MS + 1000))
    assert moved == WINDOW // 5
    assert threads and threading.main_thread() not in threads
    found = await store.series.find(1, "queue", {"q": "a"})
    assert found is not None
    got = await store.series.history(found[0], BASE - 1, BASE + 2 * WINDOW, "raw")
    assert got["ts"] == [s.ts for s in samples]


async def test_a_node_deleted_while_a_settle_packs_its_rows_leaves_no_chunk_behind(
    store: SampleStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settle reads and packs a batch before it takes the write lock; a node deleted in between
    (its series gone) gets no chunk, and the batch is read again without it."""
    import contextlib
    from collections.abc import AsyncIterator
    from typing import Any

    for node in (1, 2):
        await _store(store, node, _samples(BASE, WINDOW // 5))
    real_reader, reads = store.db.reader, 0

    @contextlib.asynccontextmanager
    async def reader() -> AsyncIterator[Any]:
        nonlocal reads
        async with real_reader() as con:
            yield con
        reads += 1
        if reads == 2:  # the first batch's rows, then the chunks they join: both read
            await store.delete_node(2)

    monkeypatch.setattr(store.db, "reader", reader)
    moved = await store.series.settle(int((BASE + WINDOW) * 1000 + SETTLE_GRACE_MS + 1000))
    assert reads >= 3, "the batch was not read again after the deletion"
    assert moved == WINDOW // 5  # node 1's points only
    orphans = await store.db.fetchone(
        "SELECT count(*) FROM series_chunks WHERE series_id NOT IN (SELECT id FROM series)"
    )
    assert orphans[0] == 0
    assert await _counts(store.db) == (0, 1, WINDOW // 5)
    found = await store.series.find(1, "queue", {"q": "a"})
    assert found is not None
    got = await store.series.history(found[0], BASE - 1, BASE + 2 * WINDOW, "raw")
    assert got["ts"] == [float(BASE + 5 * i) for i in range(WINDOW // 5)]


async def test_a_long_settle_keeps_moving_the_heads_between_its_transactions(
    store: SampleStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A steady window of 5,000 agents took 80 s to settle: the heads waited behind it, then moved
    4.5 million rows in one transaction that held the writer 2.7 s. A sample that comes during a
    settle reaches samples_raw (and its points the series head) before the settle ends."""
    from collections.abc import Sequence
    from typing import Any

    from servermanager.core.store import maintenance, series

    monkeypatch.setattr(series, "SETTLE_ROWS", 50)
    monkeypatch.setattr(maintenance, "HEADS_EVERY", 0.0)
    samples = _samples(BASE, 2 * WINDOW // 5)  # two windows of one series: five batches
    await _store(store, 1, samples)
    late = _samples(BASE + 3 * WINDOW, 1, seq0=len(samples) + 1)
    real_fetchall, batches, heads = store.db.fetchall, 0, []

    async def fetchall(sql: str, params: Sequence[Any] = ()) -> list[Any]:
        nonlocal batches
        rows = await real_fetchall(sql, params)
        if "FROM series_raw WHERE (series_id, ts) >=" in sql:  # a batch of the settle
            batches += 1
            if batches == 1:
                await _store(store, 1, late)
            elif batches == 3:  # two transactions later: has the sample left the heads?
                heads.append((await _counts(store.db, "samples_head"))[0])
                heads.append((await _counts(store.db, "series_incoming"))[0])
        return rows

    monkeypatch.setattr(store.db, "fetchall", fetchall)
    await store.rollup(hours=False, now=BASE + 2 * WINDOW + SETTLE_GRACE_MS / 1000 + 1)
    assert batches > 3
    assert heads == [0, 0]
    monkeypatch.setattr(store.db, "fetchall", real_fetchall)
    found = await store.series.find(1, "queue", {"q": "a"})
    assert found is not None
    got = await store.series.history(found[0], BASE - 1, BASE + 4 * WINDOW, "raw")
    assert got["ts"] == [s.ts for s in samples + late]
    assert await _counts(store.db) == (1, 2, len(samples))
