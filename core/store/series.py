"""Named series (custom metrics, service checks, devices): a dictionary of (node, name, labels), narrow heads, chunks and rollups.

series_incoming holds (ts, series_id, value) rows written in the transaction of their sample
(writer.py), so an acknowledged sample has its series stored too; it is clustered by time, so a
commit appends to a few pages. The rollup pass moves it into series_raw, the head, clustered by series
for reads (move_incoming), as samples_head moves into samples_raw. Once a chunk window
(chunks.CHUNK_MS) is over, the maintenance pass settles its points into one compressed row of
series_chunks per series, deleting the head rows in the same transaction (settle). The rollup
job fills series_1m and series_1h from the heads, by the same rollup_dirty marks as the sample
tables (maintenance.py), and series_1m is settled likewise into series_1m_chunks (cnt, avg, min,
max per minute, a chunk per ROLLUP_CHUNK_MS). A rollup that needs rows of a settled window (a
late point) first puts that chunk back into its head (reopen). The same retentions prune all of
them, and a series whose points have all expired leaves the dictionary.
"""

from __future__ import annotations

import asyncio
import bisect
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite
import msgspec

from servermanager.common.metrics import Sample
from servermanager.common.series import DEVICE_PREFIX, labels_key
from servermanager.core.store.chunks import CHUNK_MS, decode_columns, encode
from servermanager.core.store.db import Database
from servermanager.core.store.rows import Scope
from servermanager.core.store.values import execute_all, execute_values, fetch_values

SERIES_TABLES = {"raw": "series_raw", "1m": "series_1m", "1h": "series_1h"}
_KEY_INSERT = "INSERT OR IGNORE INTO series (node_id, name, labels, unit) VALUES {values}"
POINT_INSERT = "INSERT OR IGNORE INTO series_incoming (series_id, ts, value) VALUES {values}"
_KEY_LOOKUP = (
    "SELECT s.node_id, s.name, s.labels, s.id FROM (VALUES {values}) AS k CROSS JOIN series AS s "
    "WHERE s.node_id = k.column1 AND s.name = k.column2 AND s.labels = k.column3"
)
INCOMING = "series_incoming"
# series_incoming into the head in series order, touching each series' page once per pass.
_MOVE_INCOMING = (
    "INSERT OR IGNORE INTO series_raw (series_id, ts, value) "
    f"SELECT series_id, ts, value FROM {INCOMING} ORDER BY series_id, ts"
)
# The points of some nodes' series before a time (a rollup slice's Scope, core/store/maintenance.py):
# a range read on series_incoming's key (ts, series_id) of the few points that came since the
# whole of it moved.
SCOPED = "ts < ? AND series_id IN (SELECT id FROM series WHERE node_id BETWEEN ? AND ?)"
_MOVE_SCOPED = (
    "INSERT OR IGNORE INTO series_raw (series_id, ts, value) "
    f"SELECT series_id, ts, value FROM {INCOMING} WHERE {SCOPED} ORDER BY series_id, ts"
)
# Head rows settled per transaction at most: the writer waits for each, and the agents' acks
# behind it.
SETTLE_ROWS = 20_000
# How long after a window ends its head points wait for late samples before being settled.
SETTLE_GRACE_MS = 60_000
# 1m rollup rows: a chunk per three hours (180 rows of four columns, under a page), settled a day
# after the window ends: the last day, the range a node view opens on, is read from the narrow
# rows as fast as before, and it is under 4 % of the 30 days kept.
ROLLUP_CHUNK_MS = 3 * 3_600_000
ROLLUP_SETTLE_GRACE_MS = 24 * 3_600_000

Points = tuple[list[int], list[tuple[float, ...]]]  # ts (ms), a row of column values per ts


@dataclass(frozen=True)
class Tier:
    """A head table of narrow rows and the table of chunks its settled windows become."""

    head: str
    chunks: str
    columns: tuple[str, ...]
    window: int  # ms
    grace: int  # ms
    # Which copy a read keeps when the head and a chunk both hold a ts: a raw point in the head
    # is a replay (the chunk's copy was acked first); a rollup row there was recomputed.
    head_wins: bool
    mark: str  # the rollup_dirty resolution whose buckets read this tier
    shown: tuple[int, ...]  # the columns history reads (a rollup's cnt is for merging only)
    incoming: str | None = None  # where new rows wait before the head (raw points only)

    def start(self, ts: int) -> int:
        return ts // self.window * self.window


