"""Past days of 1-minute history answered from the DayCache: the same answer SQLite gives, and
dropped whenever their rows change (a late backfill, pruning, deleting the node)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from servermanager.common.metrics import Sample
from servermanager.core.store.daycache import _ENTRY_OVERHEAD, DAY_MS, DayCache
from servermanager.core.store.db import Database
from servermanager.core.store.samples import SampleStore
from tests.helpers.core import metrics

DAY = DAY_MS / 1000
FIELDS = ["cpu_pct", "procs"]
COLUMNS = 1 + 3 * len(FIELDS)  # ts, then avg, min and max of each field


async def _store_with_days(db: Database, cache_bytes: int = 1 << 20) -> tuple[SampleStore, float]:
    """Node 1 with samples every 3 hours over four past days, rolled up; returns the store and day 0."""
    await db.execute("INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', ?, 0)", (b"\x00",))
    store = SampleStore(db, flush_every=0.001, day_cache_bytes=cache_bytes)
    base = (time.time() // DAY - 5) * DAY
    samples = [
        Sample(seq=i + 1, ts=base + i * 3 * 3600 + 7, metrics=metrics(cpu=float(i))) for i in range(32)
    ]
    await _write(store, samples)
    return store, base


async def _write(store: SampleStore, samples: list[Sample], now: float | None = None) -> None:
    runner = asyncio.create_task(store.run())
    try:
        await store.store(1, samples)
    finally:
        runner.cancel()
    await store.rollup(now=now)


def _decoded(answer: dict[str, Any]) -> dict[str, Any]:
    """An encoded answer's Raw columns as lists."""
    return msgspec.json.decode(msgspec.json.encode(answer))


async def test_cached_days_give_sqlites_answer_and_are_read_once(backend_db: Database) -> None:
    db = backend_db
    store, base = await _store_with_days(db)
    # A partial day at each end, and days 1 and 2 whole.
    lo, hi = base + 0.25 * DAY, base + 3.5 * DAY
    expected = await store.history(1, lo, hi, "1m", FIELDS)
    assert len(expected["ts"]) == 27 and expected["avg"]["cpu_pct"][0] == 2.0

    first = _decoded(await store.history(1, lo, hi, "1m", FIELDS, encoded=True))
    assert first == expected
    # All four days are read whole and kept; the partial ones are cut to the range.
    assert (store.days.hits, store.days.misses, len(store.days)) == (0, 4 * COLUMNS, 4 * COLUMNS)

    again = _decoded(await store.history(1, lo, hi, "1m", FIELDS, encoded=True))
    assert again == expected
    assert (store.days.hits, store.days.misses) == (4 * COLUMNS, 4 * COLUMNS)
    # A subset of the fields comes from the same cached columns.
    cpu = _decoded(await store.history(1, lo, hi, "1m", ["cpu_pct"], encoded=True))
    assert cpu["avg"] == {"cpu_pct": expected["avg"]["cpu_pct"]}
    assert cpu["max"] == {"cpu_pct": expected["max"]["cpu_pct"]}
    assert cpu["ts"] == expected["ts"]
    assert (store.days.hits, store.days.misses) == (4 * COLUMNS + 4 * 4, 4 * COLUMNS)


async def test_partial_days_are_cut_at_the_right_rows(backend_db: Database) -> None:
    db = backend_db
    store, base = await _store_with_days(db)
    # Every edge: on a row's minute, just after it, just before the next, and a whole day's edge.
    row = [base + i * 3 * 3600 + 7 for i in range(32)]
    for lo, hi in [
        (row[3] - 7, row[12] - 7),
        (row[3] - 6, row[12] - 8),
        (row[3] + 60, row[12] + 60),
        (base + DAY, row[20]),
        (row[5], base + 3 * DAY - 0.001),
        (row[9] - 7, row[9] - 7),  # one row
        (row[9] + 100, row[10] - 100),  # no rows
    ]:
        expected = await store.history(1, lo, hi, "1m", FIELDS)
        assert _decoded(await store.history(1, lo, hi, "1m", FIELDS, encoded=True)) == expected, (lo, hi)
    assert store.days.hits > 0


