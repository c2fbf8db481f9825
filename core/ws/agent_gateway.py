"""The /ws/agent gateway: hello and enrollment, sample batches acknowledged after commit, heartbeats;
command output and results, and incident snapshots, handed on."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from servermanager.common import protocol as p
from servermanager.common.metrics import Metrics, Sample
from servermanager.core.context import CORE, Core
from servermanager.core.nodes import EnrollError, NodeState
from servermanager.core.store.db import StorageFull
from servermanager.core.ws.handshake import MAX_BAD_FRAMES, accept_first, refuse

log = logging.getLogger(__name__)

_from_agent = p.decoder(p.AgentToCore)
_hello = p.decoder(p.Hello)
# The `rejected` of every ack that rejects nothing, shared (never mutated): an empty list per ack
# would wait, with the ack, for the commit (see the note on the commit callback below).
_NONE_REJECTED: list[int] = []


class Bucket:
    """A token bucket: `rate` per second, up to `burst` saved. `take` returns how long to wait."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self, n: float) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= n  # may go below zero: the debt is what the caller waits off
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Ingest:
    """One agent's share of the core: frames and bytes per second, and batches waiting for a commit.

    Past either, the gateway stops reading that socket for a while; TCP then slows the agent, its
    spool holds the rest, and memory stays bounded (aiohttp pauses the transport once its small
    buffer is full). Nothing is dropped and no other agent waits for this one.
    """

    LOG_EVERY = 60.0

    def __init__(self, core: Core) -> None:
        s = core.settings
        self.bytes = Bucket(
            s.ingest_bytes_per_second, max(2.0 * s.max_frame_bytes, s.ingest_bytes_per_second)
        )
        self.frames = Bucket(s.ingest_frames_per_second, 2.0 * s.ingest_frames_per_second)
        self.max_in_flight = s.ingest_batches_in_flight
        self.in_flight = 0
        self.room = asyncio.Event()
        self.throttled = 0  # waits since the last log line
        self._logged_at = -self.LOG_EVERY

    def sent(self, size: int) -> float:
        return max(self.frames.take(1), self.bytes.take(size))

    def done(self) -> None:
        self.in_flight -= 1
        self.room.set()

    async def wait(self, node: NodeState, delay: float) -> None:
        """Before reading the next frame: pay off the rate debt, then wait for a commit slot."""
        if delay > 0 or self.in_flight >= self.max_in_flight:
            self.throttled += 1
            now = time.monotonic()
            if now - self._logged_at >= self.LOG_EVERY:
                log.warning(
                    "node %d sends faster than the ingest limits allow; reading its socket slower "
                    "(%d time(s) since the last report)",
                    node.id,
                    self.throttled,
                )
                self._logged_at, self.throttled = now, 0
        if delay > 0:
            await asyncio.sleep(delay)
        if self.in_flight < self.max_in_flight:
            return
        # The core is behind, not the agent: while its socket goes unread the watchdog does not
        # count its silence, which starts again when it is read.
        node.held = True
        try:
            while self.in_flight >= self.max_in_flight:
                self.room.clear()
                await self.room.wait()
        finally:
            node.held = False
            node.last_frame = max(node.last_frame, time.monotonic())


