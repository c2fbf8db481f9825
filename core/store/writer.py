"""The sample writer: every agent's batches group-committed to samples_head, each told once durable."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import aiosqlite
import msgspec

from servermanager.common.metrics import Sample
from servermanager.core.store.containers import CONTAINER_INSERT, container_rows
from servermanager.core.store.db import Database, StorageFull, is_fatal
from servermanager.core.store.devices import device_points
from servermanager.core.store.processes import PROC_INSERT, proc_rows
from servermanager.core.store.rows import COLUMNS, detail_of, to_row
from servermanager.core.store.schema import ROLLUP_TABLES
from servermanager.core.store.series import POINT_INSERT, Key, PendingPoint, SeriesStore, pending_points
from servermanager.core.store.values import (
    MAX_ROWS_PER_STATEMENT,
    execute_all,
    execute_values,
    values_statements,
)

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


@contextlib.contextmanager
def paused_collection() -> Iterator[None]:
    """No automatic cycle collection inside the block (where it is on at all).

    CPython counts every container it creates toward the next young collection and takes one back
    when it is freed. A burst of short-lived tuples made and dropped inside the block therefore
    ends where it began, instead of setting off a collection halfway that walks them all while
    they are still alive. Nothing inside may await: the pause is for the whole process.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# Called once per submitted batch from the commit loop: None once durable, else the failure.
Done = Callable[[BaseException | None], None]


# Listeners told per turn of the event loop (see Writer._tell).
TELL_SLICE = 256
# A commit is put together a slice at a time, with a turn of the event loop between slices: after a
# rollup pass the writer catches up with 4,000-8,000 queued batches in one commit, and merging them
# and binding their 80,000 series points in one go held the loop 90-510 ms at 5,000 agents (pushes
# and acks waiting behind it). Batches merged, and rows (a whole number of statements) bound, per turn:
MERGE_SLICE = 1024
BUILD_SLICE = 16 * MAX_ROWS_PER_STATEMENT


async def _sliced_statements(
    con: aiosqlite.Connection, template: str, rows: Sequence[Sequence[Any]]
) -> list[tuple[str, Sequence[Any]]]:
    """values_statements, a BUILD_SLICE of rows per turn of the event loop."""
    out: list[tuple[str, Sequence[Any]]] = []
    for i in range(0, len(rows), BUILD_SLICE):
        if i:
            await asyncio.sleep(0)
        with paused_collection():  # the flattened parameters' rows are short-lived too
            out += values_statements(con, template, rows[i : i + BUILD_SLICE])
    return out


def _ts(s: Sample) -> float:
    return s.ts


def _latest(samples: list[Sample]) -> tuple[int, bytes] | None:
    """ts (ms) and detail of the newest of samples."""
    newest = max(samples, key=_ts, default=None)
    return None if newest is None else (round(newest.ts * 1000), detail_of(newest))


def _tell_one(p: _Pending, exc: BaseException | None) -> None:
    try:
        p.done(exc)
    except Exception:
        # One broken listener must not keep the rest of the batch from hearing.
        log.exception("sample commit listener failed")


class _Pending(msgspec.Struct, gc=False):
    """One submitted batch, its rows built, waiting for a commit.

    Untracked by the cycle collector (it is in no reference cycle), and holding no empty list of
    its own: at 5,000 agents about two seconds of batches wait here, and every container they hold
    is walked by each young collection (~1 us each) while they wait.
    """

    node_id: int
    rows: list[tuple[Any, ...]]
    last_seq: int
    done: Done
    procs: Sequence[tuple[int, int, bytes]]  # proc_samples rows of the same samples
    containers: Sequence[tuple[int, int, bytes]]  # container_samples rows of the same samples
    series: Sequence[PendingPoint]  # named series and device points of the same samples
    # ts (ms) and detail of the batch's newest sample. Encoded here, not kept as the sample until
    # written: its lists would be a dozen more containers per batch for young collections to walk.
    latest: tuple[int, bytes] | None


