"""Metric storage: batched raw writes acknowledged after commit, rollups, retention, history queries."""

from __future__ import annotations

import asyncio
import bisect
import logging
import operator
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite
import msgspec

from servermanager.common.metrics import FIELD_DECIMALS, SCALAR_FIELDS, Metrics, Sample
from servermanager.core.db import ROLLUP_TABLES, Database, execute_values

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
# How long after a minute ends its bucket waits for the last samples before being rolled up.
ROLLUP_GRACE_MS = 2_000
_NO_LIMIT = 1 << 62

# Fields of Metrics that are not scalar columns travel in the detail blob.
_DETAIL_FIELDS = tuple(f for f in Metrics.__struct_fields__ if f not in SCALAR_FIELDS)
_COLUMN_FIELDS = tuple(f for f in SCALAR_FIELDS if f in Metrics.__struct_fields__)
_msgpack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder(dict[str, Any])

_COLS = f"node_id, ts, seq, {', '.join(SCALAR_FIELDS)}, detail"
# New rows go to samples_head, clustered by time, so a commit appends to a few pages; samples_raw
# is clustered by node for history reads, and a commit there would rewrite one page per node.
# settle() moves the head over in node order, touching each node's page once per run.
_HEAD_INSERT = f"INSERT OR IGNORE INTO samples_head ({_COLS}) VALUES {{values}}"
_SETTLE = f"INSERT OR IGNORE INTO samples_raw ({_COLS}) SELECT {_COLS} FROM samples_head ORDER BY node_id, ts"
_DIRTY_INSERT = "INSERT OR IGNORE INTO rollup_dirty (res, node_id, ts) VALUES {values}"
# UPDATE .. FROM (SQLite 3.33+): every node's high-water seq in one statement.
_LAST_SEQ_UPDATE = "UPDATE nodes SET last_seq = max(last_seq, v.column2) FROM (VALUES {values}) AS v WHERE nodes.id = v.column1"


# attrgetter fetches many attributes in one C call: this runs for every sample the core receives.
_scalars = operator.attrgetter(*SCALAR_FIELDS)
_details = operator.attrgetter(*_DETAIL_FIELDS)


def _to_row(node_id: int, s: Sample) -> tuple[Any, ...]:
    m = s.metrics
    detail = _msgpack.encode(dict(zip(_DETAIL_FIELDS, _details(m), strict=True)))
    return (node_id, round(s.ts * 1000), s.seq, *_scalars(m), detail)


def sample_from_row(seq: int, ts_ms: int, values: Sequence[Any], detail: bytes) -> Sample:
    data = dict(zip(SCALAR_FIELDS, values, strict=True))
    metrics = {f: data[f] for f in _COLUMN_FIELDS}
    metrics.update(_unpack.decode(detail))
    # REAL columns hand back floats for int fields; strict=False converts integral floats back.
    return Sample(seq=seq, ts=ts_ms / 1000, metrics=msgspec.convert(metrics, Metrics, strict=False))


_column = msgspec.json.Decoder(list[float | None])


def _rounded(field: str, expr: str) -> str:
    """expr rounded to the field's FIELD_DECIMALS: what rollups store and merged points show."""
    return f"round({expr}, {FIELD_DECIMALS[field]})"


def _shown(field: str, expr: str) -> str:
    """expr as history writes it: a field kept in whole units as an integer, because SQLite's JSON
    writes a whole REAL as `4000000000.0` (rounded first: raw rows are as the agent sent them, and
    CAST truncates)."""
    return f"CAST(round({expr}) AS INTEGER)" if FIELD_DECIMALS[field] == 0 else expr


def _merged(field: str, table: str = "") -> tuple[str, str, str]:
    """avg, min and max of rollup rows merged into one: each row's mean weighted by its sample
    count, so the merged mean is exact (the 1h rollup and history's `points` both use it), then
    rounded to the field's decimals."""
    t = table
    return (
        _rounded(
            field,
            f"sum({t}{field}_avg * {t}cnt) / nullif(sum(CASE WHEN {t}{field}_avg IS NULL THEN 0 ELSE {t}cnt END), 0)",
        ),
        _rounded(field, f"min({t}{field}_min)"),
        _rounded(field, f"max({t}{field}_max)"),
    )