RAW = Tier("series_raw", "series_chunks", ("value",), CHUNK_MS, SETTLE_GRACE_MS, False, "1m", (0,), INCOMING)
MINUTES = Tier(
    "series_1m",
    "series_1m_chunks",
    ("cnt", "avg", "min", "max"),
    ROLLUP_CHUNK_MS,
    ROLLUP_SETTLE_GRACE_MS,
    True,
    "1h",
    (1, 2, 3),
)
TIERS = {"raw": RAW, "1m": MINUTES}


# Series ids whose old points one prune transaction deletes at most: each series is a seek through
# the key, and all 110,000 of a 5,000-agent fleet in one statement held the writer 0.8 s each pass.
PRUNE_SERIES = 20_000
# Series with no point left in any table. The waiting points' key is (ts, series_id): probed by
# series, SQLite scanned them all for every series (44 s at 5,000 agents), so their series are
# gathered once, and probed last, after the tables whose key leads with the series.
# The tables of a series' points whose key leads with series_id (the waiting points' does not).
KEYED_BY_SERIES = (*SERIES_TABLES.values(), *(t.chunks for t in TIERS.values()))
_NONE = " AND ".join(
    f"NOT EXISTS (SELECT 1 FROM {t} WHERE series_id = s.id)" for t in (*KEYED_BY_SERIES, "waiting")
)
_WAITING = f"WITH waiting AS MATERIALIZED (SELECT DISTINCT series_id FROM {INCOMING}) "
EXPIRED = f"{_WAITING}SELECT id FROM series AS s WHERE {_NONE}"
EXPIRED_AMONG = f"{_WAITING}SELECT id FROM series AS s WHERE id IN (VALUES {{values}}) AND {_NONE}"


def _merged(first: Points, second: Points) -> Points:
    """The points of both in time order, once each; `first`'s where both hold a ts."""
    if not second[0]:
        return first
    if not first[0]:
        return second
    by_ts = dict(zip(*second, strict=True))
    by_ts.update(zip(*first, strict=True))
    ts = sorted(by_ts)
    return ts, [by_ts[t] for t in ts]


Columns = tuple[list[int], list[list[float]]]  # ts (ms), each column's values


def _joined(first: Columns, second: Columns) -> Columns:
    """The rows of both in time order, once each; `first`'s where both hold a ts. Reads take the
    quick way: the head's rows all come after the chunks' but for a late point."""
    (ts1, cols1), (ts2, cols2) = first, second
    if not ts2:
        return first
    if not ts1:
        return second
    if ts1[-1] < ts2[0]:
        return ts1 + ts2, [a + b for a, b in zip(cols1, cols2, strict=True)]
    if ts2[-1] < ts1[0]:
        return ts2 + ts1, [b + a for a, b in zip(cols1, cols2, strict=True)]
    ts, rows = _merged((ts1, list(zip(*cols1, strict=True))), (ts2, list(zip(*cols2, strict=True))))
    return ts, [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in cols1]


def _rows(blob: bytes) -> Points:
    ts, columns = decode_columns(blob)
    return ts, list(zip(*columns, strict=True))


def _blob(points: Points) -> bytes:
    ts, rows = points
    return encode(ts, *(list(c) for c in zip(*rows, strict=True)))


def _grouped(rows: Sequence[Sequence[Any]], tier: Tier) -> dict[tuple[int, int], Points]:
    """Head rows (series_id, ts, *columns) in key order, as points per (series, window start)."""
    groups: dict[tuple[int, int], Points] = {}
    for sid, ts, *values in rows:
        key = (sid, tier.start(ts))
        group = groups.get(key)
        if group is None:
            group = groups[key] = ([], [])
        group[0].append(ts)
        group[1].append(tuple(values))
    return groups


def _packed(
    groups: dict[tuple[int, int], Points], chunks: Sequence[Sequence[Any]], tier: Tier
) -> list[tuple[int, int, int, bytes]]:
    """The chunk rows (series_id, ts, n, data) of `groups`, each merged with the stored chunk of its
    window in `chunks` (series_id, ts, data), if any."""
    for sid, w, blob in chunks:
        old, new = _rows(blob), groups[(sid, w)]
        groups[(sid, w)] = _merged(new, old) if tier.head_wins else _merged(old, new)
    return [(sid, w, len(p[0]), _blob(p)) for (sid, w), p in groups.items()]


# Series ids bound per statement at most when a settle is limited to some series.
_IDS_PER_STATEMENT = 512