class _Prepared(msgspec.Struct, gc=False):
    """A group of batches merged and bound by Writer._prepare, waiting for Writer._execute."""

    batch: list[_Pending]
    rows: int
    points: list[PendingPoint]
    latest: dict[int, tuple[int, bytes]]
    save: set[int]
    now: float
    head: list[tuple[str, Sequence[Any]]]
    rest: list[tuple[str, Sequence[Any]]]
    tail: list[tuple[str, Sequence[Any]]]
    point_stmts: list[tuple[str, Sequence[Any]]] | None
    generation: int  # SeriesStore.generation that point_stmts were bound at


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
        named, devices = pending_points(node_id, samples), device_points(node_id, samples)
        self._queue.append(
            _Pending(
                node_id,
                rows,
                max((s.seq for s in samples), default=0),
                done,
                proc_rows(node_id, samples) or (),
                container_rows(node_id, samples) or (),
                (named + devices if named else devices) or (),
                _latest(samples),
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
        """The group-commit loop; runs for the life of the core.

        Pipelined: the next commit is put together on the event loop while the one before it runs
        in the database's thread (or server). Done one after the other, a commit's binding and
        merging (a third of its time) left the database idle, and after a rollup pass had held the
        writer the catch-up at 5,000 agents ran barely faster than the fleet sent.
        """
        inflight: asyncio.Task[None] | None = None
        try:
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
                    try:
                        prepared = await self._prepare(batch)
                    except BaseException:
                        # Cancelled (the core stopping) while putting it together: back to the front
                        # of the queue, so drain() commits it.
                        self._queue.extendleft(reversed(batch))
                        raise
                    if inflight is not None:
                        try:
                            # Shielded: stopping the core lets the commit ahead finish and answer.
                            await asyncio.shield(inflight)
                        except BaseException:
                            self._queue.extendleft(reversed(batch))  # for drain(), as above
                            raise
                    inflight = asyncio.create_task(self._execute(prepared), name="sample-commit")
        finally:
            if inflight is not None and not inflight.done():
                # Its statements run to their end in the database's thread anyway; drain() must
                # not start before it has, nor its batches go unanswered.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(inflight)

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
        """Put `batch` together and commit it, nothing overlapping (drain, and a failed group's halves)."""
        await self._execute(await self._prepare(batch))

    async def _prepare(self, batch: list[_Pending]) -> _Prepared:
        """Merge the batches and bind their statements, a slice per turn of the event loop; takes no lock."""
        rows: list[tuple[Any, ...]] = []
        procs: list[tuple[int, int, bytes]] = []
        containers: list[tuple[int, int, bytes]] = []
        points: list[PendingPoint] = []
        latest: dict[int, tuple[int, bytes]] = {}
        dirty: set[tuple[str, int, int]] = set()
        last_seq: dict[int, int] = {}
        step = ROLLUP_TABLES["1m"][1]
        for i, p in enumerate(batch):
            if i and i % MERGE_SLICE == 0:
                await asyncio.sleep(0)
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
        now = time.monotonic()
        saved = self._saved_at
        save = {nid for nid in latest if nid not in saved or now - saved[nid] >= self.latest_every}
        con = self.db.writer
        head = await _sliced_statements(con, _HEAD_INSERT, rows)
        rest = [
            *await _sliced_statements(con, PROC_INSERT, procs),
            *await _sliced_statements(con, CONTAINER_INSERT, containers),
        ]
        tail = [
            *await _sliced_statements(con, _DIRTY_INSERT, list(dirty)),
            *await _sliced_statements(con, _LAST_SEQ_UPDATE, list(last_seq.items())),
            *await _sliced_statements(con, _LATEST_UPSERT, [(nid, *latest[nid]) for nid in save]),
        ]
        # Bound against the series ids known now; _execute binds them again if a series was
        # dropped (or a node deleted) before it took the write lock.
        generation = self.series.generation
        point_stmts = await self._point_statements(con, points)
        return _Prepared(
            batch, len(rows), points, latest, save, now, head, rest, tail, point_stmts, generation
        )

    async def _execute(self, c: _Prepared) -> None:
        """Commit what _prepare put together under the write lock, then tell every batch."""
        batch = c.batch
        found: dict[Key, int] = {}
        try:
            con = self.db.writer
            async with self.db.write_lock:
                # Under the write lock: a series that prune_dictionary() or a node's deletion
                # drops meanwhile must not keep its id here.
                point_stmts = c.point_stmts
                if point_stmts is None or c.generation != self.series.generation:
                    # A series was new (the commit ahead may have looked it up since) or dropped.
                    point_stmts = await self._point_statements(con, c.points)
                if point_stmts is None:  # a new series: its id is looked up on the way
                    async with self.db.transaction(bulk=True, held=True) as tx:
                        await execute_all(tx, [*c.head, *c.rest])
                        found = await self.series.write(tx, c.points)
                        await execute_all(tx, c.tail)
                else:
                    # BEGIN, every statement and COMMIT in one trip to the database's thread: an
                    # await per statement costs a turn of the event loop each, and beside 5,000
                    # streaming agents a commit of 5,000 samples (110 statements) took 20 s that
                    # way, every ack waiting behind it (and three trips, 0.3-0.6 s on a slower VM).
                    await self.db.commit_all([*c.head, *c.rest, *point_stmts, *c.tail], bulk=True)
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
            log.error("samples of node %d (%d rows) could not be stored: %s", batch[0].node_id, c.rows, exc)
            await self._tell(batch, exc)
            return
        self.series.remember(found)
        for nid, v in c.latest.items():
            if nid in c.save:
                self._saved_at[nid] = c.now
                if (kept := self._unsaved.get(nid)) is not None and kept[0] <= v[0]:
                    del self._unsaved[nid]
            elif (kept := self._unsaved.get(nid)) is None or kept[0] <= v[0]:
                # Put together before the commit ahead of it finished: never trade its newer detail
                # for an older one.
                self._unsaved[nid] = v
        self.commits += 1
        self.rows_written += c.rows
        await self._tell(batch, None)

    async def _point_statements(
        self, con: aiosqlite.Connection, points: list[PendingPoint]
    ) -> list[tuple[str, Sequence[Any]]] | None:
        """POINT_INSERT's statements for `points`, a slice per turn of the event loop; None if a
        series is new (SeriesStore.write looks its id up)."""
        out: list[tuple[str, Sequence[Any]]] = []
        for i in range(0, len(points), BUILD_SLICE):
            if i:
                await asyncio.sleep(0)
            # A point row lives only until its statement's parameters are flattened: with the
            # collector paused, they are gone before it counts them (see paused_collection).
            with paused_collection():
                known = self.series.known_rows(points[i : i + BUILD_SLICE])
                if known is None:
                    return None
                out += values_statements(con, POINT_INSERT, known)
                del known
        return out

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
