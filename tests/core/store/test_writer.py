"""The group-commit writer on a real SQLite file: many batches share a commit, each acknowledged after it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from servermanager.common.metrics import Sample
from servermanager.common.series import SeriesPoint
from servermanager.core.store import writer as writer_module
from servermanager.core.store.db import Database
from servermanager.core.store.devices import device_points
from servermanager.core.store.samples import SampleStore
from servermanager.core.store.series import POINT_INSERT
from servermanager.core.store.values import values_statements
from servermanager.core.store.writer import paused_collection
from tests.helpers.core import metrics
from tests.helpers.gate import Gate
from tests.helpers.store import make_samples
from tests.helpers.trips import counted_trips
from tests.helpers.wait import wait_for


async def test_many_batches_share_one_commit(store: SampleStore) -> None:
    runner = asyncio.create_task(store.run())
    try:
        t0 = 1_700_000_000.0
        await asyncio.gather(
            *(store.store(1, make_samples(t0 + i * 10, 5, 1.0, seq0=i * 5 + 1)) for i in range(20))
        )
    finally:
        runner.cancel()
    assert store.rows_written == 100
    assert store.commits < 20
    assert await store.seqs(1) == list(range(1, 101))


async def test_a_commit_of_a_point_per_series_appends_instead_of_rewriting_a_page_per_series(
    tmp_path: Path,
) -> None:
    """2,000 series with a minute of points each, then one more point each in one commit: the WAL
    takes the new points' few pages. Clustered by series (series_raw) it took a page per series,
    8 MB here, and 1.8 GB a minute at 2,500 agents."""
    path = tmp_path / "s.db"
    points = [SeriesPoint("queue", 1.0, {"q": str(k)}) for k in range(2000)]
    t0 = time.time() - 120

    def at(i: int) -> list[Sample]:
        return [Sample(seq=i + 1, ts=t0 + i, metrics=metrics(series=points, disks=[], nets=[]))]

    db = Database(path)
    await db.open()
    try:
        await db.execute("INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', x'00', 0)")
        store = SampleStore(db, flush_every=0.001)
        runner = asyncio.create_task(store.run())
        try:
            for i in range(60):
                await store.store(1, at(i))
                if i % 10 == 9:
                    await store.rollup(now=t0 + i)  # into series_raw, as the job does every 10 s
        finally:
            runner.cancel()
    finally:
        await db.close()
    with contextlib.closing(sqlite3.connect(path)) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert (await _wal_pages(path)) == 0
    db = Database(path)
    await db.open()
    try:
        store = SampleStore(db, flush_every=0.001)
        runner = asyncio.create_task(store.run())
        try:
            await store.store(1, at(60))
            # Before the close's checkpoint: the WAL file keeps its largest size.
            pages = await _wal_pages(path)
        finally:
            runner.cancel()
    finally:
        await db.close()
    assert pages < 100, f"the commit of 2,000 points wrote {pages} pages"


async def _wal_pages(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size // 4096 if wal.exists() else 0


async def test_a_commit_goes_to_the_database_thread_in_a_few_trips_however_large(tmp_path: Path) -> None:
    """Each trip to aiosqlite's thread is a turn of the event loop, several milliseconds long beside
    thousands of streaming agents: a commit of 5,000 samples with ten device series each took ~110
    of them (a statement each) and 20 s, every ack waiting behind it. Now its statements go in one."""
    db = Database(tmp_path / "s.db")
    await db.open()
    try:
        await db.execute("INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', x'00', 0)")
        store = SampleStore(db, flush_every=0.001)
        runner = asyncio.create_task(store.run())
        t0 = float(int(time.time()) - 6000)
        points = [SeriesPoint("queue", 1.0, {"q": str(k)}) for k in range(10)]

        def batch(first: int) -> list[Sample]:
            return [
                Sample(seq=first + i, ts=t0 + first + i, metrics=metrics(series=points, disks=[], nets=[]))
                for i in range(5000)
            ]

        try:
            await store.store(1, batch(0))  # the series are new: their ids are looked up on the way
            with counted_trips(db.writer) as trips:
                await store.store(1, batch(5000))
        finally:
            runner.cancel()
        assert store.rows_written == 10_000
        # BEGIN, the 110 statements and COMMIT in one trip: each trip's result waits for a turn of
        # the event loop, which is long beside a large fleet.
        assert trips == [1], trips
        found = await store.series.find(1, "queue", {"q": "9"})
        assert found is not None
        got = await store.series.history(found[0], t0 - 1, t0 + 10_000, "raw")
        assert len(got["ts"]) == 10_000
    finally:
        await db.close()


def _collections_during(work: Callable[[], None]) -> int:
    """How many automatic cycle collections `work` set off, from a fresh young generation."""
    runs: list[str] = []
    me = threading.get_ident()

    def seen(phase: str, info: dict[str, Any]) -> None:
        # Only this thread's: a thread left over from an earlier test may allocate meanwhile.
        if phase == "start" and threading.get_ident() == me:
            runs.append(phase)

    before, enabled = gc.get_threshold(), gc.isenabled()
    gc.collect()  # the young generation's count starts at 0
    gc.set_threshold(5_000, *before[1:])
    gc.callbacks.append(seen)
    gc.enable()  # off on a worker that ran a desktop test (tests/conftest.py)
    try:
        work()
    finally:
        if not enabled:
            gc.disable()
        gc.callbacks.remove(seen)
        gc.set_threshold(*before)
    return len(runs)


def test_a_burst_of_rows_inside_paused_collection_sets_off_no_collection() -> None:
    """What _commit builds from 5,000 samples' series points (50,000 row tuples, dropped once
    flattened into parameters) must not set off a young collection that walks them all."""

    def burst() -> None:
        rows = [(i, i * 1000, float(i)) for i in range(50_000)]
        params = [v for row in rows for v in row]
        del rows
        assert len(params) == 150_000

    def paused() -> None:
        with paused_collection():
            burst()
        [(i,) for i in range(100)]  # allocations after the block find the count where it began

    assert _collections_during(burst) > 0  # the control: unpaused, the burst collects
    assert _collections_during(paused) == 0


async def test_what_waits_for_a_commit_is_not_tracked_by_the_cycle_collector(store: SampleStore) -> None:
    """About two seconds of batches wait for their commit at 5,000 agents, ten series points each;
    every tracked container among them is walked by each young collection while it waits (pauses
    of 150-200 ms a second at 5,000 agents, when the points were tuples)."""
    sample = Sample(seq=1, ts=1.0, metrics=metrics(containers=None))
    points = device_points(1, [sample])
    assert points
    assert not any(gc.is_tracked(p) for p in points)
    store.submit(1, [sample], lambda exc: None)
    [pending] = store.writer._queue
    assert not gc.is_tracked(pending)
    # No list of its own for what the sample does not carry (no top list, no containers).
    assert pending.procs == () and pending.containers == ()


async def test_a_large_commit_is_put_together_a_slice_per_turn_of_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a rollup pass the writer catches up with thousands of batches in one commit; binding
    their rows and points in one go held the event loop (every push and ack) for up to half a
    second at 5,000 agents. No single turn binds more than a slice, and every row still lands."""
    db = Database(tmp_path / "s.db")
    await db.open()
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    bound: list[tuple[int, str, int]] = []  # (turn, statement, rows) of each call

    def spy(con: Any, template: str, rows: Any) -> Any:
        bound.append((turns, template, len(rows)))
        return values_statements(con, template, rows)

    per_sample = 100
    batches = 3 * writer_module.BUILD_SLICE // per_sample + 1
    t0 = time.time() - 3600
    points = [SeriesPoint("q", float(k), {"k": str(k)}) for k in range(per_sample)]

    def sample(i: int) -> list[Sample]:
        return [Sample(seq=i + 1, ts=t0 + i, metrics=metrics(series=points, disks=[], nets=[]))]

    try:
        await db.execute("INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', x'00', 0)")
        store = SampleStore(db, flush_every=0.001)
        runner = asyncio.create_task(store.run())
        tick = asyncio.create_task(ticker())
        try:
            await store.store(1, sample(0))  # every series known from here on
            monkeypatch.setattr(writer_module, "values_statements", spy)
            futures = [asyncio.get_running_loop().create_future() for _ in range(1, batches)]
            for i, fut in enumerate(futures, start=1):
                store.submit(1, sample(i), lambda exc, f=fut: f.set_result(exc))
            assert await asyncio.gather(*futures) == [None] * len(futures)
        finally:
            runner.cancel()
            tick.cancel()
        assert store.commits == 2  # one commit of them all: slices of one commit, not more commits
        assert await db.fetchone("SELECT count(*) FROM series_incoming") == (batches * per_sample,)
    finally:
        await db.close()
    point_calls = [(turn, n) for turn, template, n in bound if template == POINT_INSERT]
    assert sum(n for _, n in point_calls) == (batches - 1) * per_sample
    assert max(n for _, n in point_calls) <= writer_module.BUILD_SLICE
    assert len({turn for turn, _ in point_calls}) == len(point_calls) >= 3  # each in a turn of its own


