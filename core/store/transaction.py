"""The writer's transactions: BEGIN IMMEDIATE .. COMMIT under one lock, whole even when cancelled."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

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
    ) -> None:
        self.con = con
        self.lock = lock
        # Told how each transaction ended (None: committed), so the database knows when it is full.
        self.outcome = outcome

    async def __aenter__(self) -> aiosqlite.Connection:
        await self.lock.acquire()
        try:
            await _to_completion(self.con.execute("BEGIN IMMEDIATE"))
        except BaseException:
            try:
                if self.con.in_transaction:
                    await _to_completion(self.con.execute("ROLLBACK"))
            finally:
                self.lock.release()
            raise
        return self.con

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
            self.lock.release()
            if exc is None or isinstance(exc, sqlite3.Error):
                self.outcome(exc)
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
