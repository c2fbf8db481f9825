"""SQLite through aiosqlite: one writer connection and a pool of readers on one WAL file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from servermanager.core.store.schema import migrate_sync
from servermanager.core.store.transaction import StorageFull, Transaction, commit_all, is_fatal, is_full

__all__ = ["Database", "StorageFull", "is_fatal"]

log = logging.getLogger(__name__)

# The oldest SQLite the statements need: UPDATE .. FROM (3.33, the writer) and a MATERIALIZED
# common table expression (3.35, the expired-series probe). Older gets one clear line at start,
# not an SQL syntax error at the first commit.
SQLITE_NEEDED = (3, 35)


class Database:
    """A writer and a pool of reader connections on one WAL file; all writes go through the writer.

    WAL lets readers run beside the writer and beside each other: with several, one long
    history read (a cold month of every field is half a second of SQLite's time) holds up no
    other read, and a long read split by day runs on as many cores as there are readers.
    """

    def __init__(self, path: Path, readers: int = 0) -> None:
        self.path = path
        self.readers = readers or max(2, min(4, os.cpu_count() or 1))
        self._w: aiosqlite.Connection | None = None
        self._r: list[aiosqlite.Connection] = []
        self._idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        # One writer connection serves every task, so transactions must not interleave.
        self._write_lock = asyncio.Lock()
        self.full_since: float | None = None  # set while writes fail for lack of disk space
        self._full_last = 0.0
        # On a nearly full disk small writes still fit in half-empty pages now and then: that is not
        # the end of it. It is when a bulk write (a sample commit) fits, or any write fits this long
        # after the last failure.
        self.full_quiet = 30.0
        # The first write error no retry mends (read-only file, corruption; see is_fatal), and who
        # hears of it: the core stops on it rather than serve on with every write failing.
        self.fatal: BaseException | None = None
        # Set once close() starts: a task still ending after it (a socket handler cancelled late in
        # a shutdown) skips its bookkeeping write rather than fail on a closed database.
        self.closed = False
        self.on_fatal: Callable[[BaseException], None] | None = None

    def _outcome(self, exc: BaseException | None, bulk: bool = False) -> None:
        """Every write's ending: the first failure for lack of space is said once, clearly, and the
        end of it once. Nothing else logs a full disk."""
        if exc is None:
            if self.full_since is not None and (bulk or time.time() - self._full_last >= self.full_quiet):
                log.warning(
                    "disk space is back: writes to %s resume after %.0fs",
                    self.path,
                    time.time() - self.full_since,
                )
                self.full_since = None
            return
        if is_fatal(exc):
            self._broken(exc)
        if is_full(exc):
            self._full_last = time.time()
        if is_full(exc) and self.full_since is None:
            self.full_since = time.time()
            try:
                free = f"{shutil.disk_usage(self.path.parent).free / (1 << 20):.1f} MiB free"
            except OSError:
                free = "free space unknown"
            log.error(
                "disk full: cannot write to %s (%s); writes are refused with 503 and agents keep their "
                "samples until space is freed, then everything resumes by itself",
                self.path,
                free,
            )

    def problem(self) -> str | None:
        """Why writes are refused now, for health's `degraded`; None while they are not."""
        if self.full_since is None:
            return None
        return f"disk full since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.full_since))}: writes refused"

    def _broken(self, exc: BaseException) -> None:
        """A read or write failed in a way no retry mends: said once, and the core told to stop."""
        if self.fatal is None:
            self.fatal = exc
            log.error("the database %s cannot be used: %s", self.path, exc)
            if self.on_fatal is not None:
                self.on_fatal(exc)

    async def open(self) -> None:
        """Bring the file's schema up to date (see schema.migrate_sync), then connect."""
        if sqlite3.sqlite_version_info < SQLITE_NEEDED:
            need = ".".join(map(str, SQLITE_NEEDED))
            raise RuntimeError(
                f"SQLite {need} or newer is needed; this Python's sqlite3 has {sqlite3.sqlite_version}"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        migrate_sync(self.path)
        _probe_write(self.path)
        try:
            self._w = await aiosqlite.connect(self.path, isolation_level=None)
            for _ in range(self.readers):
                self._r.append(await aiosqlite.connect(self.path, isolation_level=None))
            for con in (self._w, *self._r):
                await con.execute("PRAGMA foreign_keys=ON")
                await con.execute("PRAGMA busy_timeout=5000")
            # NORMAL in WAL mode survives a process kill -9: only an OS crash can lose the last commits.
            await self._w.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            # Each connection is a thread the interpreter waits for at exit: one left open here
            # would keep a core that failed to start from ever ending.
            await self.close()
            raise
        for con in self._r:
            self._idle.put_nowait(con)

    async def close(self) -> None:
        """Close every connection, each even when another fails: an unclosed one is a thread the
        interpreter would wait for at exit."""
        self.closed = True
        cons, self._w, self._r = [self._w, *self._r], None, []
        for con in cons:
            if con is not None:
                try:
                    await con.close()
                except sqlite3.Error as exc:  # its thread has stopped all the same
                    log.warning("closing a connection to %s: %s", self.path, exc)
        self._idle = asyncio.Queue()

    @property
    def writer(self) -> aiosqlite.Connection:
        assert self._w is not None, "database not open"
        return self._w

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[aiosqlite.Connection]:
        """An idle reader connection, held for the block."""
        assert self._r, "database not open"
        con = await self._idle.get()
        try:
            yield con
        except sqlite3.Error as exc:
            if is_fatal(exc):  # a damaged or vanished file shows first in a read
                self._broken(exc)
            raise
        finally:
            # A cancelled read may still be running in the connection's thread; the next user's
            # statement queues behind it there, so the connection can go back at once.
            self._idle.put_nowait(con)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self.reader() as con, con.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self.reader() as con, con.execute(sql, params) as cur:
            return await cur.fetchone()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write in its own transaction; returns the rowcount."""
        async with self.transaction() as con:
            cur = await con.execute(sql, params)
            return cur.rowcount

    async def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One INSERT in its own transaction; returns the new rowid."""
        async with self.transaction() as con:
            cur = await con.execute(sql, params)
            assert cur.lastrowid is not None
            return cur.lastrowid

    def transaction(self, bulk: bool = False, held: bool = False) -> Transaction:
        """`async with db.transaction() as con:` one write transaction on the writer, the others waiting.
        bulk: a large write (a sample commit); its success proves the disk has room again.
        held: the caller holds write_lock already, and keeps it after."""
        return Transaction(self.writer, self._write_lock, self._bulk_outcome if bulk else self._outcome, held)

    @property
    def write_lock(self) -> asyncio.Lock:
        """Held for each write transaction; a caller may hold it across several (see commit_all)."""
        return self._write_lock

    async def commit_all(self, stmts: Sequence[tuple[str, Sequence[Any]]], bulk: bool = False) -> None:
        """The statements as one write transaction, in one trip to the writer's thread (see
        transaction.commit_all); the caller holds write_lock."""
        await commit_all(self.writer, stmts, self._bulk_outcome if bulk else self._outcome)

    def _bulk_outcome(self, exc: BaseException | None) -> None:
        self._outcome(exc, bulk=True)


def _probe_write(path: Path) -> None:
    """Raise now (SQLITE_READONLY) if the file cannot be written, rather than serve with health "ok"
    until the first write fails: an up-to-date schema needs no write to open, so try one that
    changes nothing."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        con.execute(f"PRAGMA user_version = {int(version)}")
    finally:
        con.close()
