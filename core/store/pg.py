"""PostgreSQL through asyncpg, behind the SQLite Database's interface: the same calls, rows and errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Generator, Sequence
from typing import Any, cast

import asyncpg

from servermanager.core.settings import redact_url
from servermanager.core.store.db import Database
from servermanager.core.store.pgschema import (
    DAY_MS,
    PARTITIONED,
    SCHEMA_VERSION,
    schema_statements,
    sqlite_tables,
)
from servermanager.core.store.rows import COLUMNS, Scope
from servermanager.core.store.transaction import StorageFull, Transaction, _to_completion

log = logging.getLogger(__name__)

# Above this many rows a multi-row statement is split: PostgreSQL binds at most 32767 parameters.
# A statement that has not answered in this long is taken for a server gone silent (a network path
# that drops packets rather than refusing): the write fails as Unavailable, agents back off and keep
# spooling, and health says degraded, rather than the writer waiting forever with health "ok".
COMMAND_TIMEOUT = 60.0
# Rollup marks below this never make a plan bad enough to be worth an ANALYZE.
_ANALYZE_MIN = 1_000


class Unavailable(StorageFull):
    """PostgreSQL could not be reached or the connection broke: nothing of this write was stored.
    A StorageFull, so every path that keeps agents' samples waiting through a full disk does the
    same here (the gateway tells agents to back off, REST answers 503)."""

    reason = "core database unreachable"
    code = "database_unavailable"
    advice = "the core's database (PostgreSQL) is unreachable; try again shortly"


def _map_error(exc: BaseException) -> BaseException:
    """asyncpg's error as the sqlite3 one the callers already handle."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        # Worded as SQLite words it: callers tell a taken name by "UNIQUE" in the message.
        return sqlite3.IntegrityError(f"UNIQUE constraint failed: {exc}")
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return sqlite3.IntegrityError(str(exc))
    if isinstance(
        exc,
        OSError
        | asyncio.TimeoutError
        | asyncpg.InterfaceError
        | asyncpg.PostgresConnectionError
        | asyncpg.CannotConnectNowError
        | asyncpg.AdminShutdownError,
    ):
        return Unavailable(f"PostgreSQL unreachable: {exc}")
    if isinstance(exc, asyncpg.PostgresError):
        return sqlite3.OperationalError(str(exc))
    return exc


# --------------------------------------------------------------------- the SQL dialect

_TOKEN = re.compile(r"'(?:[^']|'')*'|\?")
_OR = re.compile(r"^\s*INSERT\s+OR\s+(IGNORE|REPLACE)\s+INTO\s+(\w+)\s*\(([^)]*)\)", re.I | re.S)
_JSON_ARRAY = re.compile(r"json_group_array\(([^()]+)\)")
_PLAIN_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(\w+)", re.I)