def _submitted(
    store: SampleStore, node_id: int, samples: list[Sample]
) -> asyncio.Future[BaseException | None]:
    """Queue the batch now (store() would only once its task runs); the future gets its outcome."""
    fut: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    store.submit(node_id, samples, lambda exc: fut.done() or fut.set_result(exc))
    return fut


async def _gated_store(tmp_path: Path) -> tuple[Database, SampleStore, Gate]:
    """A SQLite store with nodes 1 and 2 and `SELECT gate()` to park its writer thread."""
    db = Database(tmp_path / "g.db")
    await db.open()
    await db.execute(
        "INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', ?, 0), (2, 'm', ?, 0)",
        (b"\x00", b"\x01"),
    )
    gate = Gate()
    await db.writer.create_function("gate", 0, gate)
    return db, SampleStore(db, flush_every=0.001), gate


async def _one_running_one_bound(
    db: Database,
    store: SampleStore,
    gate: Gate,
    ahead: tuple[int, list[Sample]] | None = None,
    then: tuple[int, list[Sample]] | None = None,
) -> tuple[asyncio.Future[Any], asyncio.Future[BaseException | None], asyncio.Future[BaseException | None]]:
    """Park the writer thread, then queue `ahead` (taken and left waiting in the thread: commit N)
    and `then` (put together meanwhile: N+1), by default five samples of node 1, then of node 2.
    Returns the parked statement and both outcomes."""
    parked = asyncio.ensure_future(db.writer.execute("SELECT gate()"))
    await wait_for(gate.entered.is_set, 5, "the writer thread to park")
    first = _submitted(store, *(ahead or (1, make_samples(1_700_000_000.0, 5, 1.0))))
    await wait_for(lambda: not store.writer._queue, 5, "commit N to be taken off the queue")
    second = _submitted(store, *(then or (2, make_samples(1_700_000_000.0, 5, 1.0))))
    await wait_for(lambda: not store.writer._queue, 5, "commit N+1 to be put together during N")
    return parked, first, second


