"""Copying a SQLite database into PostgreSQL: table by table in batches (COPY), in one transaction, then counted."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from servermanager.core.store.pg import Connection, PgDatabase
from servermanager.core.store.pgschema import DAY_MS, PARTITIONED, Table, sqlite_tables
from servermanager.core.store.schema import migrate_sync

BATCH = 5_000
_BOOKKEEPING = frozenset({"counters"})


class TargetNotEmpty(Exception):
    """The PostgreSQL database already holds rows (in the tables named); --force replaces them."""


def _in_fk_order(tables: list[Table]) -> list[Table]:
    """Referenced tables before the tables that reference them."""
    by_name = {t.name: t for t in tables}
    out: list[Table] = []
    seen: set[str] = set()

    def visit(t: Table) -> None:
        if t.name in seen:
            return
        seen.add(t.name)
        for fk in t.fks:
            ref = fk.split("REFERENCES ", 1)[1].split(" ", 1)[0]
            if ref in by_name:
                visit(by_name[ref])
        out.append(t)

    for t in tables:
        visit(t)
    return out


async def copy_sqlite_to_pg(
    src: Path, db: PgDatabase, *, force: bool = False, say: Callable[[str], None] = print
) -> dict[str, tuple[int, int]]:
    """Copy every table of the SQLite file `src` into the open PostgreSQL `db`, in one transaction;
    returns {table: (rows in SQLite, rows in PostgreSQL)} counted after the commit.

    The file is brought to this core's schema first (as the core would on start), so both sides
    have the same columns. A target that holds rows is refused (TargetNotEmpty) unless `force`,
    which empties the copied tables first. Identity sequences continue above the highest id the
    SQLite file ever gave (sqlite_sequence), so no id is given twice.
    """
    migrate_sync(src)
    tables = _in_fk_order(sqlite_tables())
    with contextlib.closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as lite:
        have = {
            r[0]: r[1] for r in lite.execute("SELECT name, seq FROM sqlite_sequence") if isinstance(r[0], str)
        }
        async with db.transaction() as tx:
            con = cast(Connection, tx).raw
            # counters holds a row in a new database of either kind: the copy brings the file's own.
            full = [
                t.name
                for t in tables
                if t.name not in _BOOKKEEPING
                and await con.fetchval(f"SELECT EXISTS (SELECT 1 FROM {t.name})")
            ]
            if full and not force:
                raise TargetNotEmpty(", ".join(full))
            await con.execute(f"TRUNCATE {', '.join(t.name for t in tables)} CASCADE")
            for t in tables:
                cols = [c.name for c in t.columns]
                if t.name in PARTITIONED:
                    days = {int(r[0]) for r in lite.execute(f"SELECT DISTINCT ts / {DAY_MS} FROM {t.name}")}
                    await db.ensure_days(tx, days)
                order = " ORDER BY rowid" if not t.pk else ""  # arrival order, kept in PostgreSQL's rowid
                cur = lite.execute(f"SELECT {', '.join(cols)} FROM {t.name}{order}")
                n = 0
                while batch := cur.fetchmany(BATCH):
                    await con.copy_records_to_table(t.name, records=batch, columns=cols)
                    n += len(batch)
                if t.identity:
                    top = max(
                        int(have.get(t.name, 0)),
                        int(lite.execute(f"SELECT coalesce(max({t.pk[0]}), 0) FROM {t.name}").fetchone()[0]),
                    )
                    await con.execute(
                        f"SELECT setval(pg_get_serial_sequence('{t.name}', '{t.pk[0]}'), $1, $2)",
                        max(top, 1),
                        top > 0,
                    )
                say(f"{t.name}: {n} rows copied")
        counts: dict[str, tuple[int, int]] = {}
        for t in tables:
            mine = int(lite.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0])
            row: Any = await db.fetchone(f"SELECT count(*) FROM {t.name}")
            counts[t.name] = (mine, int(row[0]))
    return counts