class AgentSession:
    """One live agent socket; the registry closes it when a newer one arrives or the node is deleted.

    Acks are sent by one task per session, fed by the store's commit loop: no task or future per
    sample batch, which at thousands of batches a second is a large share of the core's time.
    """

    def __init__(self, ws: web.WebSocketResponse, peer: str) -> None:
        self.ws = ws
        self.peer = peer
        self.closer: asyncio.Task[bool] | None = None
        self.close_reason: str | None = None  # why the core closed this socket, if it did
        self._acks: list[p.Ack] = []
        self._acks_ready = asyncio.Event()
        self.storage_failed: BaseException | None = None
        self.ingest: Ingest | None = None
        # Bound once: `session.committed` would make a bound-method object for every batch.
        self.on_commit = self.committed

    def committed(self, node: NodeState, ack: p.Ack, last_seq: int, exc: BaseException | None) -> None:
        """The store's verdict on one batch; runs inside the commit loop, so it must not block."""
        if self.ingest is not None:
            self.ingest.done()
        if exc is not None:
            # Not acknowledged, so the agent keeps them and resends after reconnecting.
            self.storage_failed = exc
            self._acks_ready.set()
            return
        node.last_seq = max(node.last_seq, last_seq)
        self._acks.append(ack)
        self._acks_ready.set()

    async def send_acks(self) -> None:
        """Runs for the life of the session."""
        while True:
            await self._acks_ready.wait()
            self._acks_ready.clear()
            if isinstance(self.storage_failed, StorageFull):
                # The agent backs off and keeps spooling; nothing it sent is lost.
                await self.close(p.CloseCode.TRY_AGAIN_LATER, f"{self.storage_failed.reason}; resend later")
                return
            if self.storage_failed is not None:
                await self.close(p.CloseCode.INTERNAL_ERROR, "storage error; resend later")
                return
            acks, self._acks = self._acks, []
            # If the socket is gone the agent resends, and the store ignores the duplicates.
            with contextlib.suppress(ConnectionError):
                for ack in acks:
                    await self.send(ack)

    async def close(self, code: int, reason: str) -> None:
        """Start the close handshake without waiting for the peer: callers may be other requests."""
        if self.closer is None:
            self.close_reason = f"closed by the core: {reason}"
            self.closer = asyncio.create_task(self.ws.close(code=code, message=reason.encode()[:120]))

    async def send(self, frame: p.Frame) -> None:
        if not self.ws.closed:
            await self.ws.send_frame(p.encode(frame), WSMsgType.TEXT)


async def agent_ws(request: web.Request) -> web.WebSocketResponse:
    core = request.app[CORE]
    s = core.settings
    peer = request.remote or "?"
    # No permessage-deflate: small frames gain little, and each socket would hold two zlib states.
    ws, hello = await accept_first(request, f"agent {peer}", _hello, "hello", timeout=5.0, compress=False)
    if hello is None:
        return ws
    if hello.protocol != p.PROTOCOL_VERSION:
        return await refuse(
            ws,
            f"agent {peer}",
            p.CloseCode.UNSUPPORTED_PROTOCOL,
            f"protocol {hello.protocol} unsupported, core speaks {p.PROTOCOL_VERSION}",
        )

    credential: str | None = None
    node: NodeState | None = None
    if hello.credential:
        node = await core.nodes.by_credential(hello.credential)
        if node is None:
            return await refuse(
                ws, f"agent {peer}", p.CloseCode.UNAUTHORIZED, "unknown or revoked node credential"
            )
    elif hello.enroll_token:
        try:
            node, credential, again = await core.nodes.enroll(hello.enroll_token, hello.host, hello.enroll_id)
        except EnrollError as exc:
            return await refuse(ws, f"agent {peer}", p.CloseCode.UNAUTHORIZED, str(exc))
        detail: dict[str, object] = {"name": node.name}
        if again:
            detail["again"] = "its welcome was lost; new credential, no token use"
        await core.audit.record("agent@" + peer, "node.enroll", f"node:{node.id}", "ok", detail)
    else:
        return await refuse(
            ws, f"agent {peer}", p.CloseCode.UNAUTHORIZED, "hello carries neither credential nor token"
        )

    session = AgentSession(ws, peer)
    # The core's setting wins when set; otherwise each agent keeps its own interval (never under 1 s).
    node.interval = s.agent_interval or max(1.0, hello.interval)
    try:
        await session.send(
            p.Welcome(
                protocol=p.PROTOCOL_VERSION,
                node_id=node.id,
                interval=s.agent_interval or None,
                heartbeat_timeout=core.heartbeat_timeout(node.interval),
                credential=credential,
                last_seq=node.last_seq,
            )
        )
    except ConnectionError:
        # The agent gave up waiting (an overloaded core); it will redial, with the credential if it got one.
        log.warning("agent %s went away before its welcome (node %d)", peer, node.id)
        return ws
    if core.cluster is not None:
        await core.cluster.claim(
            node, hello.log_sources, hello.exec_policy
        )  # the newer connection wins, on whichever core
    await core.nodes.attach(node, session, hello.host, hello.spool_dropped)
    if core.cluster is not None:  # the other cores learn its interval and spool state too
        core.bus.publish(node.id, p.NodeUpdated(node=node.info(with_latest=False)))
    core.logs.set_sources(node.id, hello.log_sources)
    node.exec_policy = hello.exec_policy
    await core.alerts.adopt(node)  # in a cluster: its open alerts, continued from the database
    core.alerts.node_online(node)
    await core.commands.node_online(node)
    acker = asyncio.create_task(session.send_acks())
    reason = "connection lost"
    try:
        reason = await _serve(core, node, session)
    finally:
        acker.cancel()
        if session.closer is not None:
            await asyncio.gather(session.closer, return_exceptions=True)
        await asyncio.gather(acker, return_exceptions=True)
        await core.nodes.detach(node, session, session.close_reason or reason)
        if core.cluster is not None and not node.here:  # not replaced by a newer socket on this core
            await core.cluster.release(node)
            core.alerts.hand_off(node)
        # The agent ends its follows with the socket; whoever read them hears the node went away.
        core.logs.node_gone(node.id)
        if not node.online:  # not replaced by a newer link (the registry ignores deleted nodes)
            core.alerts.node_offline(node)
    return ws


