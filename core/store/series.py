"""Named series (custom metrics, service checks): a dictionary of (node, name, labels) and narrow point tables.

series_raw holds (series_id, ts, value) rows written in the transaction of their sample (writer.py),
so an acknowledged sample has its series stored too; the rollup job fills series_1m and series_1h
from the same rollup_dirty marks as the sample tables (maintenance.py), and the same retentions
prune them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite

from servermanager.common.metrics import Sample
from servermanager.common.series import DEVICE_PREFIX, labels_key
from servermanager.core.store.db import Database
from servermanager.core.store.values import execute_values

SERIES_TABLES = {"raw": "series_raw", "1m": "series_1m", "1h": "series_1h"}
_KEY_INSERT = "INSERT OR IGNORE INTO series (node_id, name, labels, unit) VALUES {values}"
_POINT_INSERT = "INSERT OR IGNORE INTO series_raw (series_id, ts, value) VALUES {values}"

Key = tuple[int, str, str]  # node_id, name, labels_key
# A batch's points before their series ids are known: key, unit, ts (ms), value.
PendingPoint = tuple[Key, str | None, int, float]


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
            out.append(((node_id, p.name, labels_key(p.labels)), p.unit, ts, p.value))
    return out


def rollup_sql(res: str, src: str) -> str:
    """The statement that recomputes the series buckets of rollup_dirty's (res, node, ts) marks.

    Parameters: (bucket width ms, res, upto), as the sample tables' statement takes them.
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
        "WHERE d.res = ? AND d.ts <= ? GROUP BY r.series_id, d.ts"
    )


class SeriesStore:
    """Writes (inside the writer's transaction), reads and upkeep of the named series."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # (node, name, labels) -> series id. Filled only after a commit, so a rolled-back insert
        # leaves no id behind; dropped for a node when the node is deleted.
        self._ids: dict[Key, int] = {}

    async def write(self, con: aiosqlite.Connection, points: Sequence[PendingPoint]) -> dict[Key, int]:
        """Insert `points` in the caller's transaction; returns the ids it had to look up, for
        remember() once the transaction commits."""
        if not points:
            return {}
        found: dict[Key, int] = {}
        missing = {key: unit for key, unit, _, _ in points if key not in self._ids}
        if missing:
            await execute_values(con, _KEY_INSERT, [(*key, unit) for key, unit in missing.items()])
            for key in missing:
                async with con.execute(
                    "SELECT id FROM series WHERE node_id = ? AND name = ? AND labels = ?", key
                ) as cur:
                    row = await cur.fetchone()
                assert row is not None
                found[key] = int(row[0])
        ids = self._ids
        rows = [((ids.get(key) or found[key]), ts, value) for key, _, ts, value in points]
        await execute_values(con, _POINT_INSERT, rows)
        return found

    def remember(self, found: dict[Key, int]) -> None:
        self._ids.update(found)

    def forget_node(self, node_id: int) -> None:
        for key in [k for k in self._ids if k[0] == node_id]:
            del self._ids[key]

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
            "(SELECT value FROM series_raw WHERE series_id = s.id ORDER BY ts DESC LIMIT 1) "
            "FROM series AS s WHERE s.node_id = ? AND (substr(s.name, 1, ?) = ?) = ? ORDER BY s.name, s.labels",
            (node_id, len(DEVICE_PREFIX), DEVICE_PREFIX, devices),
        )
        return [
            (r[0], r[1], json.loads(r[2]), r[3], None if r[4] is None else r[4] / 1000, r[5]) for r in rows
        ]

    async def find(self, node_id: int, name: str, labels: dict[str, str]) -> tuple[int, str | None] | None:
        row = await self.db.fetchone(
            "SELECT id, unit FROM series WHERE node_id = ? AND name = ? AND labels = ?",
            (node_id, name, labels_key(labels)),
        )
        return None if row is None else (int(row[0]), row[1])

    async def history(self, series_id: int, start: float, end: float, resolution: str) -> dict[str, Any]:
        """ts, avg (and min, max for rollups) of one series over [start, end], in time order."""
        table = SERIES_TABLES[resolution]
        lo, hi = round(start * 1000), round(end * 1000)
        if resolution == "raw":
            rows = await self.db.fetchall(
                f"SELECT ts, value FROM {table} WHERE series_id = ? AND ts >= ? AND ts <= ? ORDER BY ts",
                (series_id, lo, hi),
            )
            return {"ts": [r[0] / 1000 for r in rows], "avg": [r[1] for r in rows]}
        rows = await self.db.fetchall(
            f"SELECT ts, avg, min, max FROM {table} WHERE series_id = ? AND ts >= ? AND ts <= ? ORDER BY ts",
            (series_id, lo, hi),
        )
        return {
            "ts": [r[0] / 1000 for r in rows],
            "avg": [r[1] for r in rows],
            "min": [r[2] for r in rows],
            "max": [r[3] for r in rows],
        }

    # ------------------------------------------------------------ upkeep

    async def prune(self, retention: dict[str, float], now: float) -> int:
        """Points past each resolution's retention (the sample tables' retentions)."""
        removed = 0
        for res, table in SERIES_TABLES.items():
            cutoff = round((now - retention[res]) * 1000)
            # Per series through the primary key (series_id, ts): no scan of the whole table.
            removed += await self.db.execute(
                f"DELETE FROM {table} WHERE series_id IN (SELECT id FROM series) AND ts < ?", (cutoff,)
            )
        return removed

    async def delete_node(self, con: aiosqlite.Connection, node_id: int) -> None:
        """The node's series and points, in the caller's transaction."""
        for table in SERIES_TABLES.values():
            await con.execute(
                f"DELETE FROM {table} WHERE series_id IN (SELECT id FROM series WHERE node_id = ?)",
                (node_id,),
            )
        await con.execute("DELETE FROM series WHERE node_id = ?", (node_id,))

    async def stats(self) -> dict[str, Any]:
        """Series, raw points and the bytes their pages take (dbstat), for docs/benchmarks.md."""
        series = await self.db.fetchone("SELECT count(*) FROM series")
        points = await self.db.fetchone("SELECT count(*) FROM series_raw")
        try:
            size = await self.db.fetchone(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = 'series_raw'"
            )
            nbytes: int | None = int(size[0])
        except Exception:  # dbstat is a compile-time option of SQLite
            nbytes = None
        return {"series": int(series[0]), "points": int(points[0]), "bytes": nbytes}
