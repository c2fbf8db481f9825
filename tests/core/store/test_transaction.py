"""Database.transaction() under cancellation, on a real SQLite file.

A cancelled task must never leave the write lock released over an open transaction, nor hold the
lock forever: either would wedge or corrupt every later write of the core.

To cancel while BEGIN or COMMIT is in flight (not merely awaited), the tests park aiosqlite's
writer thread in a SQL function that waits on a threading.Event: the statement queued behind it
cannot finish until the test opens the gate.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from servermanager.core.store.db import Database
from tests.helpers.gate import Gate
from tests.helpers.trips import counted_trips
from tests.helpers.wait import wait_for

INSERT = "INSERT INTO audit (ts, actor, action, result) VALUES (?, 'test', 'tx', 'ok')"


class WriterGate(Gate):
    """Blocks the writer connection's thread inside `SELECT gate()` until opened."""

    async def install(self, db: Database) -> None:
        await db.writer.create_function("gate", 0, self)

    async def close_on(self, db: Database) -> asyncio.Future[Any]:
        """Start a statement that parks the writer thread; returns once the thread is parked."""
        parked = asyncio.ensure_future(db.writer.execute("SELECT gate()"))
        await wait_for(self.entered.is_set, 5, "the writer thread to reach the gate")
        return parked


@pytest.fixture
async def gate(db: Database) -> AsyncIterator[WriterGate]:
    g = WriterGate()
    await g.install(db)
    try:
        yield g
    finally:
        g.open()  # never leave the thread parked: closing the database queues behind it


async def ts_rows(db: Database) -> list[float]:
    return [r[0] for r in await db.fetchall("SELECT ts FROM audit ORDER BY ts")]


async def settle(db: Database) -> None:
    """Let every statement already queued on the writer run: aiosqlite runs them in order."""
    await db.writer.execute("SELECT 1")


async def assert_writable(db: Database, ts: float) -> None:
    """No lock held, no transaction open, and a fresh transaction commits."""
    assert not db._write_lock.locked(), "the write lock is still held"
    await settle(db)  # a statement still in flight would otherwise open a transaction after the check
    assert not db.writer.in_transaction, "a transaction was left open on the writer"
    async with asyncio.timeout(5):
        async with db.transaction() as con:
            await con.execute(INSERT, (ts,))
    assert ts in await ts_rows(db)
    assert not db._write_lock.locked()
    assert not db.writer.in_transaction


async def cancelled(task: Awaitable[Any]) -> None:
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancel_inside_the_body_rolls_back_and_releases(db: Database) -> None:
    inside, never = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with db.transaction() as con:
            await con.execute(INSERT, (1.0,))
            inside.set()
            await never.wait()

    task = asyncio.create_task(writer())
    await inside.wait()
    assert db.writer.in_transaction and db._write_lock.locked()
    task.cancel()
    await cancelled(task)
    assert await ts_rows(db) == []  # the half-done write was rolled back
    await assert_writable(db, 2.0)


async def test_cancel_right_after_starting_a_transaction(db: Database) -> None:
    async def writer() -> None:
        async with db.transaction() as con:
            await con.execute(INSERT, (1.0,))

    task = asyncio.create_task(writer())
    await asyncio.sleep(0)  # one step: the task now holds the lock and awaits BEGIN
    assert db._write_lock.locked()
    task.cancel()
    await cancelled(task)
    assert await ts_rows(db) == []
    await assert_writable(db, 2.0)


# A second cancel: e.g. a shutdown cancelling a job that a wait_for had already cancelled.
@pytest.mark.parametrize("cancels", [1, 2])
async def test_cancel_while_begin_is_in_flight(db: Database, gate: WriterGate, cancels: int) -> None:
    parked = await gate.close_on(db)

    async def writer() -> None:
        async with db.transaction() as con:
            await con.execute(INSERT, (1.0,))

    task = asyncio.create_task(writer())
    await wait_for(db._write_lock.locked, 5, "the writer to take the lock")
    for _ in range(cancels):
        task.cancel()
        await asyncio.sleep(0)
    # BEGIN cannot run yet, so the cancelled task must keep the lock until it has undone BEGIN.
    assert not task.done()
    assert db._write_lock.locked()
    gate.open()
    await parked
    await cancelled(task)
    assert await ts_rows(db) == []
    await assert_writable(db, 2.0)


