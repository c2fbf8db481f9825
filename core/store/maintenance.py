"""Upkeep of the sample tables: settling the head, rollups, pruning past retention, deleting a node."""

from __future__ import annotations

import itertools
import time
from typing import Any

import aiosqlite

from servermanager.common.metrics import SCALAR_FIELDS
from servermanager.core.store.aggregates import merged, rounded
from servermanager.core.store.daycache import DAY_MS, DayCache
from servermanager.core.store.db import Database
from servermanager.core.store.rows import COLUMNS, Scope
from servermanager.core.store.schema import ROLLUP_TABLES, metric_columns
from servermanager.core.store.series import SERIES_TABLES, TIERS, SeriesStore, rollup_sql

# How long after a minute ends its bucket waits for the last samples before being rolled up.
ROLLUP_GRACE_MS = 2_000
_NO_LIMIT = 1 << 62
# The periodic rollup pass refreshes 1h buckets on every sixth pass (each minute at the default
# rollup_every): an hour bucket changes little from one pass to the next.
HOURLY_EVERY = 6

# The head's rows into samples_raw in node order (writer.py says why new rows go to the head).
_SETTLE = (
    f"INSERT OR IGNORE INTO samples_raw ({COLUMNS}) SELECT {COLUMNS} FROM samples_head ORDER BY node_id, ts"
)
# The same for a slice of nodes and the rows before a time (Scope); the head's key (ts, node_id)
# makes it a range read of the few rows that came since the whole head moved.
_SETTLE_SCOPE = (
    f"INSERT OR IGNORE INTO samples_raw ({COLUMNS}) SELECT {COLUMNS} FROM samples_head "
    "WHERE ts < ? AND node_id BETWEEN ? AND ? ORDER BY node_id, ts"
)
# Rows past a retention, a chunk at a time: node by node through the key (node_id, ts). With
# `ts < ?` alone SQLite scanned the whole table, under the write lock, on every prune pass (every
# 5 minutes): at 1,500 agents the fleet's acks fell seconds behind each time (docs/benchmarks.md,
# 2026-12-03 from 12:23), and a steady fleet's two days of raw rows are hundreds of millions.
PRUNE = (
    "DELETE FROM {table} WHERE (node_id, ts) IN (SELECT node_id, ts FROM {table} "
    "WHERE node_id IN (SELECT id FROM nodes) AND ts < ? LIMIT ?)"
)
# Rollup marks (each a node's bucket) done per transaction at most, a node's marks never split:
# the writer, and every agent's ack behind it, waits for each. One transaction for the whole
# minute of 5,000 nodes held it 3.5-4.5 s, 16,000 batches queued behind it, and a young
# collection walking them stalled the event loop (docs/benchmarks.md, 2026-12-03).
SLICE_MARKS = 500
# Seconds at most that a chunk settle keeps the heads from moving into the sample and series
# tables: a steady window of 5,000 agents took 80 s to settle, and the heads' rows that came
# meanwhile (4.5 million) then moved in one transaction that held the writer 2.7 s.
HEADS_EVERY = 10.0


async def _settle(db: Database, con: aiosqlite.Connection, scope: Scope | None = None) -> int:
    """Move the head (or its rows in `scope`) into samples_raw within the caller's transaction;
    returns the rows moved."""
    settle_head = getattr(db, "settle_head", None)
    if settle_head is not None:  # PostgreSQL: day partitions, and other cores writing meanwhile (store/pg.py)
        return int(await settle_head(con, scope))
    if scope is None:
        cur = await con.execute(_SETTLE)
        moved = cur.rowcount
        await con.execute("DELETE FROM samples_head")
        return int(moved)
    params = scope.params
    cur = await con.execute(_SETTLE_SCOPE, params)
    moved = cur.rowcount
    await con.execute("DELETE FROM samples_head WHERE ts < ? AND node_id BETWEEN ? AND ?", params)
    return int(moved)


