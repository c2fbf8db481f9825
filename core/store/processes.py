"""The top processes of each sample: encoded compactly into proc_samples, read back by moment."""

from __future__ import annotations

from typing import Any

import msgspec

from servermanager.common.metrics import ProcInfo, Sample
from servermanager.core.store.db import Database

# Written by the sample writer in the transaction of the sample itself (writer.py), so a sample
# acknowledged to its agent has its processes stored too; a replay is ignored like the sample.
PROC_INSERT = "INSERT OR IGNORE INTO proc_samples (node_id, ts, data) VALUES {values}"

# ProcInfo is array_like: msgpack arrays without key names, trailing defaults left out.
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[ProcInfo]).decode


def proc_rows(node_id: int, samples: list[Sample]) -> list[tuple[int, int, bytes]]:
    """The proc_samples rows of a batch: one per sample that carries a top list."""
    return [
        (node_id, round(s.ts * 1000), _encode(s.metrics.procs_top)) for s in samples if s.metrics.procs_top
    ]


class ProcessStore:
    """Reads and upkeep of proc_samples; its writes go with the samples' (see PROC_INSERT)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def at(self, node_id: int, at: float | None = None) -> tuple[float, list[ProcInfo]] | None:
        """The node's snapshot nearest at-or-before `at` (default: the latest), with its time."""
        if at is None:
            row = await self.db.fetchone(
                "SELECT ts, data FROM proc_samples WHERE node_id = ? ORDER BY ts DESC LIMIT 1", (node_id,)
            )
        else:
            row = await self.db.fetchone(
                "SELECT ts, data FROM proc_samples WHERE node_id = ? AND ts <= ? ORDER BY ts DESC LIMIT 1",
                (node_id, round(at * 1000)),
            )
        if row is None:
            return None
        return row[0] / 1000, _decode(row[1])

    async def prune(self, keep: float, now: float, chunk: int = 50_000) -> int:
        """Delete snapshots older than `keep` seconds, in chunks so writers are never blocked long."""
        cutoff = round((now - keep) * 1000)
        removed = 0
        while True:
            n = await self.db.execute(
                "DELETE FROM proc_samples WHERE id IN (SELECT id FROM proc_samples WHERE ts < ? LIMIT ?)",
                (cutoff, chunk),
            )
            removed += n
            if n < chunk:
                return removed

    async def delete_node(self, node_id: int) -> None:
        await self.db.execute("DELETE FROM proc_samples WHERE node_id = ?", (node_id,))

    async def stats(self) -> dict[str, Any]:
        """Rows and payload bytes stored: what `docs/benchmarks.md` reports per snapshot."""
        row = await self.db.fetchone("SELECT count(*), coalesce(sum(length(data)), 0) FROM proc_samples")
        return {"rows": int(row[0]), "bytes": int(row[1])}