def _id_lists(ids: Iterable[int]) -> list[tuple[int, ...]]:
    """`ids` in ascending lists of at most _IDS_PER_STATEMENT, each padded to a power of two with its
    last id, so "IN (?, ...)" takes few distinct texts (each prepared once, on either backend)."""
    ordered = sorted(ids)
    out = []
    for a in range(0, len(ordered), _IDS_PER_STATEMENT):
        part = ordered[a : a + _IDS_PER_STATEMENT]
        out.append((*part, *[part[-1]] * ((1 << (len(part) - 1).bit_length()) - len(part))))
    return out


Key = tuple[int, str, str]  # node_id, name, labels_key
Between = Callable[[], Awaitable[None]]  # what a settle runs between its transactions


class PendingPoint(msgspec.Struct, gc=False):
    """A batch's point before its series id is known.

    A struct the cycle collector does not track, not a tuple: ten of these per sample wait in the
    writer's queue until their commit, and at 5,000 samples a second, as tuples (tracked, since
    each holds its key tuple), they alone set off a young collection every second or so that
    walked them all (~150 ms each). They hold no reference cycle, which is what gc=False needs.
    """

    key: Key
    unit: str | None
    ts: int  # ms
    value: float


def pending_points(node_id: int, samples: Iterable[Sample]) -> list[PendingPoint]:
    """The points of a batch, keyed; built as the batch arrives (like the sample rows)."""
    out: list[PendingPoint] = []
    for s in samples:
        if not s.metrics.series:
            continue
        ts = round(s.ts * 1000)
        for p in s.metrics.series:
            if p.name.startswith(DEVICE_PREFIX):
                continue  # reserved for the core's device series (core/store/devices.py)
            out.append(PendingPoint((node_id, p.name, labels_key(p.labels)), p.unit, ts, p.value))
    return out


def rollup_sql(res: str, src: str) -> str:
    """The statement that recomputes the series buckets of rollup_dirty's (res, node, ts) marks.

    Parameters: (bucket width ms, res, upto, lowest node id, highest node id), as the sample
    tables' statement takes them.
    """
    table = SERIES_TABLES[res]
    if src == "raw":
        aggs = "count(*), avg(r.value), min(r.value), max(r.value)"
    else:
        aggs = "sum(r.cnt), sum(r.avg * r.cnt) / sum(r.cnt), min(r.min), max(r.max)"
    return (
        f"INSERT OR REPLACE INTO {table} (series_id, ts, cnt, avg, min, max) "
        f"SELECT r.series_id, d.ts, {aggs} "
        "FROM rollup_dirty AS d JOIN series AS s ON s.node_id = d.node_id "
        f"JOIN {SERIES_TABLES[src]} AS r ON r.series_id = s.id AND r.ts >= d.ts AND r.ts < d.ts + ? "
        "WHERE d.res = ? AND d.ts <= ? AND d.node_id BETWEEN ? AND ? GROUP BY r.series_id, d.ts"
    )


