"""Multi-row inserts (core.store.values.execute_values) on a real SQLite file: every row lands, in few statements."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from servermanager.common.metrics import SCALAR_FIELDS
from servermanager.core.store.db import Database
from servermanager.core.store.values import (
    MAX_ROWS_PER_STATEMENT,
    _pieces,
    execute_all,
    execute_values,
    fetch_values,
)
from tests.helpers.trips import counted_trips

# samples_raw is the widest table the core writes this way (20 columns): the statement size limit
# that MAX_ROWS_PER_STATEMENT guards against is reached here first.
RAW_COLUMNS = ("node_id", "ts", "seq", *SCALAR_FIELDS, "detail")
RAW_TEMPLATE = f"INSERT INTO samples_raw ({', '.join(RAW_COLUMNS)}) VALUES {{values}}"


def _raw_row(node_id: int, i: int) -> tuple[Any, ...]:
    """A row whose every cell says which row and column it came from."""
    scalars = tuple(float(i * 100 + j) for j in range(len(SCALAR_FIELDS)))
    return (node_id, 1_000_000 + i, i + 1, *scalars, f"{node_id}:{i}".encode())


class Statements:
    """The statements SQLite runs on a connection, as its trace callback reports them."""

    def __init__(self) -> None:
        self.sql: list[str] = []

    def __call__(self, sql: str) -> None:  # called on aiosqlite's thread; list.append is atomic
        self.sql.append(sql)

    def inserts(self, table: str) -> list[str]:
        return [s for s in self.sql if s.startswith(f"INSERT INTO {table}")]


@pytest.mark.parametrize("n", [0, 1, 511, 512, 513, 1500])
async def test_execute_values_inserts_exactly_the_rows(db: Database, n: int) -> None:
    rows = [_raw_row(n, i) for i in range(n)]
    trace = Statements()
    await db.writer.set_trace_callback(trace)
    async with db.transaction() as con:
        await execute_values(con, RAW_TEMPLATE, rows)

    stored = await db.fetchall(f"SELECT {', '.join(RAW_COLUMNS)} FROM samples_raw ORDER BY ts")
    assert [tuple(r) for r in stored] == rows
    # A statement per piece, not one per row: 1,500 rows take 8 statements, not 1,500.
    statements = trace.inserts("samples_raw")
    assert len(statements) == len(_pieces(n))
    if n >= 512:
        assert len(statements) < n // 64


async def test_execute_values_takes_the_width_from_the_rows(db: Database) -> None:
    """Any template and width: here two columns of rollup_dirty, from lists rather than tuples."""
    rows = [["1m", node, ts] for node in (1, 2, 3) for ts in range(0, 700 * 60_000, 60_000)]
    async with db.transaction() as con:
        await execute_values(con, "INSERT INTO rollup_dirty (res, node_id, ts) VALUES {values}", rows)
    stored = await db.fetchall("SELECT res, node_id, ts FROM rollup_dirty ORDER BY node_id, ts")
    assert [list(r) for r in stored] == rows


async def test_execute_values_is_part_of_the_callers_transaction(db: Database) -> None:
    """A failure in a late statement takes the earlier statements' rows with it."""
    rows = [_raw_row(7, i) for i in range(MAX_ROWS_PER_STATEMENT + 3)]
    rows.append(rows[0])  # same (node_id, ts) primary key: the last, 1-row statement fails
    with pytest.raises(sqlite3.IntegrityError):
        async with db.transaction() as con:
            await execute_values(con, RAW_TEMPLATE, rows)
    assert not db.writer.in_transaction
    assert (await db.fetchone("SELECT count(*) FROM samples_raw"))[0] == 0
    # The writer is usable afterwards, and the same rows minus the duplicate go in.
    async with db.transaction() as con:
        await execute_values(con, RAW_TEMPLATE, rows[:-1])
    assert (await db.fetchone("SELECT count(*) FROM samples_raw"))[0] == len(rows) - 1


