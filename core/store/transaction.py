"""The writer's transactions: BEGIN IMMEDIATE .. COMMIT under one lock, whole even when cancelled."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiosqlite

T = TypeVar("T")


class StorageFull(sqlite3.OperationalError):
    """The disk holding the database is full: this write was rolled back, nothing half-stored. The
    database says so once (see Database) and the first write that fits again says it is over."""

    # What agents (close reason) and REST callers (code, message) are told.
    reason = "core storage full"
    code = "storage_full"
    advice = "the core's disk is full; try again once space is freed"


def is_full(exc: BaseException | None) -> bool:
    return isinstance(exc, sqlite3.Error) and (
        isinstance(exc, StorageFull) or getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    )


# SQLite's primary result codes that no retry mends: the file cannot be written (read-only file,
# directory or mount; owned by another user), opened, or read as a database. A core that keeps
# serving on one answers health "ok" while every write fails, so these end the process.
FATAL_CODES = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_NOTADB,
    }
)


def is_fatal(exc: BaseException | None) -> bool:
    """A storage error the core cannot serve on (see FATAL_CODES); a full disk is not one."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.Error)
        and not is_full(exc)
        and code is not None
        and code & 0xFF in FATAL_CODES
    )


def _noop(exc: BaseException | None) -> None:
    return None


class Transaction:
    """BEGIN IMMEDIATE .. COMMIT on the writer, rolled back whole on any error.

    BEGIN, COMMIT and ROLLBACK run to completion even when the awaiting task is cancelled (the
    core's shutdown cancels its jobs mid-commit): the statement runs in aiosqlite's thread
    regardless, and a cancelled await must not leave the lock released over an open transaction.
    """

    def __init__(
        self,
        con: aiosqlite.Connection,
        lock: asyncio.Lock,
        outcome: Callable[[BaseException | None], None] = _noop,
        held: bool = False,
    ) -> None:
        self.con = con
        self.lock = lock
        # Told how each transaction ended (None: committed), so the database knows when it is full.
        self.outcome = outcome
        # The caller holds the lock already (and keeps it after the transaction): see commit_all.
        self.held = held

    async def __aenter__(self) -> aiosqlite.Connection:
        if not self.held:
            await self.lock.acquire()
        try:
            await _to_completion(self.con.execute("BEGIN IMMEDIATE"))
        except BaseException:
            try:
                if self.con.in_transaction:
                    await _to_completion(self.con.execute("ROLLBACK"))
            finally:
                self._release()
            raise
        return self.con

    def _release(self) -> None:
        if not self.held:
            self.lock.release()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if exc_type is None:
                try:
                    await _to_completion(self.con.execute("COMMIT"))
                except BaseException as commit_exc:
                    if self.con.in_transaction:
                        await _to_completion(self.con.execute("ROLLBACK"))
                    exc = commit_exc
                    raise
            elif self.con.in_transaction:
                await _to_completion(self.con.execute("ROLLBACK"))
        finally:
            self._release()
            if exc is None or isinstance(exc, sqlite3.Error):
                self.outcome(exc)
            if is_full(exc) and not isinstance(exc, StorageFull):
                raise StorageFull(str(exc)) from exc


async def commit_all(
    con: aiosqlite.Connection,
    stmts: Sequence[tuple[str, Sequence[Any]]],
    outcome: Callable[[BaseException | None], None] = _noop,
) -> None:
    """BEGIN IMMEDIATE, the statements and COMMIT (ROLLBACK on any error) in one trip to the
    connection's thread; the caller holds the write lock.

    A Transaction makes three trips (BEGIN, the statements, COMMIT), and each one's result waits
    for a turn of the event loop to be picked up: beside 5,000 agents a turn is 50-190 ms on a
    slower VM, so a sample commit of 130 batches took 0.3-0.6 s, every ack waiting behind it.
    Whole even when cancelled, as a Transaction is.
    """
    run = getattr(con, "_execute", None)
    if run is None:  # aiosqlite without its one-call hook (values.execute_all says why it is used)
        async with Transaction(con, asyncio.Lock(), outcome, held=True) as c:
            for sql, params in stmts:
                await c.execute(sql, params)
        return

    def in_thread() -> None:
        c = con._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in stmts:
                c.execute(sql, params)
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    exc: BaseException | None = None
    try:
        await _to_completion(run(in_thread))
    except BaseException as e:
        exc = e
        raise
    finally:
        if exc is None or isinstance(exc, sqlite3.Error):
            outcome(exc)
        if is_full(exc) and not isinstance(exc, StorageFull):
            raise StorageFull(str(exc)) from exc


async def _to_completion(aw: Awaitable[T]) -> T:
    """Await `aw` to its end however often this task is cancelled meanwhile; one cancel is re-raised after."""
    fut = asyncio.ensure_future(aw)
    cancelled = False
    while not fut.done():
        try:
            await asyncio.wait({fut})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not fut.cancelled():
            fut.exception()  # retrieved: the cancel, not the statement's error, is what the caller hears
        raise asyncio.CancelledError
    return fut.result()