def _slices(marks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Node id ranges (lo, hi inclusive) of about SLICE_MARKS marks each, from (node_id, marks) in
    node order; together they cover every id, so a node marked since the count is not skipped."""
    starts: list[int] = []
    taken = SLICE_MARKS
    for node_id, n in marks:
        if taken >= SLICE_MARKS:
            starts.append(node_id)
            taken = 0
        taken += n
    if not starts:
        return []
    starts[0] = 0
    return [(lo, (starts[i + 1] - 1) if i + 1 < len(starts) else _NO_LIMIT) for i, lo in enumerate(starts)]


class Maintenance:
    """The background jobs on the sample tables, and a node's deletion; keeps `days` in step with them."""

    def __init__(self, db: Database, days: DayCache, series: SeriesStore | None = None) -> None:
        self.db = db
        self.series = series or SeriesStore(db)
        self.days = days
        self._passes = itertools.count()
        self._heads_moved = 0.0  # time.monotonic() of the last settle()

    async def rollup_pass(self, now: float | None = None) -> int:
        """One pass of the periodic rollup job: rollup(), with the 1h level every HOURLY_EVERY-th pass."""
        return await self.rollup(hours=next(self._passes) % HOURLY_EVERY == 0, now=now)

    async def settle(self) -> int:
        """Move the head into samples_raw, in node order, and new series points into their head;
        returns the sample rows moved (duplicates dropped)."""
        self._heads_moved = time.monotonic()
        async with self.db.transaction() as con:
            await self.series.move_incoming(con)
            return await _settle(self.db, con)

    async def rollup(self, hours: bool = True, now: float | None = None) -> int:
        """Recompute every bucket touched since the last run (late backfill included); returns buckets done.

        A minute bucket waits until its minute is over (plus ROLLUP_GRACE_MS) as of `now`
        (default: the clock), so 1m history ends at the last whole minute; raw covers the rest.

        `hours=False` does the 1m level only and leaves the 1h buckets marked for a later run:
        an hour bucket aggregates 60 minute rows, and recomputing every node's current hour on
        every pass was the largest single cost of the job at fleet scale.

        Each level goes in slices of nodes (SLICE_MARKS), a transaction each, and the writer's
        commits run between them. A 1m slice first moves its nodes' rows of the minutes it rolls
        up from the heads (the whole heads moved just before, so that is only what came since),
        in the same transaction, so its buckets read complete rows from samples_raw and series_raw
        alone: a commit that took the writer between the move and the rollup would have marked
        buckets whose rows were still in a head, and lost them. Each step is one statement
        joining rollup_dirty to its source: SQLite does the whole job without handing rows to
        Python, which beside a busy event loop costs a GIL hand-off each.
        """
        done = 0
        levels = [("1m", "raw", "1h"), ("1h", "1m", None)] if hours else [("1m", "raw", "1h")]
        now_ms = int((time.time() if now is None else now) * 1000)
        for res, src, parent in levels:
            step = ROLLUP_TABLES[res][1]
            # Minutes are rolled up once they are over (and ROLLUP_GRACE has passed for the last
            # samples to land): the current minute, recomputed on every pass, was 3 times the
            # work. The current hour is kept fresh, from the minutes done.
            upto = now_ms - ROLLUP_GRACE_MS - step if res == "1m" else _NO_LIMIT
            if src == "raw":
                await self.settle()
            marks = [
                (int(r[0]), int(r[1]))
                for r in await self.db.fetchall(
                    "SELECT node_id, count(*) FROM rollup_dirty WHERE res = ? AND ts <= ? "
                    "GROUP BY node_id ORDER BY node_id",
                    (res, upto),
                )
            ]
            analyze = getattr(self.db, "analyze_if_grown", None)
            total = sum(n for _, n in marks)
            for lo, hi in _slices(marks):
                done += await self._rollup_slice(res, src, parent, upto, lo, hi, now_ms, analyze, total)
                analyze = None  # once a level, with the level's whole count
        # After the rollups, so a window's buckets are rolled up from the head before it settles.
        await self.series.settle(now_ms, between=self._heads_if_due)
        return done

    async def _heads_if_due(self) -> None:
        if time.monotonic() - self._heads_moved >= HEADS_EVERY:
            await self.settle()

    async def _rollup_slice(
        self,
        res: str,
        src: str,
        parent: str | None,
        upto: int,
        lo: int,
        hi: int,
        now_ms: int,
        analyze: Any,
        total: int,
    ) -> int:
        """One transaction of rollup(): the marks of `res` up to `upto` of nodes lo..hi; returns
        the buckets done."""
        table, step = ROLLUP_TABLES[res]
        if src == "raw":
            aggs = ", ".join(
                rounded(f, f"{agg}(s.{f})") for f in SCALAR_FIELDS for agg in ("avg", "min", "max")
            )
            count, src_table = "count(*)", "samples_raw"
        else:
            aggs = ", ".join(expr for f in SCALAR_FIELDS for expr in merged(f, "s."))
            count, src_table = "sum(s.cnt)", ROLLUP_TABLES[src][0]
        # Named, not positional: a metric added since the table was made is a column at its end.
        columns = ", ".join(("node_id", "ts", "cnt", *metric_columns(table, SCALAR_FIELDS)))
        marked = "d.res = ? AND d.ts <= ? AND d.node_id BETWEEN ? AND ?"
        at = (res, upto, lo, hi)
        rewritten: set[tuple[int, int]] = set()
        async with self.db.transaction() as con:
            if src == "raw":
                lock_marks = getattr(self.db, "lock_marks", None)
                if lock_marks is not None:  # PostgreSQL: other cores' writers (store/pg.py)
                    await lock_marks(con)
                # Every row a bucket up to `upto` reads is before upto + step.
                scope = Scope(lo, hi, upto + step)
                await _settle(self.db, con, scope)
                await self.series.move_incoming(con, scope)
            async with con.execute(f"SELECT count(*) FROM rollup_dirty AS d WHERE {marked}", at) as cur:
                row = await cur.fetchone()
            n = int(row[0]) if row else 0
            if not n:
                return 0
            if analyze is not None:  # PostgreSQL plans these joins from statistics (store/pg.py)
                await analyze(con, res, total, ("rollup_dirty", src_table, SERIES_TABLES[src], "series"))
            if res == "1m" and self.days.max_bytes > 0:
                # Past days this pass rewrites (a late backfill): cached text of them goes.
                today = now_ms // DAY_MS * DAY_MS
                async with con.execute(
                    f"SELECT DISTINCT d.node_id, d.ts / ? FROM rollup_dirty AS d WHERE {marked} AND d.ts < ?",
                    (DAY_MS, *at, today),
                ) as cur:
                    rewritten = {(r[0], r[1]) for r in await cur.fetchall()}
            await con.execute(
                f"INSERT OR REPLACE INTO {table} ({columns}) SELECT d.node_id, d.ts, {count}, {aggs} "
                f"FROM rollup_dirty AS d JOIN {src_table} AS s "
                "ON s.node_id = d.node_id AND s.ts >= d.ts AND s.ts < d.ts + ? "
                f"WHERE {marked} GROUP BY d.node_id, d.ts",
                (step, *at),
            )
            # The named series of the same nodes and buckets, from the same marks; a bucket of
            # a settled window is read from the head once its chunk is back there.
            await self.series.reopen(con, TIERS[src], upto, lo, hi)
            await con.execute(rollup_sql(res, src), (step, *at))
            if parent is not None:
                pstep = ROLLUP_TABLES[parent][1]
                await con.execute(
                    "INSERT OR IGNORE INTO rollup_dirty (res, node_id, ts) "
                    f"SELECT ?, d.node_id, d.ts / ? * ? FROM rollup_dirty AS d WHERE {marked}",
                    (parent, pstep, pstep, *at),
                )
            await con.execute(f"DELETE FROM rollup_dirty AS d WHERE {marked}", at)
        if rewritten:
            # After the commit: dropped before it, a fill could read the old rows after the drop.
            self.days.forget_days(rewritten)
        return n

    async def prune(self, retention: dict[str, float], now: float | None = None, chunk: int = 50_000) -> int:
        """Delete rows past each resolution's retention, in chunks so writers are never blocked long."""
        now = time.time() if now is None else now
        removed = 0
        for table, keep in (
            ("samples_raw", retention["raw"]),
            ("samples_1m", retention["1m"]),
            ("samples_1h", retention["1h"]),
        ):
            cutoff = round((now - keep) * 1000)
            drop_days_before = getattr(self.db, "drop_days_before", None)
            if drop_days_before is not None and table == "samples_raw":
                # PostgreSQL: whole days go with their partition; the rows below delete the rest.
                removed += await drop_days_before(table, cutoff)
            while True:
                n = await self.db.execute(PRUNE.format(table=table), (cutoff, chunk))
                removed += n
                if table == "samples_1m" and n:
                    self.days.forget_until(cutoff // DAY_MS)
                if n < chunk:
                    break
        removed += await self.series.prune(retention, now)
        return removed

    async def delete_node(self, node_id: int) -> None:
        """Every stored row of the node, in every tier and resolution, and its cached days."""
        async with self.db.transaction() as con:
            for table in (
                "samples_head",
                "samples_raw",
                "samples_1m",
                "samples_1h",
                "proc_samples",
                "container_samples",
            ):
                await con.execute(f"DELETE FROM {table} WHERE node_id = ?", (node_id,))
            await con.execute("DELETE FROM rollup_dirty WHERE node_id = ?", (node_id,))
            await con.execute("DELETE FROM node_latest WHERE node_id = ?", (node_id,))
            await self.series.delete_node(con, node_id)
            # Under the write lock, as prune_dictionary does: a commit put together meanwhile binds
            # its points again rather than use the deleted series' ids (Writer._execute).
            self.series.forget_node(node_id)
        self.days.forget_node(node_id)
