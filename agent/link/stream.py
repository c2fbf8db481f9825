"""Streaming over one welcomed socket: sample batches out, acks and commands in, and the heartbeat."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from servermanager.agent.exec.outbox import Outbox
from servermanager.agent.stats import Stats
from servermanager.common.protocol import (
    Ack,
    Command,
    CommandCancel,
    CoreToAgent,
    Incident,
    IncidentRequest,
    LogsCancel,
    LogsChunk,
    LogSources,
    LogsRequest,
    Ping,
    Pong,
    Welcome,
    encode,
)

log = logging.getLogger(__name__)

# Silence allowed from the core, on top of 3 intervals: covers a GC pause or a busy core.
HEARTBEAT_SLACK = 5.0
# A batch the core has not acknowledged after this long means a stuck core; reconnecting resends.
MIN_ACK_TIMEOUT = 30.0
# Any frame tells the core this agent lives, so an agent sending a batch every interval needs no
# pings. One goes out after an interval plus this grace (half an interval, at most this many
# seconds) without any frame: enough to absorb the jitter of a batch's send time, and the longest
# silence stays within the core's heartbeat timeout (heartbeat_misses x interval + 1 s).
MAX_PING_GRACE = 0.5

_SAMPLES_PREFIX = b'{"type":"samples","samples":['
_SAMPLES_SUFFIX = b"]}"


class ConnectionDead(Exception):
    """The core went silent or stopped acknowledging; the socket is abandoned and redialled."""


def dead_after(interval: float) -> float:
    """How long the core may stay silent before the link gives it up."""
    return 3 * interval + HEARTBEAT_SLACK


def build_samples_frame(rows: list[tuple[int, bytes]], max_bytes: int) -> tuple[bytes, int, list[int]]:
    """The longest prefix of `rows` that fits one `samples` frame of at most max_bytes.

    The spool stores each Sample already encoded, so the frame is spliced from those bytes rather
    than decoded and re-encoded. Returns (frame, rows used, seqs that can never fit on their
    own). A row too big alone is skipped only while nothing was taken yet, so the batch stays
    one contiguous seq range.
    """
    budget = max_bytes - len(_SAMPLES_PREFIX) - len(_SAMPLES_SUFFIX)
    parts: list[bytes] = []
    size = 0
    used = 0
    oversize: list[int] = []
    for seq, data in rows:
        if len(data) > budget:
            if parts:
                break  # let the next batch start with it (and discard it there)
            oversize.append(seq)
            used += 1
            continue
        extra = len(data) + (1 if parts else 0)  # the comma
        if size + extra > budget:
            break
        parts.append(data)
        size += extra
        used += 1
    frame = _SAMPLES_PREFIX + b",".join(parts) + _SAMPLES_SUFFIX if parts else b""
    return frame, used, oversize


async def race(*coros: Coroutine[Any, Any, Any]) -> None:
    """Run until the first finishes; cancel the rest; re-raise the first one's exception."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        if t in done and not t.cancelled():
            exc = t.exception()
            if exc is not None:
                raise exc


class FrameSocket(Protocol):
    """The socket as a stream uses it (link.wire.Wire): whole frames out, decoded frames in."""

    last_sent: float  # monotonic time of the last frame sent

    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> CoreToAgent | None: ...


class SampleSource(Protocol):
    """What a stream does to the spool: read encoded samples, forget the delivered and undeliverable."""

    @property
    def newest_seq(self) -> int: ...

    def recent(self, limit: int, after_seq: int) -> list[tuple[int, bytes]] | None: ...

    def read_raw(
        self, limit: int, after_seq: int = 0, upto_seq: int | None = None
    ) -> list[tuple[int, bytes]]: ...

    def delete_range(self, from_seq: int, upto_seq: int) -> int: ...

    def delete_later(self, from_seq: int, upto_seq: int, rows: int) -> None: ...

    def discard(self, seqs: list[int]) -> int: ...