def _agent_closed(code: int | None, message: str) -> str:
    """What an agent's close frame says about why it left, for the node's offline reason."""
    if code == p.CloseCode.GOING_AWAY and "stopping" in message:
        return "agent stopped"  # a clean shutdown: the service was stopped or the host went down
    if code == p.CloseCode.GOING_AWAY:
        return "agent reconnecting"
    return f"agent closed the connection (code {code}{': ' + message if message else ''})"


async def _serve(core: Core, node: NodeState, session: AgentSession) -> str:
    """Serve the agent's frames until the socket ends; returns why it ended."""
    ws = session.ws
    bad = 0
    ingest = session.ingest = Ingest(core)
    delay = 0.0
    while not ws.closed:
        await ingest.wait(node, delay)
        # No per-frame timeout: Nodes.watchdog closes links that fell silent, which costs one sweep
        # a tick instead of a timer armed and cancelled for every frame.
        msg = await ws.receive()
        if msg.type == WSMsgType.CLOSE:
            return _agent_closed(msg.data, str(msg.extra or ""))
        if msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
            return "connection lost"
        if msg.type == WSMsgType.ERROR:
            log.warning("node %d: socket error %s", node.id, msg.data)
            return f"connection error: {msg.data}"
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            continue
        delay = ingest.sent(len(msg.data))
        core.nodes.seen(node)
        try:
            frame = p.decode(_from_agent, msg.data)
        except p.FrameError as exc:
            bad += 1
            log.warning("node %d sent a bad frame (%s): %s", node.id, exc.code, exc)
            await session.send(p.Error(code=exc.code, message=str(exc)))
            if bad >= MAX_BAD_FRAMES:
                await session.close(p.CloseCode.BAD_REQUEST, "too many bad frames")
                return "closed by the core: too many bad frames"
            continue
        if isinstance(frame, p.Samples):
            await _on_samples(core, node, session, frame)
        elif isinstance(frame, p.CommandOutput):
            if not _routed(core, node, frame.command_id, msg.data, False):
                await core.commands.on_output(node.id, frame)
        elif isinstance(frame, p.CommandResult):
            if not _routed(core, node, frame.command_id, msg.data, True):
                await core.commands.on_result(node.id, frame)
        elif isinstance(frame, p.Incident):
            core.incidents.on_incident(node.id, frame)
        elif isinstance(frame, p.LogsChunk):
            if not _routed(core, node, frame.request_id, msg.data, frame.eof):
                core.logs.on_chunk(node.id, frame)
        elif isinstance(frame, p.Ping):
            await session.send(p.Pong(ts=frame.ts))
        elif isinstance(frame, p.Error):
            log.warning("node %d reports %s: %s", node.id, frame.code, frame.message)
        elif isinstance(frame, p.Hello):
            await session.send(p.Error(code="unexpected", message="hello is only valid as the first frame"))
    return session.close_reason or "connection lost"


