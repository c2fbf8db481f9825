"""The sample writer: every agent's batches group-committed to samples_head, each told once durable."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from servermanager.common.metrics import Sample
from servermanager.core.store.containers import CONTAINER_INSERT, container_rows
from servermanager.core.store.db import Database, StorageFull, is_fatal
from servermanager.core.store.devices import device_points
from servermanager.core.store.processes import PROC_INSERT, proc_rows
from servermanager.core.store.rows import COLUMNS, detail_of, to_row
from servermanager.core.store.schema import ROLLUP_TABLES
from servermanager.core.store.series import PendingPoint, SeriesStore, pending_points
from servermanager.core.store.values import execute_values

log = logging.getLogger(__name__)

# New rows go to samples_head, clustered by time, so a commit appends to a few pages; samples_raw
# is clustered by node for history reads, and a commit there would rewrite one page per node.
# Maintenance.settle() moves the head over in node order, touching each node's page once per run.
_HEAD_INSERT = f"INSERT OR IGNORE INTO samples_head ({COLUMNS}) VALUES {{values}}"
_DIRTY_INSERT = "INSERT OR IGNORE INTO rollup_dirty (res, node_id, ts) VALUES {values}"
# UPDATE .. FROM (SQLite 3.33+): every node's high-water seq in one statement.
# The node's newest detail (rows.py says why it is kept per node); a replayed older sample keeps it.
_LATEST_UPSERT = (
    "INSERT INTO node_latest (node_id, ts, detail) VALUES {values} "
    "ON CONFLICT (node_id) DO UPDATE SET ts = excluded.ts, detail = excluded.detail "
    "WHERE excluded.ts >= node_latest.ts"
)
_LAST_SEQ_UPDATE = "UPDATE nodes SET last_seq = max(last_seq, v.column2) FROM (VALUES {values}) AS v WHERE nodes.id = v.column1"


# Called once per submitted batch from the commit loop: None once durable, else the failure.
Done = Callable[[BaseException | None], None]


# Listeners told per turn of the event loop (see Writer._tell).
TELL_SLICE = 256


def _tell_one(p: _Pending, exc: BaseException | None) -> None:
    try:
        p.done(exc)
    except Exception:
        # One broken listener must not keep the rest of the batch from hearing.
        log.exception("sample commit listener failed")


@dataclass(slots=True)
class _Pending:
    """One submitted batch, its rows built, waiting for a commit."""

    node_id: int
    rows: list[tuple[Any, ...]]
    last_seq: int
    done: Done
    procs: list[tuple[int, int, bytes]]  # proc_samples rows of the same samples
    containers: list[tuple[int, int, bytes]]  # container_samples rows of the same samples
    series: list[PendingPoint]  # named series and device points of the same samples
    latest: tuple[int, bytes] | None  # ts (ms) and detail of the batch's newest sample


class Writer:
    """Group-commits samples from every agent; each submitted batch hears once its rows are durable."""

    def __init__(
        self,
        db: Database,
        flush_every: float = 0.05,
        max_rows_per_commit: int = 20_000,
        series: SeriesStore | None = None,
        latest_every: float = 60.0,
    ) -> None:
        self.db = db
        self.series = series or SeriesStore(db)
        self.flush_every = flush_every
        self.max_rows = max_rows_per_commit
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self.commits = 0
        self.rows_written = 0
        # node_latest is written for a node at most every `latest_every` seconds: an upsert per node
        # and commit would rewrite a page per node (the reason for samples_head). What is newer
        # waits in _unsaved, written by drain() at a clean stop; a crash loses at most that long.
        self.latest_every = latest_every
        self._saved_at: dict[int, float] = {}
        self._unsaved: dict[int, tuple[int, bytes]] = {}

    def submit(self, node_id: int, samples: list[Sample], done: Done) -> None:
        """Queue samples for the next group commit; `done` hears the outcome.

        A callback rather than a future per batch: at thousands of batches a second the
        gateway's ack needs no task of its own (see agents.AgentSession).
        """
        # Rows are built here, spread over arrivals, rather than all at once in the commit loop,
        # which would stall the event loop for the whole batch.
        rows = [to_row(node_id, s) for s in samples]
        newest = max(samples, key=lambda s: s.ts, default=None)
        self._queue.append(
            _Pending(
                node_id,
                rows,
                max((s.seq for s in samples), default=0),
                done,
                proc_rows(node_id, samples),
                container_rows(node_id, samples),
                pending_points(node_id, samples) + device_points(node_id, samples),
                None if newest is None else (round(newest.ts * 1000), detail_of(newest)),
            )
        )
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
        """Commit whatever is queued now, and every node's newest detail (used at shutdown)."""
        while self._queue:
            batch, self._queue = list(self._queue), deque()
            await self._commit(batch)
        if self._unsaved:
            unsaved, self._unsaved = self._unsaved, {}
            async with self.db.transaction() as con:
                await execute_values(con, _LATEST_UPSERT, [(nid, *v) for nid, v in unsaved.items()])

    def forget_node(self, node_id: int) -> None:
        """A deleted node's unsaved detail, so drain() does not bring its node_latest row back."""
        self._unsaved.pop(node_id, None)
        self._saved_at.pop(node_id, None)

    async def _commit(self, batch: list[_Pending]) -> None:
        rows: list[tuple[Any, ...]] = []
        procs: list[tuple[int, int, bytes]] = []
        containers: list[tuple[int, int, bytes]] = []
        points: list[PendingPoint] = []
        latest: dict[int, tuple[int, bytes]] = {}
        dirty: set[tuple[str, int, int]] = set()
        last_seq: dict[int, int] = {}
        step = ROLLUP_TABLES["1m"][1]
        for p in batch:
            for row in p.rows:
                rows.append(row)
                dirty.add(("1m", p.node_id, row[1] // step * step))
            procs.extend(p.procs)
            containers.extend(p.containers)
            points.extend(p.series)
            if p.latest is not None:
                have = latest.get(p.node_id) or self._unsaved.get(p.node_id)
                if have is None or p.latest[0] >= have[0]:
                    latest[p.node_id] = p.latest
            if p.rows:
                last_seq[p.node_id] = max(last_seq.get(p.node_id, 0), p.last_seq)
        try:
            async with self.db.transaction(bulk=True) as con:
                await execute_values(con, _HEAD_INSERT, rows)
                await execute_values(con, PROC_INSERT, procs)
                await execute_values(con, CONTAINER_INSERT, containers)
                found = await self.series.write(con, points)
                await execute_values(con, _DIRTY_INSERT, list(dirty))
                await execute_values(con, _LAST_SEQ_UPDATE, list(last_seq.items()))
                now = time.monotonic()
                saved = self._saved_at
                save = {nid for nid in latest if nid not in saved or now - saved[nid] >= self.latest_every}
                await execute_values(con, _LATEST_UPSERT, [(nid, *latest[nid]) for nid in save])
        except StorageFull as exc:
            # Said once by the database; every agent keeps its samples and resends after a backoff.
            await self._tell(batch, exc)
            return
        except Exception as exc:
            if is_fatal(exc):
                # No batch of ours is to blame: the database said so once, and the core stops.
                await self._tell(batch, exc)
                return
            if len(batch) > 1:
                # One agent's batch must not fail everyone else's: split the group and commit the
                # halves apart, down to the batch that fails on its own.
                log.warning("group commit of %d batches failed (%s); committing them apart", len(batch), exc)
                half = len(batch) // 2
                await self._commit(batch[:half])
                await self._commit(batch[half:])
                return
            log.error(
                "samples of node %d (%d rows) could not be stored: %s", batch[0].node_id, len(rows), exc
            )
            await self._tell(batch, exc)
            return
        self.series.remember(found)
        for nid, v in latest.items():
            if nid in save:
                self._saved_at[nid] = now
                self._unsaved.pop(nid, None)
            else:
                self._unsaved[nid] = v
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