@dataclass(frozen=True)
class StreamContext:
    """What a stream needs of the agent around it, and nothing more; the connection builds it once."""

    spool: SampleSource
    outbox: Outbox  # command output and results, sent between sample batches
    dispatch: Callable[[Command | CommandCancel], None]  # where command frames from the core go
    stats: Stats
    changed: Callable[[], None]  # something observable changed (Pulse.fire)
    wake: asyncio.Event  # set on new samples (by the sampler) and on a freed in-flight slot
    interval: Callable[[], float]  # the sampling interval in force
    batch_size: int
    max_inflight: int
    max_frame_bytes: int
    # Where `incident_request` frames go (agent.incident.Snapshots.answer); None: each is refused.
    incident: Callable[[IncidentRequest], Awaitable[Incident]] | None = None
    # Where `logs_request` / `logs_cancel` frames go (agent.logread.service.LogService); None: refused.
    logs: LogsHandler | None = None


class LogsHandler(Protocol):
    """The agent's log reader as a stream uses it: frames in (with where to send the chunks), and
    everything stopped when the socket ends."""

    def handle(
        self, frame: LogsRequest | LogsCancel, send: Callable[[LogsChunk], Awaitable[None]]
    ) -> None: ...

    async def close(self) -> None: ...

    def sources(self) -> LogSources: ...


NO_LOGS = "this agent reads no logs"
NO_SNAPSHOTS = "this agent takes no snapshots"


@dataclass
class _Batch:
    from_seq: int
    upto_seq: int
    count: int
    sent_at: float  # monotonic


