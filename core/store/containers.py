"""The containers of each sample that carries a list: encoded compactly into container_samples,
read back by moment, or as one container's series over a time range."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from servermanager.common.metrics import ContainerInfo, Sample
from servermanager.core.store.db import Database

# Written by the sample writer in the sample's own transaction (writer.py), as proc_samples is:
# a sample acknowledged to its agent has its containers stored too, and a replay is ignored.
CONTAINER_INSERT = "INSERT OR IGNORE INTO container_samples (node_id, ts, data) VALUES {values}"

# ContainerInfo is array_like: msgpack arrays without key names, trailing defaults left out.
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[ContainerInfo]).decode

# The values of one container a history answer carries, in this order.
SERIES_FIELDS = (
    "cpu_pct",
    "mem_used",
    "mem_limit",
    "net_rx_bps",
    "net_tx_bps",
    "blk_read_bps",
    "blk_write_bps",
)


def container_rows(node_id: int, samples: list[Sample]) -> list[tuple[int, int, bytes]]:
    """The container_samples rows of a batch: one per sample that carries a list (an empty list
    too: "the engine runs no container" is news, "no fresh list in this sample" is not)."""
    return [
        (node_id, round(s.ts * 1000), _encode(s.metrics.containers))
        for s in samples
        if s.metrics.containers is not None
    ]


class ContainerStore:
    """Reads and upkeep of container_samples; its writes go with the samples' (see CONTAINER_INSERT)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def at(self, node_id: int, at: float | None = None) -> tuple[float, list[ContainerInfo]] | None:
        """The node's list nearest at-or-before `at` (default: the latest), with its time."""
        if at is None:
            row = await self.db.fetchone(
                "SELECT ts, data FROM container_samples WHERE node_id = ? ORDER BY ts DESC LIMIT 1",
                (node_id,),
            )
        else:
            row = await self.db.fetchone(
                "SELECT ts, data FROM container_samples WHERE node_id = ? AND ts <= ? "
                "ORDER BY ts DESC LIMIT 1",
                (node_id, round(at * 1000)),
            )
        if row is None:
            return None
        return row[0] / 1000, _decode(row[1])

    async def series(
        self, node_id: int, name: str, start: float, end: float, points: int = 1000
    ) -> dict[str, list[Any]]:
        """One container's values over [start, end]: {"ts": [...], field: [...] for SERIES_FIELDS}.

        At most about `points` lists are read: over a long range every k-th row is taken, so a
        week of lists is not decoded whole for a chart a thousand pixels wide. Moments where the
        container was not in the list are left out.
        """
        lo, hi = round(start * 1000), round(end * 1000)
        row = await self.db.fetchone(
            "SELECT count(*) FROM container_samples WHERE node_id = ? AND ts BETWEEN ? AND ?",
            (node_id, lo, hi),
        )
        count = int(row[0]) if row else 0
        step = max(1, math.ceil(count / max(1, points)))
        rows = await self.db.fetchall(
            "SELECT ts, data FROM (SELECT ts, data, row_number() OVER (ORDER BY ts) AS n "
            "FROM container_samples WHERE node_id = ? AND ts BETWEEN ? AND ?) AS r WHERE (n - 1) % ? = 0",
            (node_id, lo, hi, step),
        )
        out: dict[str, list[Any]] = {"ts": [], **{f: [] for f in SERIES_FIELDS}}
        for ts, data in rows:
            for c in _decode(data):
                if c.name == name:
                    out["ts"].append(ts / 1000)
                    for f in SERIES_FIELDS:
                        out[f].append(getattr(c, f))
                    break
        return out

    async def prune(self, keep: float, now: float, chunk: int = 50_000) -> int:
        """Delete lists older than `keep` seconds, in chunks so writers are never blocked long."""
        cutoff = round((now - keep) * 1000)
        removed = 0
        while True:
            n = await self.db.execute(
                "DELETE FROM container_samples WHERE id IN "
                "(SELECT id FROM container_samples WHERE ts < ? LIMIT ?)",
                (cutoff, chunk),
            )
            removed += n
            if n < chunk:
                return removed

    async def stats(self) -> dict[str, Any]:
        """Rows and payload bytes stored."""
        row = await self.db.fetchone("SELECT count(*), coalesce(sum(length(data)), 0) FROM container_samples")
        return {"rows": int(row[0]), "bytes": int(row[1])}