class Dialect:
    """SQLite's SQL as PostgreSQL's, for the statements the core writes: `?` parameters, INSERT OR
    IGNORE / REPLACE as ON CONFLICT, IS [NOT] ? as IS [NOT] DISTINCT FROM, json_group_array, and RETURNING id so an
    INSERT has a lastrowid. Each text is translated once."""

    def __init__(
        self,
        pks: dict[str, list[str]],
        id_tables: set[str],
        uniques: dict[str, list[list[str]]] | None = None,
    ) -> None:
        self.pks = pks
        self.id_tables = id_tables
        self.uniques = uniques or {}
        self._cache: dict[str, tuple[str, bool]] = {}

    def _replace_key(self, table: str, cols: list[str]) -> list[str]:
        """The key an INSERT OR REPLACE of `cols` conflicts on. SQLite replaces the row that any unique
        key matches; PostgreSQL's ON CONFLICT names one: the primary key when the row gives it, else
        the first other unique key the row gives whole (a chunk's (series_id, ts) beside its id)."""
        pk = self.pks[table]
        if set(pk) <= set(cols):
            return pk
        return next((u for u in self.uniques.get(table, []) if set(u) <= set(cols)), pk)

    def __call__(self, sql: str) -> tuple[str, bool]:
        """The PostgreSQL text, and whether it returns the new rows' ids."""
        got = self._cache.get(sql)
        if got is None:
            got = self._cache[sql] = self._translate(sql)
        return got

    def _translate(self, sql: str) -> tuple[str, bool]:
        s = sql
        conflict = ""
        m = _OR.match(s)
        if m:
            kind, table, cols = m.group(1).upper(), m.group(2), [c.strip() for c in m.group(3).split(",")]
            s = f"INSERT INTO {table} ({m.group(3)})" + s[m.end() :]
            if kind == "IGNORE":
                conflict = " ON CONFLICT DO NOTHING"
            else:
                pk = self._replace_key(table, cols)
                sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in pk)
                conflict = f" ON CONFLICT ({', '.join(pk)}) DO UPDATE SET {sets}"
        # SQLite's null-safe comparison with a parameter.
        s = re.sub(r"\bIS NOT \?", "IS DISTINCT FROM ?", s)
        s = re.sub(r"\bIS \?", "IS NOT DISTINCT FROM ?", s)
        s = _JSON_ARRAY.sub(r"coalesce(array_to_json(array_agg(\1))::text, '[]')", s)
        # Integer division stays integer in both; a float divisor is a double here, not a numeric
        # written out with ten decimals.
        s = s.replace("/ 1000.0", "/ 1000.0::float8").replace(" AS INTEGER)", " AS BIGINT)")
        s = s.rstrip().rstrip(";") + conflict
        returning = False
        ins = _PLAIN_INSERT.match(s)
        if ins and ins.group(1) in self.id_tables and "RETURNING" not in s.upper():
            s += " RETURNING id"
            returning = True
        n = 0

        def param(t: re.Match[str]) -> str:
            nonlocal n
            if t.group(0) != "?":
                return t.group(0)
            n += 1
            return f"${n}"

        return _TOKEN.sub(param, s), returning


def _array_type(values: Sequence[Any]) -> str:
    """The PostgreSQL array a column of Python values goes in (a float anywhere makes it a double;
    a column of NULLs only is a double too, which an INSERT may assign to any numeric or text column)."""
    kinds = {type(v) for v in values if v is not None}
    if float in kinds or not kinds:
        return "float8"
    if kinds <= {int, bool}:
        return "bigint"
    if bytes in kinds:
        return "bytea"
    return "text"


