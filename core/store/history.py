"""History reads: a node's latest sample, its stored seqs, and columnar series at any resolution."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from servermanager.common.metrics import FIELD_DECIMALS, Sample
from servermanager.core.store.aggregates import merged, rounded
from servermanager.core.store.daycache import DAY_MS, DayCache
from servermanager.core.store.db import Database
from servermanager.core.store.rows import SAMPLE_COLUMNS, sample_from_row
from servermanager.core.store.schema import ROLLUP_TABLES

_column = msgspec.json.Decoder(list[float | None])


def _shown(field: str, expr: str) -> str:
    """expr as history writes it: a field kept in whole units as an integer, because SQLite's JSON
    writes a whole REAL as `4000000000.0` (rounded first: raw rows are as the agent sent them, and
    CAST truncates; round(x, 0), as PostgreSQL's one-argument round of a double rounds half to even)."""
    return f"CAST(round({expr}, 0) AS INTEGER)" if FIELD_DECIMALS[field] == 0 else expr


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


class History:
    """Reads of stored samples: the raw tiers (head and settled) and the rollups, past 1m days from `days`."""

    def __init__(self, db: Database, days: DayCache) -> None:
        self.db = db
        self.days = days

    async def latest(self, node_id: int) -> Sample | None:
        """The node's newest sample, from whichever tier holds it."""
        cols = SAMPLE_COLUMNS
        row = await self.db.fetchone(
            f"SELECT * FROM (SELECT {cols} FROM samples_head WHERE node_id = ? ORDER BY ts DESC LIMIT 1) AS h "
            f"UNION ALL SELECT * FROM (SELECT {cols} FROM samples_raw WHERE node_id = ? ORDER BY ts DESC LIMIT 1) AS r "
            "ORDER BY ts DESC LIMIT 1",
            (node_id, node_id),
        )
        if row is None:
            return None
        # The detail is the node's newest one the writer kept (it may lag the row by up to
        # Writer.latest_every after a crash; a clean stop writes the last one).
        detail = await self.db.fetchone("SELECT detail FROM node_latest WHERE node_id = ?", (node_id,))
        return sample_from_row(row[0], row[1], row[2:], None if detail is None else detail[0])

    async def seqs(self, node_id: int) -> list[int]:
        """Every stored seq of the node, once each (a resent sample may sit in both tiers until settled)."""
        rows = await self.db.fetchall(
            "SELECT seq FROM samples_raw WHERE node_id = ? UNION SELECT seq FROM samples_head WHERE node_id = ? "
            "ORDER BY seq",
            (node_id, node_id),
        )
        return [r[0] for r in rows]

    async def series(
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
                    f"SELECT {_aliased(exprs)} FROM ({src}) AS u ORDER BY ts", params, len(exprs), encoded
                )
                return {"ts": data[0], "avg": dict(zip(fields, data[1:], strict=True)), "step": None}
            exprs = [
                "min(ts) / 1000.0",
                *(_shown(f, rounded(f, f"{agg}({f})")) for f in fields for agg in ("avg", "min", "max")),
            ]
            inner = f"SELECT {_aliased(exprs)} FROM ({src}) AS u GROUP BY ts / ? ORDER BY c0"
            data = await self._columns(inner, (*params, width), len(exprs), encoded)
        else:
            if merge:
                exprs = ["min(ts) / 1000", *(_shown(f, expr) for f in fields for expr in merged(f))]
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
        row = await self.db.fetchone(f"SELECT {aggs} FROM ({inner}) AS q", params)
        return list(row)

    async def _columns(self, inner: str, params: Sequence[Any], n: int, encoded: bool = False) -> list[Any]:
        """The n columns c0..c(n-1) of `inner`'s rows, in its order, as lists (or msgspec.Raw JSON)."""
        row = await self._column_texts(inner, params, n)
        if encoded:
            return [msgspec.Raw(x.encode()) for x in row]
        return [_column.decode(x) for x in row]