class SeriesStore:
    """Writes (inside the writer's transaction), reads and upkeep of the named series."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # (node, name, labels) -> series id. Filled only after a commit, so a rolled-back insert
        # leaves no id behind; dropped for a node when the node is deleted.
        self._ids: dict[Key, int] = {}
        # Bumped under the write lock whenever ids leave _ids: the writer binds points before it
        # takes the lock, and binds them again if this moved meanwhile.
        self.generation = 0
        # Per tier, the end of the newest window settle() has done (ms): it works once per window.
        self._settled = dict.fromkeys(TIERS.values(), 0)
        # Per tier, the series reopen() put chunks of back into the head since the last settle.
        self._reopened: dict[Tier, set[int]] = {t: set() for t in TIERS.values()}

    def known_rows(self, points: Sequence[PendingPoint]) -> list[tuple[int, int, float]] | None:
        """The rows of `points` for POINT_INSERT when every series is known (nearly always), else
        None: write() looks the new ones up."""
        ids = self._ids
        try:
            return [(ids[p.key], p.ts, p.value) for p in points]
        except KeyError:
            return None

    async def write(self, con: aiosqlite.Connection, points: Sequence[PendingPoint]) -> dict[Key, int]:
        """Insert `points`, some of whose series are new (known_rows() gave None), in the caller's
        transaction; returns the ids it had to look up, for remember() once the transaction commits."""
        if not points:
            return {}
        ids = self._ids
        found: dict[Key, int] = {}
        missing = {p.key: p.unit for p in points if p.key not in ids}
        if missing:
            await execute_values(con, _KEY_INSERT, [(*key, unit) for key, unit in missing.items()])
            # All in one statement: a lookup per new series, each a trip to the database thread
            # inside the write transaction, held every agent's ack for minutes when a fleet of
            # thousands first connected (ten device series each).
            for nid, name, labels, sid in await fetch_values(con, _KEY_LOOKUP, list(missing)):
                found[(nid, name, labels)] = int(sid)
            assert len(found) == len(missing), "a series the transaction inserted is not there"
        rows = [((ids.get(p.key) or found[p.key]), p.ts, p.value) for p in points]
        await execute_values(con, POINT_INSERT, rows)
        return found

    def remember(self, found: dict[Key, int]) -> None:
        self._ids.update(found)

    def forget_node(self, node_id: int) -> None:
        for key in [k for k in self._ids if k[0] == node_id]:
            del self._ids[key]
        self.generation += 1

    # ------------------------------------------------------------ reads

    async def list(
        self, node_id: int, devices: bool = False
    ) -> list[tuple[int, str, dict[str, str], str | None, float | None, float | None]]:
        """The node's series, its own (custom, scrapes, checks) or with `devices` the device series
        the core derives (core/store/devices.py): id, name, labels, unit, and its last raw point
        (ts s, value)."""
        rows = await self.db.fetchall(
            "SELECT s.id, s.name, s.labels, s.unit, "
            "(SELECT ts FROM series_raw WHERE series_id = s.id ORDER BY ts DESC LIMIT 1), "
            "(SELECT value FROM series_raw WHERE series_id = s.id ORDER BY ts DESC LIMIT 1), "
            "(SELECT ts FROM series_chunks WHERE series_id = s.id ORDER BY ts DESC LIMIT 1), "
            "(SELECT data FROM series_chunks WHERE series_id = s.id ORDER BY ts DESC LIMIT 1) "
            "FROM series AS s WHERE s.node_id = ? AND (substr(s.name, 1, ?) = ?) = ? ORDER BY s.name, s.labels",
            (node_id, len(DEVICE_PREFIX), DEVICE_PREFIX, devices),
        )
        # The newest points, not yet moved to the head: one pass over series_incoming (clustered by
        # time, it holds a rollup interval of every series) rather than a pass per series.
        newest: dict[int, tuple[int, float]] = {}
        for sid, ts, value in await self.db.fetchall(
            f"SELECT series_id, ts, value FROM {INCOMING} "
            "WHERE series_id IN (SELECT id FROM series WHERE node_id = ?)",
            (node_id,),
        ):
            have = newest.get(sid)
            if have is None or ts > have[0]:
                newest[sid] = (ts, value)
        out = []
        for sid, name, labels, unit, ts, value, chunk_ts, blob in rows:
            # The head holds the newest point unless the node has been quiet since its window
            # settled (or the head's newest is a late point of an older window).
            if blob is not None and (ts is None or ts < chunk_ts + CHUNK_MS):
                cts, crows = _rows(blob)
                if ts is None or cts[-1] > ts:
                    ts, value = cts[-1], crows[-1][0]
            fresh = newest.get(sid)
            if fresh is not None and (ts is None or fresh[0] > ts):
                ts, value = fresh
            out.append((sid, name, json.loads(labels), unit, None if ts is None else ts / 1000, value))
        return out

    async def find(self, node_id: int, name: str, labels: dict[str, str]) -> tuple[int, str | None] | None:
        row = await self.db.fetchone(
            "SELECT id, unit FROM series WHERE node_id = ? AND name = ? AND labels = ?",
            (node_id, name, labels_key(labels)),
        )
        return None if row is None else (int(row[0]), row[1])

    async def history(self, series_id: int, start: float, end: float, resolution: str) -> dict[str, Any]:
        """ts, avg (and min, max for rollups) of one series over [start, end], in time order."""
        lo, hi = round(start * 1000), round(end * 1000)
        if resolution == "raw":
            ts, columns = await self._read(RAW, series_id, lo, hi)
            return {"ts": [t / 1000 for t in ts], "avg": columns[0]}
        if resolution == "1m":
            ts, (avg, low, high) = await self._read(MINUTES, series_id, lo, hi)
        else:
            found = await self.db.fetchall(
                "SELECT ts, avg, min, max FROM series_1h WHERE series_id = ? AND ts >= ? AND ts <= ? ORDER BY ts",
                (series_id, lo, hi),
            )
            ts, avg, low, high = (
                [r[0] for r in found],
                [r[1] for r in found],
                [r[2] for r in found],
                [r[3] for r in found],
            )
        return {"ts": [t / 1000 for t in ts], "avg": avg, "min": low, "max": high}

    async def _read(self, tier: Tier, series_id: int, lo: int, hi: int) -> Columns:
        """The tier's rows in [lo, hi] (ms) from its chunks and its head, each ts once, as columns
        (those of tier.shown).

        One statement reads both, so both are of one snapshot: a settle or reopen committed
        between two reads would move rows from the table not yet read to the one already read.
        Columnar all the way: a week of 1m rows is 10,080 rows a chart waits for.
        """
        cols = ", ".join(tier.columns[i] for i in tier.shown)
        nulls = ", ".join("NULL" for _ in tier.shown)
        # The NULLs stand in the compound's own columns, not the subqueries': PostgreSQL types a
        # NULL a subquery returns as text, which matches neither a blob nor a number.
        sql = (
            f"SELECT ts, data, {nulls} FROM (SELECT ts, data FROM {tier.chunks} "
            "WHERE series_id = ? AND ts >= ? AND ts <= ? ORDER BY ts) AS c "
            f"UNION ALL SELECT ts, NULL, {cols} FROM (SELECT ts, {cols} FROM {tier.head} "
            "WHERE series_id = ? AND ts >= ? AND ts <= ? ORDER BY ts) AS h"
        )
        params: tuple[int, ...] = (series_id, tier.start(lo), hi, series_id, lo, hi)
        if tier.incoming is not None:
            # After the head's rows: where both hold a ts (a replay) the head's copy, acked first, is kept.
            sql += (
                f" UNION ALL SELECT ts, NULL, {cols} FROM (SELECT ts, {cols} FROM {tier.incoming} "
                "WHERE series_id = ? AND ts >= ? AND ts <= ?) AS i"
            )
            params += (series_id, lo, hi)
        found = await self.db.fetchall(sql, params)
        # A compound SELECT promises no order: each part is checked (linear on sorted input) and
        # sorted if need be.
        blobs = [blob for _, blob in sorted((r[0], r[1]) for r in found if r[1] is not None)]
        head_rows = [r for r in found if r[1] is None]
        head: Columns = ([], [[] for _ in tier.shown])
        if head_rows:
            transposed = list(zip(*head_rows, strict=True))
            stamps = transposed[0]
            if list(stamps) != sorted(stamps) or len(set(stamps)) != len(stamps):
                # A stable sort: of two rows with one ts (a replay) the first read, the head's, is kept.
                head_rows = sorted(head_rows, key=lambda r: r[0])
                head_rows = [r for i, r in enumerate(head_rows) if not i or r[0] != head_rows[i - 1][0]]
                transposed = list(zip(*head_rows, strict=True))
            head = list(transposed[0]), [list(c) for c in transposed[2:]]
        ts: list[int] = []
        columns: list[list[float]] = [[] for _ in tier.shown]
        for blob in blobs:  # windows apart, in time order: their points simply follow
            cts, ccols = decode_columns(blob, tier.shown)
            i, j = bisect.bisect_left(cts, lo), bisect.bisect_right(cts, hi)
            whole = i == 0 and j == len(cts)
            ts += cts if whole else cts[i:j]
            for column, part in zip(columns, ccols, strict=True):
                column += part if whole else part[i:j]
        chunked: Columns = (ts, columns)
        return _joined(head, chunked) if tier.head_wins else _joined(chunked, head)

    # ------------------------------------------------------------ upkeep

    async def move_incoming(self, con: aiosqlite.Connection, scope: Scope | None = None) -> int:
        """Move series_incoming (or its points in `scope`: the nodes lo..hi, before a time in ms)
        into the head in series order, in the caller's transaction (a rollup slice's, before it
        reads the head); returns the points moved, replays of points the head holds dropped."""
        move = getattr(self.db, "move_incoming", None)
        if move is not None:  # PostgreSQL: other cores write meanwhile (store/pg.py)
            return int(await move(con, scope))
        if scope is None:
            cur = await con.execute(_MOVE_INCOMING)
            moved = cur.rowcount
            await con.execute(f"DELETE FROM {INCOMING}")
            return int(moved)
        cur = await con.execute(_MOVE_SCOPED, scope.params)
        moved = cur.rowcount
        await con.execute(f"DELETE FROM {INCOMING} WHERE {SCOPED}", scope.params)
        return int(moved)

    async def settle(self, now_ms: int, force: bool = False, between: Between | None = None) -> int:
        """Move the heads' rows of every window over by its grace into chunks (raw points, then
        1m rollup rows); returns the rows moved. New points join the raw head first. `between`
        runs after each transaction (see settle_tier)."""
        async with self.db.transaction() as con:
            await self.move_incoming(con)
        return await self.settle_tier(RAW, now_ms, force, between) + await self.settle_tier(
            MINUTES, now_ms, force, between
        )

    async def settle_tier(
        self, tier: Tier, now_ms: int, force: bool = False, between: Between | None = None
    ) -> int:
        """Move the head's rows of every window over by tier.grace into chunks; returns the rows moved.

        Works once per window that ends (or with `force`), and in between on the series reopen()
        put chunks of back: other late rows of older windows wait in the head, where reads find
        them, until the next window. Each transaction takes at most SETTLE_ROWS
        rows, in key order, as whole (series, window) groups: it writes their chunks and deletes
        the head rows they hold, so a crash leaves every row in exactly one of the two, and the
        writer (with the agents' acks behind it) never waits long, even on the first pass over
        a head of days (a database from before chunks).

        `between` runs after each transaction, never between a batch's read and its write: the
        rollup job moves the sample and series heads there when they are due, as a window's settle
        takes minutes at fleet scale (see maintenance.HEADS_EVERY). A move brings rows into this
        head, but only of the current window or late ones; a late one before the cursor waits for
        the next window, like any other.
        """
        cutoff = tier.start(now_ms - tier.grace)
        # The passes to make: over the whole head, or over the listed series only.
        scopes: list[tuple[str, tuple[int, ...]]] = [("", ())]
        if cutoff <= self._settled[tier] and not force:
            if not self._reopened[tier]:
                return 0
            # Between windows, only the series whose chunks a rollup put back: a pass over the
            # whole head (a window and more of every series) for a late point would hold the
            # writer for as long as a regular one.
            scopes = [
                (f" AND series_id IN ({', '.join('?' * len(ids))})", ids)
                for ids in _id_lists(self._reopened[tier])
            ]
        self._reopened[tier] = set()
        cols = ", ".join(tier.columns)
        # A row with a NULL (none is written today) stays in the head: a chunk holds numbers only.
        whole = " AND ".join(f"{c} IS NOT NULL" for c in tier.columns)
        upsert = f"INSERT OR REPLACE INTO {tier.chunks} (series_id, ts, n, data) VALUES {{values}}"
        delete = f"DELETE FROM {tier.head} WHERE series_id = ? AND ts >= ? AND ts < ? AND {whole}"
        # Late rows for a window already settled join its chunk, looked up by exact key; a VALUES list
        # (its columns column1, column2 in both SQLite and PostgreSQL) drives the join through the
        # chunks' key.
        settled = (
            f"SELECT c.series_id, c.ts, c.data FROM (VALUES {{values}}) AS k CROSS JOIN {tier.chunks} AS c "
            "WHERE c.series_id = k.column1 AND c.ts = k.column2"
        )
        select = (
            f"SELECT series_id, ts, {cols} FROM {tier.head} "
            f"WHERE (series_id, ts) >= (?, ?) AND ts < ? AND {whole}{{only}} ORDER BY series_id, ts LIMIT ?"
        )
        moved = 0
        for only, ids in scopes:
            cursor = (0, 0)
            while True:
                # Read, grouped and packed before the write lock is taken, the Python work in a
                # thread: a window of a 2,000-agent fleet is 13 million points, and with all of it
                # inside the write transactions (and on the event loop) the sample writer waited
                # minutes behind them and the fleet's acks fell 20 s behind (docs/benchmarks.md,
                # 2026-12-03 from 12:23). Only this job moves rows into or out of a head, so what
                # was read is still there at the write; a node's deletion or an emptied series
                # in between moves `generation`, and the batch is read again.
                generation = self.generation
                rows = list(
                    await self.db.fetchall(select.format(only=only), (*cursor, cutoff, *ids, SETTLE_ROWS))
                )
                if not rows:
                    break
                groups = await asyncio.to_thread(_grouped, rows, tier)
                last = next(reversed(groups))
                if len(rows) == SETTLE_ROWS and len(groups) > 1:
                    # The limit may have cut the last group: it starts the next batch.
                    rows = rows[: len(rows) - len(groups.pop(last)[0])]
                    after = last
                else:
                    after = (rows[-1][0], rows[-1][1] + 1)
                # The head rows each chunk replaces, before any merge below.
                spans = [(sid, p[0][0], p[0][-1] + 1) for (sid, _), p in groups.items()]
                count = sum(len(p[0]) for p in groups.values())
                async with self.db.reader() as con:
                    chunks = await fetch_values(con, settled, list(groups))
                packed = await asyncio.to_thread(_packed, groups, chunks, tier)
                async with self.db.transaction() as con:
                    if self.generation != generation:
                        continue
                    await execute_values(con, upsert, packed)
                    delete_read = getattr(self.db, "delete_read", None)
                    if delete_read is not None:
                        # PostgreSQL: another core may write into a span meanwhile; only the rows
                        # read go (store/pg.py).
                        await delete_read(con, tier.head, ("series_id", "ts", *tier.columns), rows)
                    else:
                        await execute_all(con, [(delete, span) for span in spans])
                moved += count
                cursor = after
                if between is not None:
                    await between()
        self._settled[tier] = max(self._settled[tier], cutoff)
        return moved

    async def reopen(
        self, con: aiosqlite.Connection, tier: Tier, upto: int, lo: int = 0, hi: int = 1 << 62
    ) -> int:
        """Put back into the tier's head, in the caller's transaction, the chunks holding buckets
        that rollup_dirty marks (of tier.mark) up to `upto` for the nodes lo..hi (a late or replayed point for a settled
        window), so the rollup reads every row of the bucket from the head; returns the chunks
        reopened. The settle after the rollup makes them chunks again."""
        async with con.execute(
            f"SELECT DISTINCT c.id, c.series_id, c.data FROM rollup_dirty AS d "
            "JOIN series AS s ON s.node_id = d.node_id "
            f"JOIN {tier.chunks} AS c ON c.series_id = s.id AND c.ts = d.ts / ? * ? "
            "WHERE d.res = ? AND d.ts <= ? AND d.node_id BETWEEN ? AND ?",
            (tier.window, tier.window, tier.mark, upto, lo, hi),
        ) as cur:
            found = list(await cur.fetchall())
        # The copy that wins a read wins here: a raw chunk's point replaces a replayed one, a
        # recomputed rollup row in the head stays.
        verb = "INSERT OR IGNORE" if tier.head_wins else "INSERT OR REPLACE"
        restore = f"{verb} INTO {tier.head} (series_id, ts, {', '.join(tier.columns)}) VALUES {{values}}"
        take = f"DELETE FROM {tier.chunks} WHERE id = ? AND data = ?"
        for cid, sid, blob in found:
            # Deleted only as read, then put back: what goes back is exactly what was taken. On
            # PostgreSQL another core's settle may have merged late rows into the chunk since the
            # read (a plain delete by id would drop them); then it is read again.
            current: bytes | None = blob
            while current is not None and not (await con.execute(take, (cid, current))).rowcount:
                async with con.execute(f"SELECT data FROM {tier.chunks} WHERE id = ?", (cid,)) as cur:
                    row = await cur.fetchone()
                current = None if row is None else row[0]  # gone: reopened or pruned by that core
            if current is None:
                continue
            ts, rows = _rows(current)
            await execute_values(con, restore, [(sid, t, *r) for t, r in zip(ts, rows, strict=True)])
        # The next settle makes them chunks again.
        self._reopened[tier].update(sid for _, sid, _ in found)
        return len(found)

    async def prune(self, retention: dict[str, float], now: float) -> int:
        """Points past each resolution's retention (the sample tables' retentions), then the
        series left with no point at all; returns the points, rows and series removed.

        Whole chunks past it go; the one the cutoff falls in is cut and written again.
        """
        removed = 0
        span = await self.db.fetchone("SELECT min(id), max(id) FROM series")
        first, last = (int(span[0]), int(span[1])) if span and span[0] is not None else (1, 0)
        for res, table in SERIES_TABLES.items():
            cutoff = round((now - retention[res]) * 1000)
            # Per series through the primary key (series_id, ts), no scan of the whole table; a
            # range of series a transaction (one made meanwhile waits for the next pass).
            for lo in range(first, last + 1, PRUNE_SERIES):
                removed += await self.db.execute(
                    f"DELETE FROM {table} WHERE series_id IN "
                    "(SELECT id FROM series WHERE id BETWEEN ? AND ?) AND ts < ?",
                    (lo, lo + PRUNE_SERIES - 1, cutoff),
                )
            if res in TIERS:
                removed += await self._prune_chunks(TIERS[res], cutoff)
            if res == "raw":  # a backfill older than the retention, before a rollup pass moved it
                removed += await self.db.execute(f"DELETE FROM {INCOMING} WHERE ts < ?", (cutoff,))
        return removed + await self.prune_dictionary()

    async def _prune_chunks(self, tier: Tier, cutoff: int) -> int:
        removed = 0
        whole = ("series_id IN (SELECT id FROM series) AND ts <= ?", (cutoff - tier.window,))
        async with self.db.transaction() as con:
            async with con.execute(
                f"SELECT coalesce(sum(n), 0) FROM {tier.chunks} WHERE {whole[0]}", whole[1]
            ) as cur:
                row = await cur.fetchone()
            removed += int(row[0]) if row else 0
            await con.execute(f"DELETE FROM {tier.chunks} WHERE {whole[0]}", whole[1])
            async with con.execute(
                f"SELECT id, data FROM {tier.chunks} WHERE series_id IN (SELECT id FROM series) AND ts > ? AND ts < ?",
                (cutoff - tier.window, cutoff),
            ) as cur:
                partial = list(await cur.fetchall())
            for cid, blob in partial:
                ts, rows = _rows(blob)
                keep = [i for i, t in enumerate(ts) if t >= cutoff]
                removed += len(ts) - len(keep)
                if not keep:
                    await con.execute(f"DELETE FROM {tier.chunks} WHERE id = ?", (cid,))
                elif len(keep) < len(ts):
                    kept = [ts[i] for i in keep], [rows[i] for i in keep]
                    await con.execute(
                        f"UPDATE {tier.chunks} SET n = ?, data = ? WHERE id = ?",
                        (len(keep), _blob(kept), cid),
                    )
        return removed

    async def prune_dictionary(self) -> int:
        """Series with no point left at any resolution (all expired); returns how many went.

        The writer's id cache forgets them in the same transaction: a later point of the same
        (node, name, labels) makes a new series rather than point at a deleted id.
        """
        # Probing every series took 3.6 s at 1,500 agents, and under the write lock every ack
        # waited for it each prune pass: the probing goes on a reader, and under the lock only its
        # few candidates are checked again (a point may have come for one meanwhile).
        candidates = [(r[0],) for r in await self.db.fetchall(EXPIRED)]
        if not candidates:
            return 0
        async with self.db.transaction() as con:
            gone = {r[0] for r in await fetch_values(con, EXPIRED_AMONG, candidates)}
            if not gone:
                return 0
            await execute_values(
                con, "DELETE FROM series WHERE id IN (VALUES {values})", [(i,) for i in gone]
            )
            self._ids = {k: v for k, v in self._ids.items() if v not in gone}
            self.generation += 1
        return len(gone)

    async def delete_node(self, con: aiosqlite.Connection, node_id: int) -> None:
        """The node's series and points, in the caller's transaction."""
        for table in (INCOMING, *KEYED_BY_SERIES):
            await con.execute(
                f"DELETE FROM {table} WHERE series_id IN (SELECT id FROM series WHERE node_id = ?)",
                (node_id,),
            )
        await con.execute("DELETE FROM series WHERE node_id = ?", (node_id,))

    async def stats(self) -> dict[str, Any]:
        """Series, raw points (head and chunks) and the bytes their pages take (dbstat), for
        docs/benchmarks.md."""
        series = await self.db.fetchone("SELECT count(*) FROM series")
        head = await self.db.fetchone(
            f"SELECT (SELECT count(*) FROM series_raw) + (SELECT count(*) FROM {INCOMING})"
        )
        chunks = await self.db.fetchone("SELECT count(*), coalesce(sum(n), 0) FROM series_chunks")
        try:
            size = await self.db.fetchone(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat "
                f"WHERE name IN ('series_raw', '{INCOMING}', 'series_chunks', 'series_chunks_key')"
            )
            nbytes: int | None = int(size[0])
        except Exception:  # dbstat is a compile-time option of SQLite
            nbytes = None
        return {
            "series": int(series[0]),
            "points": int(head[0]) + int(chunks[1]),
            "head_points": int(head[0]),
            "chunks": int(chunks[0]),
            "bytes": nbytes,
        }