def _values_statement(template: str, rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """`template` with its "VALUES {values}" as the rows of `unnest` over one array per column: one
    short text for any number of rows, prepared once per connection. A VALUES list of a parameter
    per value made texts of ~200 KB, which asyncpg does not cache (max_cacheable_statement_size): every
    commit was parsed and planned anew, 15 % of the core's time at 2,000 agents, and its writer fell
    behind. The columns are named column1, column2, .. as a VALUES list's are."""
    columns = [list(c) for c in zip(*rows, strict=True)]
    arrays = ", ".join(f"?::{_array_type(c)}[]" for c in columns)
    names = ", ".join(f"column{i + 1}" for i in range(len(columns)))
    sql = template.replace("VALUES {values}", f"SELECT * FROM unnest({arrays}) AS u({names})")
    if sql == template:
        raise ValueError(f"no VALUES {{values}} in {template!r}")
    return sql, columns


# --------------------------------------------------------------------- cursors and connections


class Cursor:
    """What aiosqlite's cursor gives the callers: rows, rowcount, lastrowid."""

    def __init__(self, rows: list[Any], status: str, lastrowid: int | None) -> None:
        self.rows = rows
        word, _, rest = status.partition(" ")
        self.rowcount = (
            int(rest.rsplit(" ", 1)[-1]) if word in ("INSERT", "UPDATE", "DELETE") and rest else -1
        )
        self.lastrowid = lastrowid

    async def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    async def fetchall(self) -> list[Any]:
        return self.rows

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Call:
    """`await con.execute(...)` and `async with con.execute(...) as cur`, as aiosqlite allows both."""

    def __init__(self, aw: Awaitable[Cursor]) -> None:
        self._aw = aw

    def __await__(self) -> Generator[Any, None, Cursor]:
        return self._aw.__await__()

    async def __aenter__(self) -> Cursor:
        return await self._aw

    async def __aexit__(self, *exc: object) -> None:
        return None


class Connection:
    """One asyncpg connection speaking the SQLite dialect the core's statements are written in."""

    def __init__(self, con: asyncpg.Connection, dialect: Dialect) -> None:
        self.raw = con
        self.dialect = dialect

    @property
    def in_transaction(self) -> bool:
        return bool(self.raw.is_in_transaction())

    async def _run(self, sql: str, params: Sequence[Any]) -> Cursor:
        text, returning = self.dialect(sql)
        try:
            # _execute is asyncpg's own path under fetch(), with the command status beside the rows
            # (rowcount) and the prepared statement cached per connection.
            rows, status, _ = await self.raw._execute(text, tuple(params), 0, None, return_status=True)
        except Exception as exc:
            mapped = _map_error(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        last = rows[-1][0] if returning and rows else None
        return Cursor([] if returning else list(rows), status.decode(), last)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Call:
        return _Call(self._run(sql, params))

    async def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> None:
        for params in seq:
            await self._run(sql, params)

    async def execute_values(self, template: str, rows: Sequence[Sequence[Any]]) -> None:
        """values.execute_values here."""
        await self._run(*_values_statement(template, rows))

    @staticmethod
    def values_statements(template: str, rows: Sequence[Sequence[Any]]) -> list[tuple[str, list[Any]]]:
        """values.values_statements here."""
        return [_values_statement(template, rows)]

    async def fetch_values(self, template: str, rows: Sequence[Sequence[Any]]) -> list[Any]:
        """values.fetch_values here."""
        return (await self._run(*_values_statement(template, rows))).rows

    async def execute_all(self, stmts: Sequence[tuple[str, Sequence[Any]]]) -> None:
        for sql, params in stmts:
            await self._run(sql, params)


class PgTransaction:
    """BEGIN .. COMMIT on the writer under the write lock, rolled back whole on any error; a broken
    writer connection is replaced first. Errors come out as their sqlite3 kind (see _map_error)."""

    def __init__(self, db: PgDatabase, bulk: bool, held: bool = False) -> None:
        self.db = db
        self.bulk = bulk
        self.held = held  # the caller holds the write lock already, and keeps it after
        self.con: Connection | None = None

    def _release(self) -> None:
        if not self.held:
            self.db._write_lock.release()

    async def __aenter__(self) -> Connection:
        if not self.held:
            await self.db._write_lock.acquire()
        try:
            self.con = await self.db._writer_connection()
            await _to_completion(self.con.execute("BEGIN"))
        except BaseException as exc:
            try:
                if self.con is not None:  # BEGIN ran to its end under a cancel: undo it
                    await self._rollback(self.con)
            finally:
                self._release()
            mapped = _map_error(exc)
            if isinstance(mapped, sqlite3.Error):
                self.db._outcome(mapped, self.bulk)
            if mapped is not exc:
                raise mapped from exc
            raise
        return self.con

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        con = self.con
        assert con is not None
        try:
            if exc_type is None:
                try:
                    await _to_completion(con.execute("COMMIT"))
                except BaseException as commit_exc:
                    exc = _map_error(commit_exc)
                    await self._rollback(con)
                    if exc is not commit_exc:
                        raise exc from commit_exc
                    raise
            else:
                await self._rollback(con)
        finally:
            self._release()
            if exc is None or isinstance(exc, sqlite3.Error):
                self.db._outcome(exc, self.bulk)

    async def _rollback(self, con: Connection) -> None:
        if con.raw.is_closed():
            return
        try:
            if con.in_transaction:
                await _to_completion(con.raw.execute("ROLLBACK"))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The connection is not to be trusted: the next transaction opens a new one.
            log.warning("rollback failed (%s); reconnecting", exc)
            con.raw.terminate()


class PgDatabase(Database):
    """The SQLite Database's interface on PostgreSQL: one writer connection (transactions never
    interleave, as with SQLite) and a pool of readers. `path` is the URL with its password redacted."""

    def __init__(self, url: str, readers: int = 0) -> None:
        super().__init__(cast(Any, redact_url(url)), readers)
        self.url = url
        self.shown = redact_url(url)
        self._pg_w: Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self.dialect = Dialect({}, set())
        self._analyzed: dict[str, int] = {}  # rollup marks when each level's tables were last analyzed

    async def _connect(self) -> asyncpg.Connection:
        try:
            con = await asyncpg.connect(self.url, timeout=5, command_timeout=COMMAND_TIMEOUT)
        except Exception as exc:
            if isinstance(_map_error(exc), Unavailable):
                raise Unavailable(f"PostgreSQL at {self.shown} unreachable: {exc}") from None
            raise sqlite3.OperationalError(f"PostgreSQL at {self.shown}: {exc}") from None
        await _init(con)
        return con

    async def open(self) -> None:
        """Bring the database's schema up to date, then connect."""
        raw = await self._connect()
        try:
            await migrate(raw)
            self.dialect = await _dialect(raw)
        except BaseException as exc:
            await raw.close()
            mapped = _map_error(exc)
            if mapped is not exc:  # no rights to create tables, say: one line, as sqlite3's kind
                raise type(mapped)(f"PostgreSQL at {self.shown}: {mapped}") from None
            raise
        self._pg_w = Connection(raw, self.dialect)
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.readers,
                init=_init,
                timeout=5,
                command_timeout=COMMAND_TIMEOUT,
            )
        except Exception as exc:
            await self.close()
            raise _map_error(exc) from None

    async def close(self) -> None:
        self.closed = True
        w, self._pg_w = self._pg_w, None
        pool, self._pool = self._pool, None
        if w is not None:
            with contextlib.suppress(Exception):
                await w.raw.close(timeout=5)
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close()

    async def _writer_connection(self) -> Connection:
        if self._pg_w is None or self._pg_w.raw.is_closed():
            self._pg_w = Connection(await self._connect(), self.dialect)
        return self._pg_w

    @property
    def writer(self) -> Any:
        assert self._pg_w is not None, "database not open"
        return self._pg_w

    @contextlib.asynccontextmanager
    async def reader(self) -> AsyncIterator[Any]:
        assert self._pool is not None, "database not open"
        try:
            con = await self._pool.acquire()
        except Exception as exc:
            raise _map_error(exc) from None
        try:
            yield Connection(con, self.dialect)
        finally:
            await self._pool.release(con)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self.reader() as con:
            return list(await (await con.execute(sql, params)).fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self.reader() as con:
            return await (await con.execute(sql, params)).fetchone()

    def transaction(self, bulk: bool = False, held: bool = False) -> Transaction:
        # Duck-typed as the SQLite Transaction: its connection answers the same calls.
        return cast(Transaction, PgTransaction(self, bulk, held))

    async def commit_all(self, stmts: Sequence[tuple[str, Sequence[Any]]], bulk: bool = False) -> None:
        # asyncpg sends the statements in one go already (Connection.execute_all).
        async with PgTransaction(self, bulk, held=True) as con:
            await con.execute_all(stmts)

    def _outcome(self, exc: BaseException | None, bulk: bool = False) -> None:
        if exc is None:
            if self.full_since is not None:
                log.warning(
                    "PostgreSQL at %s is back: writes resume after %.0fs",
                    self.shown,
                    time.time() - self.full_since,
                )
                self.full_since = None
            return
        if isinstance(exc, Unavailable) and self.full_since is None:
            self.full_since = time.time()
            log.error(
                "PostgreSQL at %s unreachable (%s): writes are refused with 503 and agents keep their samples "
                "until it answers again, then everything resumes by itself",
                self.shown,
                exc,
            )

    def problem(self) -> str | None:
        if self.full_since is None:
            return None
        return f"PostgreSQL unreachable since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.full_since))}: writes refused"

    # ----------------------------------------------------------------- partitions

    async def ensure_days(self, con: Any, days: set[int]) -> None:
        """Create the partitions of `days` (days since the epoch) that do not exist yet, inside the
        caller's transaction. Looked up every time rather than remembered: a creation rolled back
        with its transaction (a cancelled rollup) or a partition another core dropped would make a
        remembered set lie."""
        for table in PARTITIONED:
            missing = days - await _partition_days(con.raw, table)
            for day in sorted(missing):
                await con.raw.execute(
                    f"CREATE TABLE IF NOT EXISTS {table}_d{day} PARTITION OF {table} "
                    f"FOR VALUES FROM ({day * DAY_MS}) TO ({(day + 1) * DAY_MS})"
                )

    async def lock_marks(self, con: Any) -> None:
        """Held by the 1m rollup's transaction until it commits: a writer of another core that marks
        a bucket meanwhile waits, rather than have its mark (ON CONFLICT DO NOTHING against the one
        being rolled up) deleted with the old one while its rows were not in the rollup. It marks
        afresh after the commit, and the next pass rolls the bucket up again. One core's writer and
        rollups never overlap (one writer connection), so this costs it nothing."""
        await con.raw.execute("LOCK TABLE rollup_dirty IN SHARE ROW EXCLUSIVE MODE")

    async def settle_head(self, con: Any, scope: Scope | None = None) -> int:
        """Maintenance's settle here: the head (or its rows in `scope`: nodes lo..hi, before a time
        in ms) moved into samples_raw (its day partitions made first) in ONE statement, so its
        delete takes exactly the rows it copied. Two statements would each see their own snapshot,
        and a row another core committed between them would be deleted without being moved.
        Returns the rows inserted (duplicates dropped)."""
        where, params = _scoped(scope, "node_id BETWEEN $2 AND $3")
        days = {
            int(r[0])
            for r in await con.raw.fetch(f"SELECT DISTINCT ts / {DAY_MS} FROM samples_head{where}", *params)
        }
        await self.ensure_days(con, days)
        status = await con.raw.execute(
            f"WITH moved AS (DELETE FROM samples_head{where} RETURNING {COLUMNS}) "
            f"INSERT INTO samples_raw ({COLUMNS}) SELECT {COLUMNS} FROM moved ORDER BY node_id, ts "
            "ON CONFLICT DO NOTHING",
            *params,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def move_incoming(self, con: Any, scope: Scope | None = None) -> int:
        """SeriesStore.move_incoming here: one statement, for settle_head's reason. Returns the
        points inserted (replays of points the head holds dropped)."""
        where, params = _scoped(scope, "series_id IN (SELECT id FROM series WHERE node_id BETWEEN $2 AND $3)")
        status = await con.raw.execute(
            f"WITH moved AS (DELETE FROM series_incoming{where} RETURNING series_id, ts, value) "
            "INSERT INTO series_raw (series_id, ts, value) SELECT series_id, ts, value FROM moved "
            "ORDER BY series_id, ts ON CONFLICT DO NOTHING",
            *params,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def delete_read(
        self, con: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> int:
        """Delete from `table`, inside the caller's transaction, exactly the rows `rows` (the values of
        `columns` as read earlier in it), in one statement; returns the rows deleted.

        What a span's DELETE would also take is left: a row another core committed into it since the
        read (a late point, a minute recomputed), which READ COMMITTED shows the DELETE but the read
        did not see. It waits where reads find it, for the next pass.
        """
        if not rows:
            return 0
        types = [
            "float8" if any(isinstance(r[i], float) for r in rows) else "bigint" for i in range(len(columns))
        ]
        names = ", ".join(columns)
        arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
        match = " AND ".join(f"t.{c} = r.{c}" for c in columns)
        status = await con.raw.execute(
            f"DELETE FROM {table} AS t USING unnest({arrays}) AS r({names}) WHERE {match}",
            *(list(col) for col in zip(*rows, strict=True)),
        )
        return int(status.rsplit(" ", 1)[-1])

    async def analyze_if_grown(self, con: Any, key: str, n: int, tables: Sequence[str]) -> None:
        """ANALYZE `tables` when a rollup's marks (`n`) are many more than when they were last
        analyzed for `key`: a bulk backfill into tables whose statistics predate it makes PostgreSQL
        plan the range joins row by row (a week of one node's samples: 11 s, 1.4 s after ANALYZE).
        A steady fleet's marks stay alike, so this runs once, and autovacuum keeps it up after."""
        if n < _ANALYZE_MIN or n <= 4 * self._analyzed.get(key, 0):
            return
        await con.raw.execute(f"ANALYZE {', '.join(dict.fromkeys(tables))}")
        self._analyzed[key] = n

    async def drop_days_before(self, table: str, cutoff_ms: int) -> int:
        """Drop the partitions of `table` wholly before cutoff_ms; returns the rows they held."""
        removed = 0
        async with self.transaction() as tx:
            con = cast(Connection, tx)
            for day in sorted(await _partition_days(con.raw, table)):
                if (day + 1) * DAY_MS > cutoff_ms:
                    break
                removed += int(await con.raw.fetchval(f"SELECT count(*) FROM {table}_d{day}"))
                await con.raw.execute(f"DROP TABLE {table}_d{day}")
        return removed


def _scoped(scope: Scope | None, nodes: str) -> tuple[str, tuple[int, ...]]:
    """The WHERE clause and parameters of a head's rows in a rollup slice's scope (lo, hi, before):
    `nodes` names nodes $2..$3."""
    if scope is None:
        return "", ()
    return f" WHERE ts < $1 AND {nodes}", scope.params


async def _init(con: asyncpg.Connection) -> None:
    # sum() and avg() of integers are numerics: as floats, the way SQLite gives them.
    await con.set_type_codec("numeric", encoder=str, decoder=float, schema="pg_catalog", format="text")


async def _partition_days(con: asyncpg.Connection, table: str = "samples_raw") -> set[int]:
    rows = await con.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1 AND p.relnamespace = c.relnamespace "
        "AND pg_table_is_visible(p.oid)",
        table,
    )
    return {int(r[0].rsplit("_d", 1)[1]) for r in rows if re.fullmatch(rf"{table}_d\d+", r[0])}


async def _dialect(con: asyncpg.Connection) -> Dialect:
    rows = await con.fetch(
        "SELECT t.relname, a.attname, array_position(i.indkey::int2[], a.attnum) AS pos, a.attidentity, "
        "i.indisprimary, i.indexrelid "
        "FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
        "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(i.indkey) "
        "WHERE (i.indisprimary OR (i.indisunique AND i.indpred IS NULL)) AND pg_table_is_visible(t.oid) "
        "ORDER BY t.relname, i.indisprimary DESC, i.indexrelid, pos"
    )
    pks: dict[str, list[str]] = {}
    keys: dict[str, dict[int, list[str]]] = {}  # table -> unique index -> its columns, in order
    ids = set()
    for r in rows:
        if r[4]:
            pks.setdefault(r[0], []).append(r[1])
            if r[1] == "id" and r[3]:
                ids.add(r[0])
        else:
            keys.setdefault(r[0], {}).setdefault(r[5], []).append(r[1])
    return Dialect(pks, ids, {t: list(k.values()) for t, k in keys.items()})


async def migrate(con: asyncpg.Connection) -> int:
    """Bring the database to this core's schema in one transaction, under an advisory lock so cores
    starting at once do it one after the other; returns the version reached."""
    async with con.transaction():
        await con.execute("SELECT pg_advisory_xact_lock(7316)")
        version = 0
        if await con.fetchval("SELECT to_regclass('schema_version') IS NOT NULL"):
            version = await con.fetchval("SELECT max(version) FROM schema_version") or 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"database has schema {version}, newer than this core ({SCHEMA_VERSION}); upgrade the core"
            )
        rows = await con.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        )
        have: dict[str, set[str]] = {}
        for r in rows:
            have.setdefault(r[0], set()).add(r[1])
        for stmt in schema_statements(sqlite_tables(), have):
            await con.execute(stmt)
        if version < SCHEMA_VERSION:
            await con.execute("DELETE FROM schema_version")
            await con.execute("INSERT INTO schema_version (version) VALUES ($1)", SCHEMA_VERSION)
            if version == 0:
                await con.execute(
                    "INSERT INTO counters (name, value) VALUES ('alerts', 0) ON CONFLICT DO NOTHING"
                )
            log.info("database migrated to schema %d", SCHEMA_VERSION)
    return SCHEMA_VERSION