async def test_the_next_commit_is_put_together_while_the_one_before_it_runs(tmp_path: Path) -> None:
    """With the database thread held inside commit N, the batches that came after it are taken
    off the queue and bound meanwhile, not left waiting until N is done."""
    db, store, gate = await _gated_store(tmp_path)
    runner = asyncio.create_task(store.run())
    try:
        parked, first, second = await _one_running_one_bound(db, store, gate)
        assert not first.done() and not second.done()
        gate.open()
        assert await asyncio.wait_for(asyncio.gather(first, second), 10) == [None, None]
        await parked
    finally:
        gate.open()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await db.close()
    assert store.rows_written == 10


async def test_points_bound_before_their_series_were_deleted_are_bound_again(tmp_path: Path) -> None:
    """A commit put together while its node's series were being deleted (ids bound, then dropped
    before it took the write lock) must not store points under the deleted ids."""
    db, store, gate = await _gated_store(tmp_path)
    runner = asyncio.create_task(store.run())
    try:
        await store.store(1, make_samples(1_700_000_000.0, 2, 1.0))  # node 1's series get their ids
        parked, ahead, late = await _one_running_one_bound(
            db,
            store,
            gate,
            (2, make_samples(1_700_000_000.0, 2, 1.0)),
            (1, make_samples(1_700_000_010.0, 2, 1.0, seq0=3)),
        )
        # Waits for the write lock behind the commit ahead, and takes it before node 1's commit.
        deleting = asyncio.ensure_future(store.delete_node(1))
        await wait_for(
            lambda: db.write_lock.locked() and bool(db.write_lock._waiters), 5, "the deletion to wait"
        )
        gate.open()
        assert await asyncio.wait_for(asyncio.gather(ahead, late), 10) == [None, None]
        await asyncio.wait_for(asyncio.gather(parked, deleting), 10)
    finally:
        gate.open()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    try:
        orphans = await db.fetchone(
            "SELECT count(*) FROM series_incoming AS i WHERE NOT EXISTS "
            "(SELECT 1 FROM series AS s WHERE s.id = i.series_id)"
        )
        kept = await db.fetchone(
            "SELECT count(*) FROM series_incoming AS i JOIN series AS s ON s.id = i.series_id WHERE s.node_id = 1"
        )
    finally:
        await db.close()
    assert orphans[0] == 0
    assert kept[0] > 0  # node 1's late points went in, under series made afresh


async def test_stopping_the_writer_lets_the_commit_ahead_finish_and_keeps_the_next_for_drain(
    tmp_path: Path,
) -> None:
    """Cancelled (the core stopping) with commit N parked in the database's thread and N+1 already
    put together: N still commits and answers, and N+1 goes back to the queue for drain()."""
    db, store, gate = await _gated_store(tmp_path)
    runner = asyncio.create_task(store.run())
    try:
        parked, first, second = await _one_running_one_bound(db, store, gate)
        runner.cancel()
        await asyncio.sleep(0)  # the cancel reaches the writer while N is still parked
        gate.open()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(runner, 10)
        await parked
        assert await asyncio.wait_for(first, 5) is None
        assert not second.done() and len(store.writer._queue) == 1
        await store.drain()
        assert await asyncio.wait_for(second, 5) is None
        assert await store.seqs(2) == [1, 2, 3, 4, 5]
    finally:
        gate.open()
        runner.cancel()
        await db.close()
