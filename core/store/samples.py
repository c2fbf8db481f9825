"""SampleStore: the one object the core stores and reads samples through, composed of the writer,
history reads and upkeep over a shared DayCache."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from servermanager.common.metrics import Sample
from servermanager.core.store.containers import ContainerStore
from servermanager.core.store.daycache import DayCache
from servermanager.core.store.db import Database
from servermanager.core.store.history import History
from servermanager.core.store.maintenance import Maintenance
from servermanager.core.store.processes import ProcessStore
from servermanager.core.store.series import SeriesStore
from servermanager.core.store.writer import Done, Writer


class SampleStore:
    """Batched raw writes acknowledged after commit, history queries, rollups, retention, deletion.

    The history reads and the jobs that rewrite rows share one DayCache: whatever rewrites a past
    day drops its text there.
    """

    def __init__(
        self,
        db: Database,
        flush_every: float = 0.05,
        max_rows_per_commit: int = 20_000,
        day_cache_bytes: int = 64 << 20,
    ) -> None:
        self.db = db
        self.days = DayCache(day_cache_bytes)
        self.series = SeriesStore(db)
        self.writer = Writer(db, flush_every, max_rows_per_commit, self.series)
        self.reads = History(db, self.days)
        self.upkeep = Maintenance(db, self.days, self.series)
        self.procs = ProcessStore(db)
        self.containers = ContainerStore(db)

    # ------------------------------------------------------------ writes

    @property
    def commits(self) -> int:
        return self.writer.commits

    @property
    def rows_written(self) -> int:
        return self.writer.rows_written

    def submit(self, node_id: int, samples: list[Sample], done: Done) -> None:
        """Queue samples for the next group commit; `done` hears the outcome (see Writer.submit)."""
        self.writer.submit(node_id, samples, done)

    async def store(self, node_id: int, samples: list[Sample]) -> None:
        """Returns once the samples are committed; raises if the commit failed."""
        await self.writer.store(node_id, samples)

    async def run(self) -> None:
        """The group-commit loop; runs for the life of the core."""
        await self.writer.run()

    async def drain(self) -> None:
        """Commit whatever is queued now (used at shutdown)."""
        await self.writer.drain()

    # ------------------------------------------------------------ reads

    async def latest(self, node_id: int) -> Sample | None:
        return await self.reads.latest(node_id)

    async def seqs(self, node_id: int) -> list[int]:
        return await self.reads.seqs(node_id)

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
        """Columnar series of the node's fields over [start, end] (see History.series)."""
        return await self.reads.series(node_id, start, end, resolution, fields, points, encoded)

    # ------------------------------------------------------------ background jobs

    async def settle(self) -> int:
        return await self.upkeep.settle()

    async def rollup(self, hours: bool = True, now: float | None = None) -> int:
        return await self.upkeep.rollup(hours, now)

    async def rollup_pass(self, now: float | None = None) -> int:
        return await self.upkeep.rollup_pass(now)

    async def prune(self, retention: dict[str, float], now: float | None = None, chunk: int = 50_000) -> int:
        """Rows past retention: "raw", "1m", "1h" and, if given, "processes" (the top lists) and
        "containers" (the container lists)."""
        removed = await self.upkeep.prune(retention, now, chunk)
        if "processes" in retention:
            removed += await self.procs.prune(
                retention["processes"], time.time() if now is None else now, chunk
            )
        if "containers" in retention:
            removed += await self.containers.prune(
                retention["containers"], time.time() if now is None else now, chunk
            )
        return removed

    async def delete_node(self, node_id: int) -> None:
        self.writer.forget_node(node_id)
        await self.upkeep.delete_node(node_id)
