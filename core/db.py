"""SQLite storage through aiosqlite: one writer connection, one reader, WAL, versioned migrations."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from servermanager.common.metrics import SCALAR_FIELDS

log = logging.getLogger(__name__)
T = TypeVar("T")

DB_FILENAME = "servermanager.db"
ROLLUP_TABLES = {"1m": ("samples_1m", 60_000), "1h": ("samples_1h", 3_600_000)}


def _rollup_table(name: str) -> str:
    cols = ",\n    ".join(f"{f}_avg REAL, {f}_min REAL, {f}_max REAL" for f in SCALAR_FIELDS)
    return f"""
CREATE TABLE {name} (
    node_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    cnt INTEGER NOT NULL,
    {cols},
    PRIMARY KEY (node_id, ts)
) WITHOUT ROWID;"""


_RAW_COLS = ",\n    ".join(f"{f} REAL" for f in SCALAR_FIELDS)

# Append only: a released migration never changes, a newer core adds one at the end.
MIGRATIONS: list[str] = [
    # 1: users, tokens, nodes, samples and their rollups
    f"""
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    pw_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE tokens (
    hash BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT,
    expires_at REAL,
    created_at REAL NOT NULL
);
CREATE TABLE enroll_tokens (
    hash BLOB PRIMARY KEY,
    expires_at REAL NOT NULL,
    uses_left INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    grp TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    cred_hash BLOB NOT NULL UNIQUE,
    host TEXT,
    created_at REAL NOT NULL,
    last_seen REAL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    spool_dropped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE samples_raw (
    node_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    {_RAW_COLS},
    detail BLOB,
    PRIMARY KEY (node_id, ts)
) WITHOUT ROWID;
{_rollup_table("samples_1m")}
{_rollup_table("samples_1h")}
CREATE TABLE rollup_dirty (
    res TEXT NOT NULL,
    node_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (res, node_id, ts)
) WITHOUT ROWID;
""",
    # 2: audit trail of every mutating action
    """
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT,
    result TEXT NOT NULL
);
CREATE INDEX audit_ts ON audit(ts);
CREATE INDEX tokens_user ON tokens(user_id);
""",
    # 3: remote commands and their per-node runs, output included
    """
CREATE TABLE commands (
    id TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    created_at REAL NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    targets TEXT NOT NULL,
    expires_at REAL,
    cancelled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX commands_created ON commands(created_at);
CREATE TABLE command_runs (
    command_id TEXT NOT NULL REFERENCES commands(id) ON DELETE CASCADE,
    node_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    signal INTEGER,
    duration REAL,
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    stdout_bytes INTEGER NOT NULL DEFAULT 0,
    stderr_bytes INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0,
    message TEXT,
    services TEXT,
    finished_at REAL,
    PRIMARY KEY (command_id, node_id)
) WITHOUT ROWID;
CREATE INDEX audit_target ON audit(target);
""",
    # 4: the head of the raw series, in arrival (time) order; see SampleStore.settle
    f"""
CREATE TABLE samples_head (
    ts INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    {_RAW_COLS},
    detail BLOB,
    PRIMARY KEY (ts, node_id)
) WITHOUT ROWID;
""",
]

SCHEMA_VERSION = len(MIGRATIONS)


def migrate_sync(path: Path, upto: int | None = None) -> int:
    """Bring the file at `path` up to `upto` (default: newest); returns the version reached."""
    target = SCHEMA_VERSION if upto is None else upto
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"database {path} has schema {version}, newer than this core ({SCHEMA_VERSION}); upgrade the core"
            )
        while version < target:
            script = MIGRATIONS[version]
            version += 1
            # executescript commits first, so wrap the step and its version bump in one transaction.
            con.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
            log.info("database migrated to schema %d", version)
        return version
    finally:
        con.close()


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

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        migrate_sync(self.path)
        self._w = await aiosqlite.connect(self.path, isolation_level=None)
        self._r = [await aiosqlite.connect(self.path, isolation_level=None) for _ in range(self.readers)]
        for con in (self._w, *self._r):
            await con.execute("PRAGMA foreign_keys=ON")
            await con.execute("PRAGMA busy_timeout=5000")
        for con in self._r:
            self._idle.put_nowait(con)
        # NORMAL in WAL mode survives a process kill -9: only an OS crash can lose the last commits.
        await self._w.execute("PRAGMA synchronous=NORMAL")

    async def close(self) -> None:
        for con in (self._w, *self._r):
            if con is not None:
                await con.close()
        self._w, self._r = None, []
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

    def transaction(self) -> _Transaction:
        return _Transaction(self.writer, self._write_lock)


# Rows per multi-row statement: a power of two whose parameters fit SQLite's variable limit
# (32766 since 3.32, 999 before) at the widest table, samples_raw's 20 columns.
MAX_ROWS_PER_STATEMENT = 512 if sqlite3.sqlite_version_info >= (3, 32) else 32


@functools.lru_cache(maxsize=256)
def _values_sql(template: str, ncols: int, nrows: int) -> str:
    row = "(" + ",".join("?" * ncols) + ")"
    return template.replace("{values}", ",".join([row] * nrows))


def _pieces(n: int) -> list[int]:
    """Split n rows into full statements plus power-of-two remainders: few distinct SQL texts."""
    out = [MAX_ROWS_PER_STATEMENT] * (n // MAX_ROWS_PER_STATEMENT)
    bit = MAX_ROWS_PER_STATEMENT >> 1
    while bit:
        if n & bit:
            out.append(bit)
        bit >>= 1
    return out


async def execute_values(con: aiosqlite.Connection, template: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run `template` with "{values}" standing for many "(?, ...)" rows, a statement per chunk.

    executemany steps once per row and sqlite3 gives up the GIL around every step; beside a busy
    event loop each step then waits for the GIL to come back (up to the switch interval), which
    turned a 5,000-row commit into seconds. One statement binds a whole chunk under one hold.
    """
    if not rows:
        return
    ncols = len(rows[0])
    i = 0
    for size in _pieces(len(rows)):
        chunk = rows[i : i + size]
        i += size
        await con.execute(_values_sql(template, ncols, size), [v for row in chunk for v in row])


class _Transaction:
    """BEGIN IMMEDIATE .. COMMIT on the writer, rolled back whole on any error.

    BEGIN, COMMIT and ROLLBACK run to completion even when the awaiting task is cancelled (the
    core's shutdown cancels its jobs mid-commit): the statement runs in aiosqlite's thread
    regardless, and a cancelled await must not leave the lock released over an open transaction.
    """

    def __init__(self, con: aiosqlite.Connection, lock: asyncio.Lock) -> None:
        self.con = con
        self.lock = lock

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

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                try:
                    await _to_completion(self.con.execute("COMMIT"))
                except BaseException:
                    if self.con.in_transaction:
                        await _to_completion(self.con.execute("ROLLBACK"))
                    raise
            elif self.con.in_transaction:
                await _to_completion(self.con.execute("ROLLBACK"))
        finally:
            self.lock.release()


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