async def test_a_range_from_long_before_the_first_row_reads_only_days_with_rows(backend_db: Database) -> None:
    db = backend_db
    store, base = await _store_with_days(db)
    since_1970 = await store.history(1, 0, time.time(), "1m", FIELDS, encoded=True)
    assert _decoded(since_1970) == await store.history(1, 0, time.time(), "1m", FIELDS)
    assert len(_decoded(since_1970)["ts"]) == 32
    assert {day for _, day, _ in store.days._items} == {int(base // DAY) + d for d in range(5)}
    nothing = SampleStore(db, day_cache_bytes=1 << 20)
    await db.execute("DELETE FROM samples_1m")
    assert _decoded(await nothing.history(1, 0, time.time(), "1m", FIELDS, encoded=True))["ts"] == []


async def test_a_range_within_one_past_day_is_cut_from_it_and_today_read_from_sqlite(
    backend_db: Database,
) -> None:
    db = backend_db
    store, base = await _store_with_days(db)
    inside = await store.history(1, base + 1.1 * DAY, base + 1.9 * DAY, "1m", FIELDS, encoded=True)
    assert _decoded(inside)["ts"] == [
        round(base + 1 * DAY + h * 3600 + 7) // 60 * 60 for h in (3, 6, 9, 12, 15, 18, 21)
    ]
    everything = await store.history(1, base, time.time() + 60, "1m", FIELDS, encoded=True)
    assert len(_decoded(everything)["ts"]) == 32
    # Whole past days only: days 0-4 are cached, today is not.
    assert {day for _, day, _ in store.days._items} == {int(base // DAY) + d for d in range(5)}


async def test_a_late_backfill_into_a_cached_day_is_answered(backend_db: Database) -> None:
    db = backend_db
    store, base = await _store_with_days(db)
    lo, hi = base, base + 3 * DAY - 0.001
    before = _decoded(await store.history(1, lo, hi, "1m", FIELDS, encoded=True))
    generation = store.days.generation
    late = base + 1 * DAY + 3600 * 4 + 30  # day 1, a minute with no row yet
    await _write(store, [Sample(seq=100, ts=late, metrics=metrics(cpu=99.0))])
    assert store.days.generation > generation
    after = _decoded(await store.history(1, lo, hi, "1m", FIELDS, encoded=True))
    assert after == await store.history(1, lo, hi, "1m", FIELDS)
    assert len(after["ts"]) == len(before["ts"]) + 1
    assert after["avg"]["cpu_pct"][after["ts"].index(late // 60 * 60)] == 99.0


async def test_rollups_of_today_keep_the_cached_days(backend_db: Database) -> None:
    db = backend_db
    store, base = await _store_with_days(db)
    await store.history(1, base, base + 3 * DAY - 0.001, "1m", FIELDS, encoded=True)
    cached, generation = len(store.days), store.days.generation
    today = time.time() // DAY * DAY
    # Today's first minute, rolled up as it would be a minute later (whatever the time now).
    await _write(store, [Sample(seq=200, ts=today + 5, metrics=metrics(cpu=1.0))], now=today + 70)
    assert (await store.history(1, today, today + 60, "1m", ["cpu_pct"]))["avg"]["cpu_pct"] == [1.0]
    assert (len(store.days), store.days.generation) == (cached, generation)


async def test_pruning_and_deleting_the_node_drop_their_days(backend_db: Database) -> None:
    db = backend_db
    store, base = await _store_with_days(db)
    lo, hi = base, base + 4 * DAY - 0.001
    await store.history(1, lo, hi, "1m", FIELDS, encoded=True)
    assert len(store.days) == 4 * COLUMNS
    now = time.time()
    keep_from = base + 2 * DAY + 3600  # prunes days 0 and 1, and day 2's first hour
    await store.prune({"raw": now - keep_from, "1m": now - keep_from, "1h": now - base + DAY}, now=now)
    assert {day for _, day, _ in store.days._items} == {int(base // DAY) + 3}
    pruned = _decoded(await store.history(1, lo, hi, "1m", FIELDS, encoded=True))
    assert pruned == await store.history(1, lo, hi, "1m", FIELDS)
    assert min(pruned["ts"]) >= keep_from
    await store.delete_node(1)
    assert len(store.days) == 0 and store.days.size == 0
    assert _decoded(await store.history(1, lo, hi, "1m", FIELDS, encoded=True))["ts"] == []


async def test_cache_off_reads_everything_from_sqlite(backend_db: Database) -> None:
    db = backend_db
    store, base = await _store_with_days(db, cache_bytes=0)
    lo, hi = base, base + 4 * DAY - 0.001
    answer = _decoded(await store.history(1, lo, hi, "1m", FIELDS, encoded=True))
    assert answer == await store.history(1, lo, hi, "1m", FIELDS)
    assert (len(store.days), store.days.misses) == (0, 0)


def test_a_fill_read_before_a_change_is_not_kept() -> None:
    cache = DayCache(1 << 20)
    generation = cache.generation
    cache.forget_days({(1, 20_000)})
    cache.put(1, 20_000, "ts / 1000", b"1,2,3", generation)
    assert len(cache) == 0
    cache.put(1, 20_000, "ts / 1000", b"1,2,3", cache.generation)
    assert cache.get(1, 20_000, "ts / 1000") == b"1,2,3"


def test_the_byte_bound_drops_the_least_recently_used() -> None:
    cache = DayCache(3 * (_ENTRY_OVERHEAD + 10))
    for day in range(3):
        cache.put(1, day, "c", str(day).encode() * 10, cache.generation)
    assert cache.get(1, 0, "c") == b"0" * 10  # day 0 is now the most recently used
    cache.put(1, 3, "c", b"3" * 10, cache.generation)
    assert [day for _, day, _ in cache._items] == [2, 0, 3]
    assert cache.size == 3 * (_ENTRY_OVERHEAD + 10)
    cache.put(1, 4, "c", b"x" * (cache.max_bytes + 1), cache.generation)  # larger than the bound
    assert cache.get(1, 4, "c") is None and len(cache) == 3


def test_history_cache_setting_takes_sizes_of_zero_or_more() -> None:
    from servermanager.common.settings import SettingsError, load_settings
    from servermanager.core.settings import CoreSettings

    def load(value: str) -> CoreSettings:
        return load_settings(CoreSettings, env_prefix="SM_CORE_", environ={"SM_CORE_HISTORY_CACHE_MB": value})

    assert load("0").history_cache_mb == 0
    assert load("8.5").history_cache_mb == 8.5
    with pytest.raises(SettingsError, match="history_cache_mb"):
        load("-1")


async def test_merged_points_of_cached_days_match_one_merge_over_the_range(backend_db: Database) -> None:
    db = backend_db
    store, base = await _store_with_days(db)
    lo, hi = base + 0.25 * DAY, base + 3.5 * DAY
    expected = await store.history(1, lo, hi, "1m", FIELDS, points=50)
    assert expected["step"] == 7200.0 and len(expected["ts"]) == 27
    for _ in range(2):
        assert _decoded(await store.history(1, lo, hi, "1m", FIELDS, points=50, encoded=True)) == expected
    assert (store.days.hits, store.days.misses) == (2 * COLUMNS, 2 * COLUMNS)
    # Wider buckets: many rows per point, and other keys than the unmerged columns'.
    wide = await store.history(1, lo, hi, "1m", FIELDS, points=10)
    assert wide["step"] == 12 * 3600.0
    assert wide["avg"]["cpu_pct"][0] == pytest.approx((2 + 3) / 2)
    assert _decoded(await store.history(1, lo, hi, "1m", FIELDS, points=10, encoded=True)) == wide