def _aliased(exprs: Sequence[str]) -> str:
    """`e0 AS c0, e1 AS c1, ...`: positional names for _columns."""
    return ", ".join(f"{e} AS c{i}" for i, e in enumerate(exprs))


# Bucket widths for `points`, in ms: each divides a day or is whole days, so a bucket never
# straddles midnight (a day's merged points can be cached) and the steps are the ones a chart's
# time axis shows.
_WIDTHS = sorted(
    {s * 1000 for s in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)}
    | {m * 60_000 for m in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720)}
    | {d * DAY_MS for d in (1, 2, 3, 4, 5, 6, 7, 10, 14, 15, 30, 60, 90, 180, 365)}
)


def _bucket_width(span: int, points: int, unit: int) -> int:
    """The narrowest bucket width (ms) of _WIDTHS, a multiple of `unit`, giving at most `points`.

    Buckets are aligned to the epoch rather than to the range's start, so a chart refreshing
    its moving window sees stable points; aligned buckets can straddle both ends, hence
    points - 1 spans for at most `points` buckets.
    """
    want = -(-span // max(1, points - 1))
    for width in _WIDTHS:
        if width >= want and width % unit == 0:
            return width
    return -(-want // DAY_MS) * DAY_MS


async def _settle(con: aiosqlite.Connection) -> int:
    cur = await con.execute(_SETTLE)
    moved = cur.rowcount
    await con.execute("DELETE FROM samples_head")
    return int(moved)


def _rollup_select(table: str, exprs: Sequence[str], width: int | None = None) -> str:
    """exprs of one node's rollup rows with ts in [?, ?], in time order; with `width` (ms), of
    the rows merged into epoch-aligned buckets that wide.

    Rollup buckets start on whole minutes, so `ts / 1000` is integer seconds, which SQLite writes
    out at a third of the cost of a REAL. Unmerged, ORDER BY ts, not c0: the primary key's order,
    where an expression would make SQLite sort.
    """
    rows = f"SELECT {_aliased(exprs)} FROM {table} WHERE node_id = ? AND ts >= ? AND ts <= ?"
    if width is None:
        return f"{rows} ORDER BY ts"
    return f"{rows} GROUP BY ts / {int(width)} ORDER BY c0"


_seconds = msgspec.json.Decoder(list[int])


def _cut(texts: Sequence[bytes], a: int, b: int) -> list[bytes]:
    """The elements with ts in [a, b] (ms) of one day's column bodies; texts[0] is ts in seconds."""
    if not texts[0]:
        return list(texts)
    ts = _seconds.decode(b"[" + texts[0] + b"]")
    i, j = bisect.bisect_left(ts, a / 1000), bisect.bisect_right(ts, b / 1000)
    return [b",".join(text.split(b",")[i:j]) for text in texts]


def _array(bodies: Sequence[bytes]) -> msgspec.Raw:
    """One JSON array of comma-joined bodies, copied once: the answer can be 14 MB."""
    parts = [b"["]
    for body in bodies:
        parts += (body, b",")
    parts[-1] = b"]" if bodies else b"[]"
    return msgspec.Raw(b"".join(parts))


# Called once per submitted batch from the commit loop: None once durable, else the failure.
Done = Callable[[BaseException | None], None]


TELL_SLICE = 256


def _tell_one(p: _Pending, exc: BaseException | None) -> None:
    try:
        p.done(exc)
    except Exception:
        # One broken listener must not keep the rest of the batch from hearing.
        log.exception("sample commit listener failed")


@dataclass(slots=True)
class _Pending:
    node_id: int
    rows: list[tuple[Any, ...]]
    last_seq: int
    done: Done


# Bookkeeping per cached fragment (key tuple, dict slot, bytes header), counted against the bound.
_ENTRY_OVERHEAD = 200


class DayCache:
    """JSON array bodies of whole past days of 1-minute rollups, per node, day and column.

    SQLite writes a REAL out as text at about 0.6 µs: one field's 30 days (172,800 numbers) cost
    around 100 ms each time they are asked for, and a chart asks again every time its window moves.
    Past days rarely change, so their text is kept, under a byte bound, least recently used first
    out. Whatever rewrites a past day's rows (a late backfill's rollup, pruning, deleting a node)
    drops that day, and bumps `generation` so that a fill read before the change is not stored.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.generation = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[int, int, str], bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, node_id: int, day: int, column: str) -> bytes | None:
        text = self._items.get((node_id, day, column))
        if text is None:
            self.misses += 1
            return None
        self._items.move_to_end((node_id, day, column))
        self.hits += 1
        return text

    def put(self, node_id: int, day: int, column: str, text: bytes, generation: int) -> None:
        """Keep `text`, unless a day changed since `generation` was read (the text may predate it)."""
        cost = len(text) + _ENTRY_OVERHEAD
        if generation != self.generation or cost > self.max_bytes:
            return
        old = self._items.pop((node_id, day, column), None)
        if old is not None:
            self.size -= len(old) + _ENTRY_OVERHEAD
        self._items[(node_id, day, column)] = text
        self.size += cost
        while self.size > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.size -= len(dropped) + _ENTRY_OVERHEAD

    def forget_days(self, days: Collection[tuple[int, int]]) -> None:
        """These (node_id, day) pairs changed."""
        self._drop(lambda node_id, day: (node_id, day) in days)

    def forget_until(self, last_day: int) -> None:
        """Every node's days up to last_day (pruning) changed."""
        self._drop(lambda node_id, day: day <= last_day)

    def forget_node(self, node_id: int) -> None:
        self._drop(lambda nid, day: nid == node_id)

    def _drop(self, changed: Callable[[int, int], bool]) -> None:
        # Fills in flight read before the change: the new generation keeps them out.
        self.generation += 1
        for key in [k for k in self._items if changed(k[0], k[1])]:
            self.size -= len(self._items.pop(key)) + _ENTRY_OVERHEAD


class SampleStore:
    """Group-commits samples from every agent; a caller's future resolves once its rows are durable."""

    def __init__(
        self,
        db: Database,
        flush_every: float = 0.05,
        max_rows_per_commit: int = 20_000,
        day_cache_bytes: int = 64 << 20,
    ) -> None:
        self.db = db
        self.days = DayCache(day_cache_bytes)
        self.flush_every = flush_every
        self.max_rows = max_rows_per_commit
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self.commits = 0
        self.rows_written = 0

    def submit(self, node_id: int, samples: list[Sample], done: Done) -> None:
        """Queue samples for the next group commit; `done` hears the outcome.

        A callback rather than a future per batch: at thousands of batches a second the
        gateway's ack needs no task of its own (see agents.AgentSession).
        """
        # Rows are built here, spread over arrivals, rather than all at once in the commit loop,
        # which would stall the event loop for the whole batch.
        rows = [_to_row(node_id, s) for s in samples]
        self._queue.append(_Pending(node_id, rows, max((s.seq for s in samples), default=0), done))
        self._wake.set()

    async def store(self, node_id: int, samples: list[Sample]) -> None:
        """Returns once the samples are committed; raises if the commit failed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done(exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

        self.submit(node_id, samples, done)
        await fut

    async def run(self) -> None:
        """The group-commit loop; runs for the life of the core."""
        while True:
            await self._wake.wait()
            # Let other agents' batches join this commit: one transaction per tick, not per sample.
            await asyncio.sleep(self.flush_every)
            self._wake.clear()
            # Commit only what was queued by now; what arrives meanwhile waits for the next tick,
            # so a busy core makes fewer, larger commits instead of many small ones.
            pending = len(self._queue)
            while pending > 0:
                batch, rows = [], 0
                while pending > 0 and rows < self.max_rows:
                    p = self._queue.popleft()
                    pending -= 1
                    batch.append(p)
                    rows += len(p.rows)
                await self._commit(batch)

    async def drain(self) -> None:
        """Commit whatever is queued now (used at shutdown)."""
        while self._queue:
            batch, self._queue = list(self._queue), deque()
            await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        rows: list[tuple[Any, ...]] = []
        dirty: set[tuple[str, int, int]] = set()
        last_seq: dict[int, int] = {}
        step = ROLLUP_TABLES["1m"][1]
        for p in batch:
            for row in p.rows:
                rows.append(row)
                dirty.add(("1m", p.node_id, row[1] // step * step))
            if p.rows:
                last_seq[p.node_id] = max(last_seq.get(p.node_id, 0), p.last_seq)
        try:
            async with self.db.transaction() as con:
                await execute_values(con, _HEAD_INSERT, rows)
                await execute_values(con, _DIRTY_INSERT, list(dirty))
                await execute_values(con, _LAST_SEQ_UPDATE, list(last_seq.items()))
        except Exception as exc:
            log.exception("sample commit failed (%d rows); agents will resend", len(rows))
            await self._tell(batch, exc)
            return
        self.commits += 1
        self.rows_written += len(rows)
        await self._tell(batch, None)

    @staticmethod
    async def _tell(batch: list[_Pending], exc: BaseException | None) -> None:
        """Hand each batch its outcome, yielding to the loop every TELL_SLICE listeners.

        After a wait for the write lock one commit can carry 10,000 batches; waking all their
        ack senders at once made one loop turn of 10,000 sends, during which no socket was read
        and every live push waited (the 5,000-agent p99).
        """
        for i, p in enumerate(batch):
            if i and i % TELL_SLICE == 0:
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    for rest in batch[i:]:
                        _tell_one(rest, exc)
                    raise
            _tell_one(p, exc)

    # ------------------------------------------------------------ reads

    async def latest(self, node_id: int) -> Sample | None:
        cols = f"seq, ts, {', '.join(SCALAR_FIELDS)}, detail"
        row = await self.db.fetchone(
            f"SELECT * FROM (SELECT {cols} FROM samples_head WHERE node_id = ? ORDER BY ts DESC LIMIT 1) "
            f"UNION ALL SELECT * FROM (SELECT {cols} FROM samples_raw WHERE node_id = ? ORDER BY ts DESC LIMIT 1) "
            "ORDER BY ts DESC LIMIT 1",
            (node_id, node_id),
        )
        if row is None:
            return None
        return sample_from_row(row[0], row[1], row[2:-1], row[-1])

    async def seqs(self, node_id: int) -> list[int]:
        """Every stored seq of the node, once each (a resent sample may sit in both tiers until settled)."""
        rows = await self.db.fetchall(
            "SELECT seq FROM samples_raw WHERE node_id = ? UNION SELECT seq FROM samples_head WHERE node_id = ? "
            "ORDER BY seq",
            (node_id, node_id),
        )
        return [r[0] for r in rows]

    async def history(
        self,
        node_id: int,
        start: float,
        end: float,
        resolution: str,
        fields: Sequence[str],
        points: int | None = None,
        encoded: bool = False,
    ) -> dict[str, Any]:
        """Columnar series: ts plus avg (the value, for unmerged raw), min and max, and step.

        With `encoded`, each column is the JSON array SQLite built, as msgspec.Raw, for an answer
        that goes straight out as JSON: decoding 2 million numbers to encode them again costs as
        much as building them.

        With `points`, rows are merged into at most that many equal-width buckets: avg weighted
        by sample count, min of minimums, max of maximums, ts the first row's; step is the bucket
        width in seconds (None when nothing was merged). A chart is a few
        thousand pixels wide; 30 days of 1-minute rows for every field is 2 million numbers.
        """
        lo, hi = round(start * 1000), round(end * 1000)
        native = ROLLUP_TABLES[resolution][1] if resolution != "raw" else 0
        width = 0
        if points:
            width = _bucket_width(hi - lo + 1, points, native or 1000)
        merge = width > native
        if resolution == "raw":
            cols = ", ".join(("ts", *fields))
            where = "WHERE node_id = ? AND ts >= ? AND ts <= ?"
            # UNION, not UNION ALL: a resent sample can be in both tiers until the next settle.
            src = f"SELECT {cols} FROM samples_raw {where} UNION SELECT {cols} FROM samples_head {where}"
            params = (node_id, lo, hi) * 2
            if not merge:
                exprs = ["ts / 1000.0", *(_shown(f, f) for f in fields)]
                data = await self._columns(
                    f"SELECT {_aliased(exprs)} FROM ({src}) ORDER BY ts", params, len(exprs), encoded
                )
                return {"ts": data[0], "avg": dict(zip(fields, data[1:], strict=True)), "step": None}
            exprs = [
                "min(ts) / 1000.0",
                *(_shown(f, _rounded(f, f"{agg}({f})")) for f in fields for agg in ("avg", "min", "max")),
            ]
            inner = f"SELECT {_aliased(exprs)} FROM ({src}) GROUP BY ts / ? ORDER BY c0"
            data = await self._columns(inner, (*params, width), len(exprs), encoded)
        else:
            if merge:
                exprs = ["min(ts) / 1000", *(_shown(f, expr) for f in fields for expr in _merged(f))]
            else:
                exprs = [
                    "ts / 1000",
                    *(_shown(f, f"{f}_{agg}") for f in fields for agg in ("avg", "min", "max")),
                ]
            group = width if merge else None
            # Read and cached by day, so buckets must tile a day; wider ones (whole days) are read
            # in one statement.
            tiles_days = group is None or DAY_MS % group == 0
            if encoded and resolution == "1m" and tiles_days:
                data = await self._cached_columns(node_id, lo, hi, exprs, group)
            else:
                select = _rollup_select(ROLLUP_TABLES[resolution][0], exprs, group)
                data = await self._columns(select, (node_id, lo, hi), len(exprs), encoded)
        out: dict[str, Any] = {
            "ts": data[0],
            "avg": {},
            "min": {},
            "max": {},
            "step": width / 1000 if merge else None,
        }
        for i, f in enumerate(fields):
            out["avg"][f] = data[1 + 3 * i]
            out["min"][f] = data[2 + 3 * i]
            out["max"][f] = data[3 + 3 * i]
        return out

    async def _cached_columns(
        self, node_id: int, lo: int, hi: int, exprs: list[str], width: int | None = None
    ) -> list[msgspec.Raw]:
        """_columns(encoded=True) of samples_1m, read by day: past days from the DayCache.

        A past day not in the cache is read whole with one statement, and kept; a past day the
        range only partly covers is cut out of the whole one. The current day is read every time.
        The reads run at once, one per reader connection. With `width` (which divides a day),
        rows are merged into buckets of that many ms, as for `points`; a bucket at a partial
        day's edge must merge only rows in range, so merged partial days are read every time, as
        is every partial day with the cache off.
        """
        today = int(time.time() * 1000) // DAY_MS
        # Days before the node's first row hold nothing: a range from 1970 must not read 20,000.
        first = await self.db.fetchone("SELECT min(ts) FROM samples_1m WHERE node_id = ?", (node_id,))
        lo = max(lo, hi if first[0] is None else first[0])
        select = _rollup_select("samples_1m", exprs, width)
        keys = exprs if width is None else [f"{e} per {width}" for e in exprs]

        async def read(a: int, b: int) -> list[bytes]:
            row = await self._column_texts(select, (node_id, a, b), len(exprs))
            return [text[1:-1].encode() for text in row]  # the bodies, without [ ]

        async def fill(day: int) -> list[bytes]:
            generation = self.days.generation
            texts = await read(day * DAY_MS, (day + 1) * DAY_MS - 1)
            for k, text in zip(keys, texts, strict=True):
                self.days.put(node_id, day, k, text, generation)
            return texts

        # Each day's bodies, or the read that gets them: the reads run at once, so a cold month
        # takes the time of one read in sequence divided by the readers (and cores).
        parts: list[list[bytes] | asyncio.Future[list[bytes]]] = []
        cuts: dict[int, tuple[int, int]] = {}
        for day in range(lo // DAY_MS, min(hi // DAY_MS + 1, today)):
            a, b = max(lo, day * DAY_MS), min(hi, (day + 1) * DAY_MS - 1)
            if b - a < DAY_MS - 1:
                if width is not None or not self.days.max_bytes:
                    parts.append(asyncio.ensure_future(read(a, b)))
                    continue
                cuts[len(parts)] = (a, b)
            cached = [self.days.get(node_id, day, k) for k in keys] if self.days.max_bytes else []
            texts = [t for t in cached if t is not None]
            parts.append(texts if len(texts) == len(keys) else asyncio.ensure_future(fill(day)))
        if hi >= today * DAY_MS:
            parts.append(asyncio.ensure_future(read(max(lo, today * DAY_MS), hi)))
        pending = [p for p in parts if isinstance(p, asyncio.Future)]
        try:
            await asyncio.gather(*pending)
        finally:
            for task in pending:
                task.cancel()
        pieces: list[list[bytes]] = [[] for _ in exprs]
        for i, part in enumerate(parts):
            texts = part.result() if isinstance(part, asyncio.Future) else part
            if i in cuts:
                texts = _cut(texts, *cuts[i])
            for column, text in zip(pieces, texts, strict=True):
                if text:
                    column.append(text)
        return [_array(column) for column in pieces]

    async def _column_texts(self, inner: str, params: Sequence[Any], n: int) -> list[str]:
        """The n columns c0..c(n-1) of `inner`'s rows, in its order, each as SQLite's JSON array text.

        SQLite builds each column as one JSON array and the answer is one row: a single statement
        step. Fetching row by row costs a GIL hand-off per row (sqlite3 releases the GIL around each
        step), which beside a busy event loop made a long history take seconds.
        """
        aggs = ", ".join(f"json_group_array(c{i})" for i in range(n))
        row = await self.db.fetchone(f"SELECT {aggs} FROM ({inner})", params)
        return list(row)

    async def _columns(self, inner: str, params: Sequence[Any], n: int, encoded: bool = False) -> list[Any]:
        """The n columns c0..c(n-1) of `inner`'s rows, in its order, as lists (or msgspec.Raw JSON)."""
        row = await self._column_texts(inner, params, n)
        if encoded:
            return [msgspec.Raw(x.encode()) for x in row]
        return [_column.decode(x) for x in row]

    # ------------------------------------------------------------ background jobs

    async def settle(self) -> int:
        """Move the head into samples_raw, in node order; returns the rows moved (duplicates dropped)."""
        async with self.db.transaction() as con:
            return await _settle(con)

    async def rollup(self, hours: bool = True, now: float | None = None) -> int:
        """Recompute every bucket touched since the last run (late backfill included); returns buckets done.

        A minute bucket waits until its minute is over (plus ROLLUP_GRACE_MS) as of `now`
        (default: the clock), so 1m history ends at the last whole minute; raw covers the rest.

        `hours=False` does the 1m level only and leaves the 1h buckets marked for a later run:
        an hour bucket aggregates 60 minute rows, and recomputing every node's current hour on
        every pass was the largest single cost of the job at fleet scale.

        Settles the head first, in the same transaction as the 1m step, so the 1m buckets read
        complete rows from samples_raw alone: a commit that took the writer between the two would
        have marked buckets whose rows were still in the head, and lost them. Each step is one
        statement joining rollup_dirty to its source: SQLite does the whole job without handing
        rows to Python, which beside a busy event loop costs a GIL hand-off each.
        """
        done = 0
        rewritten: set[tuple[int, int]] = set()
        levels = [("1m", "raw", "1h"), ("1h", "1m", None)] if hours else [("1m", "raw", "1h")]
        now_ms = int((time.time() if now is None else now) * 1000)
        for res, src, parent in levels:
            table, step = ROLLUP_TABLES[res]
            # Minutes are rolled up once they are over (and ROLLUP_GRACE has passed for the last
            # samples to land): the current minute, recomputed on every pass, was 3 times the
            # work. The current hour is kept fresh, from the minutes done.
            upto = now_ms - ROLLUP_GRACE_MS - step if res == "1m" else _NO_LIMIT
            if src == "raw":
                aggs = ", ".join(
                    _rounded(f, f"{agg}(s.{f})") for f in SCALAR_FIELDS for agg in ("avg", "min", "max")
                )
                count, src_table = "count(*)", "samples_raw"
            else:
                aggs = ", ".join(expr for f in SCALAR_FIELDS for expr in _merged(f, "s."))
                count, src_table = "sum(s.cnt)", ROLLUP_TABLES[src][0]
            async with self.db.transaction() as con:
                if src == "raw":
                    await _settle(con)
                async with con.execute(
                    "SELECT count(*) FROM rollup_dirty WHERE res = ? AND ts <= ?", (res, upto)
                ) as cur:
                    row = await cur.fetchone()
                n = int(row[0]) if row else 0
                if not n:
                    continue
                if res == "1m" and self.days.max_bytes > 0:
                    # Past days this pass rewrites (a late backfill): cached text of them goes.
                    today = now_ms // DAY_MS * DAY_MS
                    async with con.execute(
                        "SELECT DISTINCT node_id, ts / ? FROM rollup_dirty WHERE res = '1m' AND ts < ? AND ts <= ?",
                        (DAY_MS, today, upto),
                    ) as cur:
                        rewritten = {(r[0], r[1]) for r in await cur.fetchall()}
                await con.execute(
                    f"INSERT OR REPLACE INTO {table} SELECT d.node_id, d.ts, {count}, {aggs} "
                    f"FROM rollup_dirty AS d JOIN {src_table} AS s "
                    "ON s.node_id = d.node_id AND s.ts >= d.ts AND s.ts < d.ts + ? "
                    "WHERE d.res = ? AND d.ts <= ? GROUP BY d.node_id, d.ts",
                    (step, res, upto),
                )
                if parent is not None:
                    pstep = ROLLUP_TABLES[parent][1]
                    await con.execute(
                        "INSERT OR IGNORE INTO rollup_dirty (res, node_id, ts) "
                        "SELECT ?, node_id, ts / ? * ? FROM rollup_dirty WHERE res = ? AND ts <= ?",
                        (parent, pstep, pstep, res, upto),
                    )
                await con.execute("DELETE FROM rollup_dirty WHERE res = ? AND ts <= ?", (res, upto))
                done += n
            if rewritten:
                # After the commit: dropped before it, a fill could read the old rows after the drop.
                self.days.forget_days(rewritten)
                rewritten = set()
        return done

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
            while True:
                n = await self.db.execute(
                    f"DELETE FROM {table} WHERE (node_id, ts) IN "
                    f"(SELECT node_id, ts FROM {table} WHERE ts < ? LIMIT ?)",
                    (cutoff, chunk),
                )
                removed += n
                if table == "samples_1m" and n:
                    self.days.forget_until(cutoff // DAY_MS)
                if n < chunk:
                    break
        return removed

    async def delete_node(self, node_id: int) -> None:
        async with self.db.transaction() as con:
            for table in ("samples_head", "samples_raw", "samples_1m", "samples_1h"):
                await con.execute(f"DELETE FROM {table} WHERE node_id = ?", (node_id,))
            await con.execute("DELETE FROM rollup_dirty WHERE node_id = ?", (node_id,))
        self.days.forget_node(node_id)
