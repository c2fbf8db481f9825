"""Multi-row statements: many rows bound into one INSERT (or a SELECT's VALUES list), in few distinct SQL texts."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite

# Rows per multi-row statement: a power of two whose parameters fit SQLite's variable limit
# (32766 since 3.32, 999 before) at the widest table, samples_raw: 4 columns plus one per metric,
# 20 now. Rows of up to 63 (31 before 3.32) columns fit; test_values writes full statements of it.
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


def values_statements(
    con: aiosqlite.Connection, template: str, rows: Sequence[Sequence[Any]]
) -> list[tuple[str, Sequence[Any]]]:
    """The statements execute_values would run, for execute_all to run with others in one trip."""
    if not rows:
        return []
    own = getattr(con, "values_statements", None)
    if own is not None:  # PostgreSQL's connection (store/pg.py)
        return list(own(template, rows))
    ncols = len(rows[0])
    out: list[tuple[str, Sequence[Any]]] = []
    i = 0
    for size in _pieces(len(rows)):
        chunk = rows[i : i + size]
        i += size
        out.append((_values_sql(template, ncols, size), [v for row in chunk for v in row]))
    return out


async def execute_values(con: aiosqlite.Connection, template: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run `template` with "{values}" standing for many "(?, ...)" rows, a statement per chunk.

    executemany steps once per row and sqlite3 gives up the GIL around every step; beside a busy
    event loop each step then waits for the GIL to come back (up to the switch interval), which
    turned a 5,000-row commit into seconds. One statement binds a whole chunk under one hold.
    """
    if not rows:
        return
    own = getattr(con, "execute_values", None)
    if own is not None:  # PostgreSQL's connection (store/pg.py) binds its own way
        await own(template, rows)
        return
    ncols = len(rows[0])
    i = 0
    for size in _pieces(len(rows)):
        chunk = rows[i : i + size]
        i += size
        await con.execute(_values_sql(template, ncols, size), [v for row in chunk for v in row])


async def fetch_values(con: aiosqlite.Connection, template: str, rows: Sequence[Sequence[Any]]) -> list[Any]:
    """execute_values for a SELECT: the rows of every statement, in statement order."""
    if not rows:
        return []
    own = getattr(con, "fetch_values", None)
    if own is not None:  # PostgreSQL's connection (store/pg.py)
        return list(await own(template, rows))
    ncols = len(rows[0])
    out: list[Any] = []
    i = 0
    for size in _pieces(len(rows)):
        chunk = rows[i : i + size]
        i += size
        async with con.execute(_values_sql(template, ncols, size), [v for row in chunk for v in row]) as cur:
            out += await cur.fetchall()
    return out


async def execute_all(con: aiosqlite.Connection, stmts: Sequence[tuple[str, Sequence[Any]]]) -> None:
    """Run different statements in order, in one trip to the connection's thread.

    An await per statement costs a turn of the event loop each, inside the write transaction:
    beside 5,000 streaming agents a turn is several milliseconds, and a batch of 800 alert
    changes held the writer (and every sample commit behind it) for up to 9 s. aiosqlite has no
    public call for "run this function in your thread"; its `_execute` is that, and the loop
    below is the fallback should it ever go away (tests/core/store/test_values.py checks it is there).
    """
    own = getattr(con, "execute_all", None)
    if own is not None:  # PostgreSQL's connection (store/pg.py)
        await own(stmts)
        return
    run = getattr(con, "_execute", None)
    if run is None:
        for sql, params in stmts:
            await con.execute(sql, params)
        return

    def in_thread() -> None:
        c = con._conn
        for sql, params in stmts:
            c.execute(sql, params)

    await run(in_thread)