def _routed(core: Core, node: NodeState, request_id: str, data: str | bytes, final: bool) -> bool:
    """An answer to a request another core of the cluster made goes back to that core."""
    if core.cluster is None:
        return False
    raw = data.encode() if isinstance(data, str) else data
    return core.cluster.route_back(node.id, request_id, raw, final)


# What every live sample that drops its lists holds instead: one shared empty list. Three new
# ones per sample were 15,000 objects a second at 5,000 agents, each kept a second as a node's
# latest, for the cycle collector to count and walk. Nothing mutates a sample's lists.
_DROPPED: list[Any] = []


def _without_procs(sample: Sample) -> Sample:
    return msgspec.structs.replace(
        sample,
        metrics=msgspec.structs.replace(
            sample.metrics,
            procs_top=_DROPPED,
            containers=None,
            hardware=None,
            series=_DROPPED,
            plugins=_DROPPED,
        ),
    )


def _note_extras(core: Core, node: NodeState, m: Metrics) -> None:
    """The container count and the hardware reading a sample brings, kept with the node; the
    node list hears of them only when they change (a count every second would be a node_updated
    per agent per second)."""
    changed = False
    if m.containers is not None:
        running = sum(1 for c in m.containers if c.state == "running")
        if running != node.containers:
            node.containers = running
            changed = True
    if m.hardware is not None and m.hardware != node.hardware:
        node.hardware = m.hardware
        changed = True
    if changed:
        core.bus.publish(node.id, p.NodeUpdated(node=node.info(with_latest=False)))


async def _on_samples(core: Core, node: NodeState, session: AgentSession, frame: p.Samples) -> None:
    if not frame.samples:
        await session.send(p.Error(code="invalid_frame", message="samples batch is empty"))
        return
    now = time.time()
    s = core.settings
    accepted, rejected = [], []
    for sample in frame.samples:
        if sample.ts > now + s.sample_max_future or sample.ts < now - s.sample_max_age:
            rejected.append(sample.seq)
        else:
            accepted.append(sample)
    node.clock_skewed = bool(rejected) and not accepted
    if rejected:
        log.warning("node %d: rejected %d samples outside the clock bounds", node.id, len(rejected))
        await session.send(
            p.Error(
                code="clock_skew",
                message=f"{len(rejected)} samples stamped more than {s.sample_max_future:g}s ahead or "
                f"{s.sample_max_age:g}s behind the core's clock were rejected: seq {rejected[:10]}",
            )
        )
    for sample in accepted:
        # Only a newer sample is live news; backfill goes to storage without waking every client.
        if node.latest_ts is None or sample.ts > node.latest_ts:
            full = sample  # the alert rules read its named series too
            m = sample.metrics
            if m.containers is not None or m.hardware is not None:
                _note_extras(core, node, m)
            if m.plugins:
                node.plugins = tuple(m.plugins)  # served by GET .../series
                if core.cluster is not None:
                    core.cluster.note_plugins(node.id, node.plugins)
            if m.procs_top or m.containers is not None or m.hardware is not None or m.series or m.plugins:
                # Named series and plugin statuses likewise: stored or kept here, served by REST.
                # The top processes are stored (with the sample, below) and served by REST; the
                # live event, the node list and every fleet-wide subscriber go without them: a
                # few hundred bytes per node per second that no fleet table shows, and command
                # lines that viewers may not see.
                sample = _without_procs(sample)
            node.latest = sample
            core.bus.publish(node.id, p.SampleEvent(node_id=node.id, sample=sample))
            core.alerts.on_sample(node, full)
    seqs = [x.seq for x in frame.samples]
    ack = p.Ack(upto_seq=max(seqs), from_seq=min(seqs), rejected=rejected or _NONE_REJECTED)
    if session.ingest is not None:
        session.ingest.in_flight += 1  # until committed() hears the outcome, whichever way below
    if not accepted:
        session.committed(node, ack, 0, None)
        return
    last_seq = max(x.seq for x in accepted)
    # A partial, not a lambda: one object where a closure is five (function and four cells), and
    # while a rollup holds the writer ~10,000 of these wait; each young-generation collection of
    # the cycle collector walks them all (5,000-agent push p99: 226-261 ms in runs before, 46-60 after).
    core.store.submit(node.id, accepted, functools.partial(session.on_commit, node, ack, last_seq))