@pytest.mark.parametrize("cancels", [1, 2])
async def test_cancel_while_commit_is_in_flight(db: Database, gate: WriterGate, cancels: int) -> None:
    """COMMIT runs to its end despite the cancel: the write is durable and nothing is left open."""
    committing = asyncio.Event()
    parked: list[asyncio.Future[Any]] = []

    async def writer() -> None:
        async with db.transaction() as con:
            await con.execute(INSERT, (1.0,))
            parked.append(await gate.close_on(db))  # COMMIT queues behind the parked statement
            committing.set()

    task = asyncio.create_task(writer())
    await committing.wait()
    for _ in range(cancels):
        task.cancel()
        await asyncio.sleep(0)
    assert not task.done() and db._write_lock.locked()
    gate.open()
    await asyncio.gather(*parked)
    await cancelled(task)
    assert await ts_rows(db) == [1.0]
    await assert_writable(db, 2.0)


async def test_cancel_while_waiting_for_the_lock(db: Database) -> None:
    holding, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with db.transaction() as con:
            await con.execute(INSERT, (1.0,))
            holding.set()
            await release.wait()

    async def waiter() -> None:
        async with db.transaction() as con:
            await con.execute(INSERT, (99.0,))

    first = asyncio.create_task(holder())
    await holding.wait()
    second = asyncio.create_task(waiter())
    await asyncio.sleep(0)  # the waiter is queued on the lock
    second.cancel()
    await cancelled(second)
    assert db._write_lock.locked()  # still the holder's
    release.set()
    await first
    assert await ts_rows(db) == [1.0]
    await assert_writable(db, 2.0)


async def test_an_error_inside_the_body_rolls_back_and_releases(db: Database) -> None:
    async def writer() -> None:
        async with db.transaction() as con:
            await con.execute(INSERT, (1.0,))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await writer()
    assert await ts_rows(db) == []
    await assert_writable(db, 2.0)


# ------------------------------------------------------------ commit_all: one trip, the lock held by the caller


async def test_commit_all_is_whole_or_nothing(db: Database) -> None:
    bad = ("INSERT INTO no_such_table VALUES (1)", ())
    async with db.write_lock:
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            await db.commit_all([(INSERT, (1.0,)), bad, (INSERT, (3.0,))])
        assert not db.writer.in_transaction, "the failed transaction was left open"
        await db.commit_all([(INSERT, (4.0,)), (INSERT, (5.0,))])
    assert await ts_rows(db) == [4.0, 5.0]
    await assert_writable(db, 6.0)


@pytest.mark.parametrize("cancels", [1, 2])
async def test_commit_all_runs_to_its_end_when_cancelled(
    db: Database, gate: WriterGate, cancels: int
) -> None:
    """A cancel while the transaction waits in the writer's thread: it still commits whole, and the
    caller hears the cancel only after, so the lock it holds is never released over an open transaction."""
    parked = await gate.close_on(db)  # the transaction queues behind the parked statement
    done = asyncio.Event()

    async def writer() -> None:
        async with db.write_lock:
            try:
                await db.commit_all([(INSERT, (1.0,)), (INSERT, (2.0,))])
            finally:
                done.set()

    task = asyncio.create_task(writer())
    # Queued for the writer's thread, behind the parked statement (aiosqlite's queue of calls).
    await wait_for(lambda: db.writer._tx.qsize() > 0, 5, "the transaction to be queued for the writer thread")
    for _ in range(cancels):
        task.cancel()
        await asyncio.sleep(0)
    assert not done.is_set() and db._write_lock.locked()
    gate.open()
    await parked
    await cancelled(task)
    assert await ts_rows(db) == [1.0, 2.0]
    await assert_writable(db, 3.0)


async def test_commit_all_is_one_trip_to_the_writer_thread(db: Database) -> None:
    with counted_trips(db.writer) as trips:
        async with db.write_lock:
            await db.commit_all([(INSERT, (float(i),)) for i in range(50)])
    assert trips == [1]
    assert len(await ts_rows(db)) == 50