def test_pieces_cover_every_count_with_few_statement_sizes() -> None:
    sizes: set[int] = set()
    for n in range(2001):
        pieces = _pieces(n)
        assert sum(pieces) == n, n
        assert all(0 < s <= MAX_ROWS_PER_STATEMENT for s in pieces), (n, pieces)
        assert all(s & (s - 1) == 0 for s in pieces), (n, pieces)  # powers of two
        assert pieces == sorted(pieces, reverse=True), (n, pieces)
        # Full statements first, then one statement per set bit of the remainder.
        assert len(pieces) == n // MAX_ROWS_PER_STATEMENT + (n % MAX_ROWS_PER_STATEMENT).bit_count()
        sizes.update(pieces)
    # Each size is one SQL text to build and cache: a handful, not one per row count.
    assert len(sizes) <= MAX_ROWS_PER_STATEMENT.bit_length()
    assert max(sizes) == MAX_ROWS_PER_STATEMENT
    assert _pieces(0) == []
    m = MAX_ROWS_PER_STATEMENT
    assert _pieces(2 * m + m // 2 + 1) == [m, m, m // 2, 1]


async def test_execute_all_runs_different_statements_in_order_in_one_trip(db: Database) -> None:
    """core.store.values.execute_all: order kept (an insert, its update, another's delete), and one
    trip to aiosqlite's thread, not one per statement: the private call it relies on is there."""
    assert callable(getattr(db.writer, "_execute", None)), (
        "aiosqlite lost _execute: execute_all falls back to slow"
    )
    stmts: list[tuple[str, tuple[Any, ...]]] = []
    for i in range(1, 201):
        stmts.append(("INSERT INTO kv (k, v) VALUES (?, ?)", (i, "new")))
        stmts.append(("UPDATE kv SET v = ? WHERE k = ?", ("updated", i)))
        if i % 2:
            stmts.append(("DELETE FROM kv WHERE k = ?", (i,)))
    await db.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)")
    with counted_trips(db.writer) as trips:
        async with db.transaction() as con:
            await execute_all(con, stmts)
    assert trips == [3]  # BEGIN, the 500 statements, COMMIT
    rows = await db.fetchall("SELECT k, v FROM kv ORDER BY k")
    assert [tuple(r) for r in rows] == [(k, "updated") for k in range(2, 201, 2)]


async def test_execute_all_fails_whole_inside_a_transaction(db: Database) -> None:
    await db.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)")
    with pytest.raises(sqlite3.IntegrityError):
        async with db.transaction() as con:
            await execute_all(
                con, [("INSERT INTO kv VALUES (1, 'a')", ()), ("INSERT INTO kv VALUES (1, 'b')", ())]
            )
    assert await db.fetchall("SELECT * FROM kv") == []


@pytest.mark.parametrize("n", [1, 513, 1500])
async def test_fetch_values_answers_every_statements_rows_on_both_backends(
    backend_db: Database, n: int
) -> None:
    # A SELECT joining a VALUES list (its columns are column1, column2 on both), of more rows than
    # one statement takes: the rows of every statement come back.
    await backend_db.execute(
        "INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', ?, 0)", (b"\x00",)
    )
    keys = [(1, 1_000 * i) for i in range(n)]
    async with backend_db.transaction() as con:
        await execute_values(
            con,
            "INSERT INTO samples_head (node_id, ts, seq) VALUES {values}",
            [(1, ts, i) for i, (_, ts) in enumerate(keys) if i % 2 == 0],
        )
        got = await fetch_values(
            con,
            "SELECT h.node_id, h.ts, h.seq FROM (VALUES {values}) AS k CROSS JOIN samples_head AS h "
            "WHERE h.node_id = k.column1 AND h.ts = k.column2",
            keys,
        )
    assert sorted(tuple(r) for r in got) == [(1, ts, i) for i, (_, ts) in enumerate(keys) if i % 2 == 0]
    assert await fetch_values(backend_db.writer, "SELECT column1 FROM (VALUES {values}) AS k", []) == []