class Stream:
    """Streaming over one welcomed socket: sender, receiver, command sender and heartbeat tasks.

    Samples with seq <= boundary were spooled before this connection: the backlog, sent oldest
    first. Newer ones are live. The sender alternates between the two so a long backfill never
    delays live samples by more than one batch. Each batch is one contiguous seq range of the
    spool, which is exactly what the core's ack names and what delete_range removes.
    """

    def __init__(self, ctx: StreamContext, wire: FrameSocket, boundary: int) -> None:
        self.ctx = ctx
        self.wire = wire
        self.backlog_after = 0
        self.backlog_upto = boundary
        self.live_after = boundary
        self.inflight: dict[int, _Batch] = {}  # by upto_seq, which the ack names
        self.live_turn = True
        self._answers: set[asyncio.Task[None]] = set()  # snapshots being taken for the core
        self._due = asyncio.Event()  # the heartbeat's timer went off: look at the socket
        self._timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        """Stream until the socket fails or the core is declared dead (ConnectionDead)."""
        outbox = self.ctx.outbox
        if outbox.held_results:
            log.info("sending %d command result(s) held while disconnected", outbox.held_results)
        outbox.set_online(True)
        try:
            await race(self._receiver(), self._sender(), self._heartbeat(), self._command_sender())
        finally:
            outbox.set_online(False)
            # An answer for a socket that is gone has nowhere to go; the core times its request out.
            for task in self._answers:
                task.cancel()
            await asyncio.gather(*self._answers, return_exceptions=True)
            if self.ctx.logs is not None:
                await self.ctx.logs.close()  # follows were for this socket; the core forgets them too

    # ------------------------------------------------------------ sending

    async def _sender(self) -> None:
        wake = self.ctx.wake
        while True:
            # Clear before looking, so a sample appended meanwhile re-sets it and is not missed.
            wake.clear()
            sent = len(self.inflight) < self.ctx.max_inflight and await self._send_one()
            if not sent:
                await wake.wait()

    async def _send_one(self) -> bool:
        kinds = ("live", "backlog") if self.live_turn else ("backlog", "live")
        for kind in kinds:
            if await self._send_batch(kind):
                self.live_turn = kind == "backlog"
                return True
        return False

    async def _send_batch(self, kind: str) -> bool:
        ctx = self.ctx
        spool = ctx.spool
        while True:
            if kind == "backlog":
                if self.backlog_after >= self.backlog_upto:
                    return False
                rows = await asyncio.to_thread(
                    spool.read_raw, ctx.batch_size, self.backlog_after, self.backlog_upto
                )
                if not rows:
                    self.backlog_after = self.backlog_upto
                    return False
            else:
                if self.live_after >= spool.newest_seq:
                    return False  # nothing newer spooled: no trip to a worker thread to find out
                # A live sample was just appended: it is still in memory, already encoded.
                recent = spool.recent(ctx.batch_size, self.live_after)
                if recent is None:
                    recent = await asyncio.to_thread(spool.read_raw, ctx.batch_size, self.live_after)
                rows = recent
                if not rows:
                    return False
            frame, used, oversize = build_samples_frame(rows, ctx.max_frame_bytes)
            last = rows[used - 1][0]
            if kind == "backlog":
                self.backlog_after = last
            else:
                self.live_after = last
            if oversize:
                n = await asyncio.to_thread(spool.discard, oversize)
                ctx.stats.samples_discarded += n
                log.warning(
                    "dropped %d sample(s) larger than max_frame_bytes=%d (seq %d..%d)",
                    len(oversize),
                    ctx.max_frame_bytes,
                    oversize[0],
                    oversize[-1],
                )
            if not frame:
                continue  # only oversize rows: look again past them
            sent_rows = [seq for seq, _ in rows[:used] if seq not in oversize]
            batch = _Batch(sent_rows[0], sent_rows[-1], len(sent_rows), time.monotonic())
            self.inflight[batch.upto_seq] = batch
            await self._send(frame)
            st = ctx.stats
            st.batches_sent += 1
            st.samples_sent += batch.count
            log.debug(
                "sent %s batch seq %d..%d (%d samples)", kind, batch.from_seq, batch.upto_seq, batch.count
            )
            ctx.changed()
            return True

    async def _command_sender(self) -> None:
        """Command output and results, one frame at a time, in order (a result after its output).

        The send lock is FIFO, so a sample batch waits behind at most one output chunk: a
        command printing megabytes does not delay the samples.
        """
        outbox = self.ctx.outbox
        while True:
            frame = await outbox.get()
            try:
                await self._send(encode(frame))
            except BaseException:
                outbox.requeue(frame)  # a result is kept for the next connection
                raise
            self.ctx.changed()

    # ------------------------------------------------------------ receiving

    async def _receiver(self) -> None:
        ctx = self.ctx
        while True:
            limit = dead_after(ctx.interval())
            try:
                async with asyncio.timeout(limit):
                    frame = await self.wire.recv()
            except TimeoutError:
                raise ConnectionDead(f"no frame from the core for {limit:.0f}s") from None
            if isinstance(frame, Ack):
                await self._on_ack(frame)
            elif isinstance(frame, Ping):
                await self._send(encode(Pong(ts=frame.ts)))
            elif isinstance(frame, Pong):
                ctx.stats.pongs_received += 1
                ctx.changed()
            elif isinstance(frame, Command | CommandCancel):
                ctx.dispatch(frame)
            elif isinstance(frame, IncidentRequest):
                # Answered beside the streaming: a snapshot takes a measurement window.
                task = asyncio.create_task(self._answer(frame), name=f"incident-{frame.request_id[:16]}")
                self._answers.add(task)
                task.add_done_callback(self._answers.discard)
            elif isinstance(frame, LogsRequest | LogsCancel):
                if ctx.logs is not None:
                    ctx.logs.handle(frame, self._send_chunk)
                elif isinstance(frame, LogsRequest):
                    await self._send_chunk(
                        LogsChunk(request_id=frame.request_id, eof=True, error=NO_LOGS, code="refused")
                    )
            elif isinstance(frame, Welcome):
                log.warning("ignoring a second welcome from the core")

    async def _send_chunk(self, chunk: LogsChunk) -> None:
        await self._send(encode(chunk))
        self.ctx.changed()

    async def _answer(self, req: IncidentRequest) -> None:
        incident = self.ctx.incident
        answer = (
            Incident(request_id=req.request_id, error=NO_SNAPSHOTS)
            if incident is None
            else await incident(req)
        )
        try:
            await self._send(encode(answer))
        except Exception as exc:  # the socket failed: the receiver and sender find out themselves
            log.info("could not send snapshot %s: %r", req.request_id, exc)
            return
        self.ctx.changed()

    async def _on_ack(self, ack: Ack) -> None:
        ctx = self.ctx
        spool = ctx.spool
        batch = self.inflight.pop(ack.upto_seq, None)
        if batch is None and not ack.from_seq:
            # Without from_seq an unknown upto could span batches still in flight; deleting on
            # a guess could lose samples, keeping them only costs a resend after reconnect.
            log.warning("ignoring ack for seq %d: no batch in flight ends there", ack.upto_seq)
            return
        lo = ack.from_seq or (batch.from_seq if batch else ack.upto_seq)
        if batch is not None and ack.from_seq and ack.from_seq != batch.from_seq:
            log.warning(
                "ack names seq %d..%d but the batch was %d..%d",
                lo,
                ack.upto_seq,
                batch.from_seq,
                batch.upto_seq,
            )
        rejected = sorted(set(ack.rejected))
        outside = [s for s in rejected if not lo <= s <= ack.upto_seq]
        if batch is not None:
            # The usual ack, of a batch in flight: deleted with the next sample's commit.
            spool.delete_later(lo, ack.upto_seq, batch.count)
            deleted = 0
        else:
            deleted = await asyncio.to_thread(spool.delete_range, lo, ack.upto_seq)
        for seq in outside:
            deleted += await asyncio.to_thread(spool.delete_range, seq, seq)
        if rejected:
            log.warning(
                "core rejected %d sample(s) (seq %s), dropped them; check this host's clock",
                len(rejected),
                ", ".join(map(str, rejected[:10])) + (", ..." if len(rejected) > 10 else ""),
            )
        st = ctx.stats
        st.batches_acked += 1
        st.samples_rejected += len(rejected)
        committed = (batch.count if batch is not None else deleted) - (len(rejected) - len(outside))
        st.samples_acked += max(0, committed)
        st.last_acked_seq = max(st.last_acked_seq, ack.upto_seq)
        ctx.wake.set()  # a slot is free
        ctx.changed()

    # ------------------------------------------------------------ heartbeat

    async def _heartbeat(self) -> None:
        """Ping when the socket has been quiet too long; give the core up when an ack is overdue.

        It looks only when one of the two can be due (the `_arm` timer): a streaming agent sends a
        batch every interval, which moves the timer on, so its heartbeat never wakes at all.
        """
        ctx, wire = self.ctx, self.wire
        try:
            while True:
                self._arm()
                await self._due.wait()
                self._due.clear()
                interval = ctx.interval()
                # A ping is only for an agent with nothing else to say (samples stopped, in-flight
                # window full), which halves the frames a streaming fleet sends. The deadline
                # follows the last frame sent, so a batch that comes a little late adds no ping.
                if time.monotonic() - wire.last_sent >= _quiet_limit(interval):
                    await self._send(encode(Ping(ts=time.time())))
                    ctx.stats.pings_sent += 1
                if self.inflight:
                    oldest = min(b.sent_at for b in self.inflight.values())
                    limit = _ack_limit(interval)
                    if time.monotonic() - oldest > limit:
                        raise ConnectionDead(f"no ack from the core for {limit:.0f}s")
        finally:
            if self._timer is not None:
                self._timer.cancel()

    def _arm(self) -> None:
        """(Re)set the heartbeat's timer: when the socket will have been quiet too long, or the
        oldest batch in flight will be unacknowledged too long, whichever comes first."""
        interval = self.ctx.interval()
        due = self.wire.last_sent + _quiet_limit(interval)
        if self.inflight:
            due = min(due, min(b.sent_at for b in self.inflight.values()) + _ack_limit(interval))
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(due, self._due.set)

    async def _send(self, data: bytes) -> None:
        """One frame out; the heartbeat's quiet time starts again from it."""
        await self.wire.send(data)
        self._arm()


def _quiet_limit(interval: float) -> float:
    """How long the socket may stay quiet before a ping: an interval and some grace."""
    return interval + min(interval / 2, MAX_PING_GRACE)


def _ack_limit(interval: float) -> float:
    """How long a batch may wait for its ack before the core is given up."""
    return max(MIN_ACK_TIMEOUT, dead_after(interval))
