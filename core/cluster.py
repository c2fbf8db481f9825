"""Several cores on one Redis: who holds which agent, frames routed to that core and back, one leader.

- Ownership: `<prefix>:owner:<node_id>` names the core holding the node's socket, renewed while the
  socket lives and expiring `bus_ttl` after its core died; a newer connection on another core
  takes the key and tells the old core to close its socket.
- Routing: each core reads its own inbox, a Redis stream `<prefix>:inbox:<core_id>`. A frame for a
  remote node's agent (a command, a cancel, a logs request) goes to the owner's inbox; what the
  agent answers for a request that came from another core goes back to that core's inbox, where
  it is handled as if its agent had sent it. A stream, not pub/sub: a result sent while the
  receiver's connection blips is read when it reconnects, and messages queued while Redis itself
  is away are sent once it is back.
- Leadership: `<prefix>:leader` taken with SET NX PX and renewed while held; the cluster-wide jobs
  (rollups, retention, the alert outbox, the offline rule) run on the leader only. Redis rather
  than a database lock: the bus is what several cores share whatever their store, and a lease
  whose holder died expires by itself within `bus_ttl`.
- Remote nodes: the bus's node events from other cores keep this core's registry current, so any
  core answers any REST call about any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from redis.exceptions import RedisError

from servermanager.common import protocol as p
from servermanager.common.series import PluginStatus
from servermanager.common.tasks import stop_tasks
from servermanager.core.auth import Role
from servermanager.core.logs import OFFLINE
from servermanager.core.nodes import Nodes, NodeState, RemoteLink
from servermanager.core.redisbus import RedisBus

if TYPE_CHECKING:
    from servermanager.core.context import Core

log = logging.getLogger(__name__)

T = TypeVar("T")

# Inbox messages: (kind, node_id, origin core, frame or close reason, close code).
_Msg = tuple[str, int, str, bytes, int]
_encode = msgspec.msgpack.Encoder()
_decode_msg = msgspec.msgpack.Decoder(_Msg)
_to_agent = p.decoder(p.CoreToAgent)
_from_agent = p.decoder(p.AgentToCore)
_remote_events = p.decoder(p.NodeStatus | p.NodeUpdated | p.NodeRemoved)
_NODE_EVENTS = (
    b'{"type":"node_status"',
    b'{"type":"node_updated"',
    b'{"type":"node_removed"',
)
_SAMPLE = b'{"type":"sample",'


class _Stamp(msgspec.Struct):
    ts: float


class _SampleHead(msgspec.Struct):
    """What a core reads of another core's SampleEvent: the rest is skipped, not built."""

    node_id: int
    sample: _Stamp


_sample_head = msgspec.json.Decoder(_SampleHead)

INBOX_MAXLEN = 100_000
MAX_QUEUED = 10_000  # inbox messages held while Redis is unreachable
ROUTE_TTL = 24 * 3600.0  # a route whose request never ended is forgotten after this

# Set only if it is still ours (or free): a core must never renew a key another core took.
_RENEW = """
local v = redis.call('GET', KEYS[1])
if v == false or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# The same for many keys in one call: a core renews all of its nodes' keys in one round trip, not
# one script call each (500 calls every bus_ttl/4 were 5 % of a core's time at 500 agents).
_RENEW_ALL = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v == false or v == ARGV[1] then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
RENEW_CHUNK = 1000  # keys per call: one call holds Redis for its length
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# What the owner does with an agent's answer to a request from another core: the frame's raw bytes go
# back to `origin`. What the origin does with it: the same as with its own agent's frame.
AgentFrameHandler = Callable[[int, p.Frame], Awaitable[None]]


class Cluster:
    def __init__(self, bus: RedisBus, nodes: Nodes, ttl: float) -> None:
        self.bus = bus
        self.redis = bus.redis
        self.me = bus.core_id
        self.prefix = bus.prefix
        self.nodes = nodes
        self.ttl = ttl
        self.leader = False
        self.on_frame: AgentFrameHandler | None = None  # the gateway's dispatch of an agent's frame
        # A request this core sent that the owner could not hand to the agent (it left meanwhile).
        self.on_undelivered: AgentFrameHandler | None = None
        self.on_remote_status: Callable[[NodeState, bool], None] | None = None  # alerts: online/offline
        self.on_leader: Callable[[bool], None] | None = None  # this core took (True) or lost leadership
        self.routes: dict[str, tuple[str, float]] = {}  # request id -> (origin core, when)
        self._queued: deque[tuple[str, bytes]] = deque(maxlen=MAX_QUEUED)
        self._plugins: dict[int, tuple[PluginStatus, ...]] = {}  # to write at the next renewal
        self._inbox_last = "$"
        self._tasks: list[asyncio.Task[None]] = []
        self._answers: asyncio.Queue[tuple[str, _Msg]] = asyncio.Queue()
        bus.on_remote = self._remote_event
        bus.on_up.append(self._reconnected)
        bus.on_down.append(self._disconnected)

    # ------------------------------------------------------------ keys

    def owner_key(self, node_id: int) -> str:
        return f"{self.prefix}:owner:{node_id}"

    def sources_key(self, node_id: int) -> str:
        return f"{self.prefix}:logsources:{node_id}"

    def plugins_key(self, node_id: int) -> str:
        return f"{self.prefix}:plugins:{node_id}"

    def note_plugins(self, node_id: int, plugins: tuple[PluginStatus, ...]) -> None:
        """A node's custom checks and scrapes as its newest sample says: written for the other cores
        with the next renewal of the keys (not once a sample)."""
        self._plugins[node_id] = plugins

    async def plugins(self, node_id: int) -> tuple[PluginStatus, ...]:
        """The checks and scrapes of a node another core holds, as that core last wrote them."""
        found = await self._read(self.plugins_key(node_id), tuple[PluginStatus, ...])
        return () if found is None else found

    async def _read(self, key: str, kind: type[T]) -> T | None:
        """A value another core wrote under key, decoded; None when absent, unreadable or Redis is down."""
        try:
            raw = await self.redis.get(key)
        except (RedisError, OSError) as exc:
            self.bus.mark_down(exc)
            return None
        if not isinstance(raw, bytes):
            return None
        try:
            return msgspec.json.decode(raw, type=kind)
        except msgspec.ValidationError:
            return None

    def policy_key(self, node_id: int) -> str:
        return f"{self.prefix}:execpolicy:{node_id}"

    async def exec_policy(self, node_id: int) -> p.ExecReport | None:
        """What a node's agent on another core said its [exec] allows (for a command preview here)."""
        return await self._read(self.policy_key(node_id), p.ExecReport)

    async def log_sources(self, node_id: int) -> p.LogSources | None:
        """The log sources of a node another core holds, as its agent's hello said."""
        return await self._read(self.sources_key(node_id), p.LogSources)

    def inbox(self, core: str) -> str:
        return f"{self.prefix}:inbox:{core}"

    @property
    def leader_key(self) -> str:
        return f"{self.prefix}:leader"

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read_inbox(), name="cluster-inbox"),
            asyncio.create_task(self._keep_keys(), name="cluster-keys"),
            asyncio.create_task(self._send_answers(), name="cluster-answers"),
        ]

    async def stop(self) -> None:
        """Let go of leadership and of the nodes this core holds, so others take over at once."""
        tasks, self._tasks = self._tasks, []
        await stop_tasks(*tasks)  # each sends through redis-py, which can lose a cancel (see stop_tasks)
        if self.bus.down_since is None:
            with contextlib.suppress(RedisError, OSError):
                keys = [self.owner_key(st.id) for st in self.nodes.nodes.values() if st.here]
                for key in [self.leader_key, *keys]:
                    await self.redis.eval(_RELEASE, 1, key, self.me)
        self.leader = False

    # ------------------------------------------------------------ ownership

    async def claim(
        self, st: NodeState, sources: p.LogSources | None = None, policy: p.ExecReport | None = None
    ) -> None:
        """This core now holds the node's socket: the newer connection wins, and the core that held
        it before is told to close its own. `sources` and `policy`: the log sources and the [exec]
        its hello named, for the other cores' GET .../logs/sources and command previews."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key, value in ((self.sources_key(st.id), sources), (self.policy_key(st.id), policy)):
                if value is not None:
                    pipe.set(key, msgspec.json.encode(value))
                else:
                    pipe.delete(key)
            await pipe.execute()
            prev = await self.redis.set(self.owner_key(st.id), self.me, px=self._ttl_ms, get=True)
        except (RedisError, OSError) as exc:
            self.bus.mark_down(exc)  # the key is set when Redis is back (_reconnected)
            return
        before = _text(prev)
        if before and before != self.me:
            log.info("node %d: taken over from core %s", st.id, before)
            await self._send(before, ("release", st.id, self.me, b"", 0))

    async def release(self, st: NodeState) -> None:
        """The node's socket here ended: free its key at once if it is still ours."""
        if self.bus.down_since is not None:
            return
        try:
            await self.redis.eval(_RELEASE, 1, self.owner_key(st.id), self.me)
        except (RedisError, OSError) as exc:
            self.bus.mark_down(exc)

    async def _keep_keys(self) -> None:
        """Renew this core's ownership keys and its leadership (or try to take it); forget remote
        nodes whose owner's key expired: that core died."""
        while True:
            await asyncio.sleep(self.ttl / 4)
            if self.bus.down_since is not None:
                continue
            try:
                await self._renew()
            except (RedisError, OSError) as exc:
                self.bus.mark_down(exc)

    async def _renew(self) -> None:
        if self._plugins:
            pipe = self.redis.pipeline(transaction=False)
            for node_id, plugins in self._plugins.items():
                pipe.set(self.plugins_key(node_id), msgspec.json.encode(plugins), px=self._ttl_ms * 60)
            self._plugins = {}
            await pipe.execute()
        mine = [st for st in self.nodes.nodes.values() if st.here]
        if mine:
            kept: list[int] = []
            for i in range(0, len(mine), RENEW_CHUNK):
                keys = [self.owner_key(st.id) for st in mine[i : i + RENEW_CHUNK]]
                kept += await self.redis.eval(_RENEW_ALL, len(keys), *keys, self.me, self._ttl_ms)
            for st, ok in zip(mine, kept, strict=True):
                link = st.link
                if not ok and link is not None and st.here:
                    # Another core holds a newer connection and our release message was missed.
                    log.info("node %d: another core holds it now; closing this core's socket", st.id)
                    await link.close(p.CloseCode.REPLACED, "replaced by a newer connection on another core")
        leads = bool(await self.redis.eval(_RENEW, 1, self.leader_key, self.me, self._ttl_ms))
        if leads != self.leader:
            self._set_leader(leads)
        remote = [st for st in self.nodes.nodes.values() if isinstance(st.link, RemoteLink)]
        if remote:
            owners = await self.redis.mget([self.owner_key(st.id) for st in remote])
            for st, owner in zip(remote, owners, strict=True):
                link = st.link
                if isinstance(link, RemoteLink) and _text(owner) != link.owner:
                    # Its core died (the key expired) or the node moved (its online event is on the way).
                    self._set_offline(st, link, f"its core {link.owner} stopped answering")

    def _set_leader(self, leads: bool) -> None:
        self.leader = leads
        log.info("cluster: core %s %s", self.me, "is the leader" if leads else "is no longer the leader")
        if self.on_leader is not None:
            self.on_leader(leads)

    async def _reconnected(self) -> None:
        """Redis is back (or reached for the first time): re-assert what this core holds and tell the
        others, so every core's picture is current again."""
        await self._flush_queued()
        await self._renew()
        for st in self.nodes.nodes.values():
            if st.here:
                self.bus.publish(st.id, p.NodeStatus(node_id=st.id, online=True, last_seen=st.last_seen))

    def _disconnected(self) -> None:
        """Redis is gone: this core cannot lead, nor reach the nodes that other cores hold."""
        if self.leader:
            log.warning("cluster: core %s stops leading until Redis is back", self.me)
            self._set_leader(False)
        for st in list(self.nodes.nodes.values()):
            link = st.link
            if isinstance(link, RemoteLink):
                self._set_offline(st, link, f"Redis unreachable: its core {link.owner} cannot be asked")

    def _set_offline(self, st: NodeState, link: RemoteLink, reason: str) -> None:
        if st.link is not link:
            return
        st.link = None
        st.offline_reason = reason
        # Only this core's clients: the others have their own view of that core.
        self.bus.fan_out(
            st.id,
            p.encode(p.NodeStatus(node_id=st.id, online=False, last_seen=st.last_seen, reason=reason)),
            Role.VIEWER,
        )
        if self.on_remote_status is not None:
            self.on_remote_status(st, False)

    # ------------------------------------------------------------ node events from other cores

    def _remote_event(self, origin: str, node_id: int | None, data: bytes) -> None:
        if data.startswith(_SAMPLE):
            self._remote_sample(origin, data)
            return
        if not data.startswith(_NODE_EVENTS):
            return
        try:
            ev = p.decode(_remote_events, data)
        except p.FrameError:
            return
        if isinstance(ev, p.NodeRemoved):
            self.nodes.nodes.pop(ev.node_id, None)
            return
        if isinstance(ev, p.NodeUpdated):
            self._updated(ev.node)
            return
        st = self.nodes.get(ev.node_id)
        if st is None:
            return  # a node this core's database does not know (yet)
        if ev.online:
            st.last_seen = ev.last_seen
            self._set_online(st, origin)
        else:
            link = st.link
            if isinstance(link, RemoteLink) and link.owner == origin:
                st.last_seen = ev.last_seen
                st.link = None
                st.offline_reason = ev.reason
                if self.on_remote_status is not None:
                    self.on_remote_status(st, False)

    def _remote_sample(self, origin: str, data: bytes) -> None:
        """Another core's sample: only its node and time are read here; the node keeps the
        encoded event as its latest sample, decoded if something reads it (see NodeState.latest).
        A whole decode of every remote sample was most of what a cluster's events cost a core."""
        try:
            head = _sample_head.decode(data)
        except msgspec.ValidationError:  # DecodeError too: it subclasses it
            return
        st = self.nodes.get(head.node_id)
        if st is None:
            return  # a node this core's database does not know (yet)
        if st.newer_event(head.sample.ts, data):
            st.last_seen = max(st.last_seen or 0.0, head.sample.ts)
        if st.link is None:
            self._set_online(st, origin)  # missed its online event in a blip

    def _set_online(self, st: NodeState, origin: str) -> None:
        if st.here:
            return  # ours, for now: if the other core's connection is newer, its release closes ours
        was_online = st.online
        st.link = RemoteLink(origin, st.id, self)
        st.offline_reason = None
        if not was_online and self.on_remote_status is not None:
            self.on_remote_status(st, True)

    def _updated(self, info: p.NodeInfo) -> None:
        st = self.nodes.get(info.id)
        if st is None:
            # Enrolled through another core (with a shared database this core finds it there too).
            st = NodeState(
                info.id, info.name, info.group, list(info.tags), info.created_at, info.last_seen, info.host
            )
            self.nodes.nodes[info.id] = st
        st.name, st.group, st.tags = info.name, info.group, list(info.tags)
        if info.host is not None:
            st.host = info.host
        if info.interval is not None:
            st.interval = info.interval
        st.spool_dropped = info.spool_dropped
        if info.containers is not None:
            st.containers = info.containers
        if info.hardware is not None:
            st.hardware = info.hardware

    # ------------------------------------------------------------ routing (Router for RemoteLink)

    async def to_agent(self, owner: str, node_id: int, frame: p.Frame) -> None:
        """Send a frame to a node's agent through the core that holds its socket."""
        if self.bus.down_since is not None:
            raise ConnectionError("Redis unreachable: the node's core cannot be asked")
        await self._send(owner, ("agent", node_id, self.me, p.encode(frame), 0), queue=False)

    async def close_remote(self, owner: str, node_id: int, code: int, reason: str) -> None:
        with contextlib.suppress(ConnectionError):
            await self._send(owner, ("close", node_id, self.me, reason.encode(), code))

    def route_back(self, node_id: int, request_id: str, data: bytes, final: bool) -> bool:
        """An agent's frame for `request_id`: if the request came from another core, send the frame
        there (True) instead of handling it here (False)."""
        route = self.routes.get(request_id)
        if route is None or route[0] == self.me:
            return False
        if final:
            self.routes.pop(request_id, None)
        # One queue and one task: an agent's output chunks reach the origin in the order sent.
        self._answers.put_nowait((route[0], ("from_agent", node_id, self.me, data, 0)))
        return True

    async def _send_answers(self) -> None:
        while True:
            core, msg = await self._answers.get()
            await self._send(core, msg)

    async def _send(self, core: str, msg: _Msg, queue: bool = True) -> None:
        """Append to a core's inbox; with `queue`, held here while Redis is away and sent when it is
        back, else ConnectionError."""
        payload = _encode.encode(msg)
        if self.bus.down_since is not None:
            if not queue:
                raise ConnectionError("Redis unreachable")
            self._queued.append((core, payload))
            return
        try:
            await self._xadd(core, payload)
        except (RedisError, OSError) as exc:
            self.bus.mark_down(exc)
            if not queue:
                raise ConnectionError(f"Redis unreachable: {exc}") from None
            self._queued.append((core, payload))

    async def _xadd(self, core: str, payload: bytes) -> None:
        key = self.inbox(core)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(key, {"m": payload}, maxlen=INBOX_MAXLEN, approximate=True)
        # The inbox of a core that died goes away by itself.
        pipe.pexpire(key, self._ttl_ms * 60)
        await pipe.execute()

    async def _flush_queued(self) -> None:
        while self._queued:
            core, payload = self._queued[0]
            await self._xadd(core, payload)
            self._queued.popleft()

    async def _inbox_start(self, key: str) -> str:
        """The id after which this core's inbox is new to it: its newest entry's now, or 0-0 when it
        has none. A real id, never "$" on every XREAD: "$" means "after what is there when this call
        starts", so a message that arrived between two calls (while the last batch was handled, or
        as a one-second block ended empty) was skipped, and a command or log request routed to this
        core was lost."""
        newest: Any = await self.redis.xrevrange(key, count=1)
        return _text(newest[0][0]) if newest else "0-0"

    async def _read_inbox(self) -> None:
        key = self.inbox(self.me)
        while True:
            if self.bus.down_since is not None:
                await self.bus.up.wait()
                continue
            try:
                if self._inbox_last == "$":
                    self._inbox_last = await self._inbox_start(key)
                got: Any = await self.redis.xread({key: self._inbox_last}, block=1000, count=500)
            except (RedisError, OSError) as exc:
                self.bus.mark_down(exc)
                continue
            for _stream, entries in got or []:
                for entry_id, fields in entries:
                    self._inbox_last = _text(entry_id)
                    try:
                        msg = _decode_msg.decode(fields[b"m"])
                    except (KeyError, msgspec.ValidationError) as exc:
                        log.warning("cluster: ignored a malformed inbox message: %s", exc)
                        continue
                    try:
                        await self._handle(msg)
                    except Exception:
                        log.exception("cluster: inbox message %s for node %d failed", msg[0], msg[1])

    async def _handle(self, msg: _Msg) -> None:
        kind, node_id, origin, data, code = msg
        st = self.nodes.get(node_id)
        if kind in ("from_agent", "undelivered"):
            handler = self.on_frame if kind == "from_agent" else self.on_undelivered
            if st is None or handler is None:
                return
            try:
                frame = p.decode(_from_agent if kind == "from_agent" else _to_agent, data)
            except p.FrameError:
                return
            await handler(node_id, frame)
            return
        link = st.link if st is not None else None
        local = link is not None and not isinstance(link, RemoteLink)
        if kind == "release":
            if local and link is not None:
                log.info("node %d: a newer connection on core %s replaces this one", node_id, origin)
                await link.close(p.CloseCode.REPLACED, "replaced by a newer connection for this node")
        elif kind == "close":
            if local and link is not None:
                await link.close(code, data.decode(errors="replace"))
        elif kind == "agent":
            await self._to_local_agent(node_id, origin, data, link if local else None)

    async def _to_local_agent(self, node_id: int, origin: str, data: bytes, link: object) -> None:
        try:
            frame = p.decode(_to_agent, data)
        except p.FrameError as exc:
            log.warning("cluster: core %s sent a bad frame for node %d: %s", origin, node_id, exc)
            return
        rid = _request_id(frame)
        if link is None or not hasattr(link, "send"):
            # The node left this core meanwhile: the origin hears it as offline.
            await self._send(origin, ("undelivered", node_id, self.me, data, 0))
            return
        if isinstance(frame, p.Command | p.LogsRequest) and rid is not None:
            self._forget_old_routes()
            self.routes[rid] = (origin, time.monotonic())
        elif isinstance(frame, p.LogsCancel):
            self.routes.pop(frame.request_id, None)
        try:
            await link.send(frame)
        except ConnectionError:
            self.routes.pop(rid or "", None)
            await self._send(origin, ("undelivered", node_id, self.me, data, 0))

    def _forget_old_routes(self) -> None:
        if len(self.routes) < 1000:
            return
        cutoff = time.monotonic() - ROUTE_TTL
        for rid, (_, at) in list(self.routes.items()):
            if at < cutoff:
                del self.routes[rid]


def _request_id(frame: p.Frame) -> str | None:
    if isinstance(frame, p.Command | p.CommandCancel):
        return frame.command_id
    if isinstance(frame, p.LogsRequest | p.LogsCancel):
        return str(frame.request_id)
    return None


def _text(value: object) -> str:
    """A Redis reply (bytes, or None for a missing key) as text."""
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)


# ---------------------------------------------------------------- the cluster in a core's services


def wire(core: Core, cluster: Cluster) -> None:
    """Hand other cores' frames, node changes and notices to this core's services, and this core's
    rule and silence edits to the others."""
    cluster.on_frame = lambda node_id, frame: _agent_frame(core, node_id, frame)
    cluster.on_undelivered = lambda node_id, frame: _undelivered(core, node_id, frame)
    cluster.on_remote_status = lambda st, online: _remote_status(core, st, online)
    cluster.on_leader = lambda leads: _spawn(core.alerts.lead(leads))
    core.alerts.leads = core.leads
    core.commands.clustered = True
    core.alerts.on_change = cluster.bus.notice
    cluster.bus.on_notice = lambda kind, ident: _spawn(_reload(core, kind, ident))
    ups = 0

    async def back() -> None:
        # Notices sent while this core was cut off are lost: read it all again once back.
        nonlocal ups
        ups += 1
        if ups > 1:
            _spawn(_reload(core, "all", 0))

    cluster.bus.on_up.append(back)


async def _agent_frame(core: Core, node_id: int, frame: p.Frame) -> None:
    """An agent's answer to a request this core made, relayed by the core that holds its socket."""
    if isinstance(frame, p.CommandOutput):
        await core.commands.on_output(node_id, frame)
    elif isinstance(frame, p.CommandResult):
        await core.commands.on_result(node_id, frame)
    elif isinstance(frame, p.LogsChunk):
        core.logs.on_chunk(node_id, frame)


async def _undelivered(core: Core, node_id: int, frame: p.Frame) -> None:
    """A request to a node on another core that never reached its agent: answered as offline."""
    if isinstance(frame, p.Command):
        await core.commands.undelivered(node_id, frame.command_id)
    elif isinstance(frame, p.LogsRequest):
        core.logs.on_chunk(
            node_id, p.LogsChunk(request_id=frame.request_id, eof=True, error=OFFLINE, code="offline")
        )


_pending: set[asyncio.Task[None]] = set()


def _spawn(job: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(job, name="cluster-job")
    _pending.add(task)
    task.add_done_callback(_finished)


def _finished(task: asyncio.Task[None]) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("cluster job failed", exc_info=task.exception())


async def _reload(core: Core, kind: str, ident: int) -> None:
    """Another core changed a rule or a silence in the database: take it in here too."""
    alerts = core.alerts
    if kind in ("rule", "all"):
        ids = (
            [ident]
            if kind == "rule"
            else sorted(set(alerts.rules) | {r.id for r in await alerts.store.load()})
        )
        for rid in ids:
            alerts.rule_changed(await alerts.store.get(rid), rid, announce=False)
    if kind in ("silences", "all"):
        await alerts.silences.load()
        alerts.silences_changed(announce=False)
    if kind == "ack":
        await alerts.acked_elsewhere(ident)


async def _learn_sources(core: Core, node_id: int) -> None:
    """What the agent's hello said on the core that holds it: its log sources and its [exec]."""
    if core.cluster is not None:
        core.logs.set_sources(node_id, await core.cluster.log_sources(node_id))
        st = core.nodes.get(node_id)
        policy = await core.cluster.exec_policy(node_id)
        if st is not None and policy is not None:
            st.exec_policy = policy


def _remote_status(core: Core, st: NodeState, online: bool) -> None:
    """A node on another core came online or went away: the alert engine's offline rule (the leader
    evaluates it), commands queued here for it, and log follows through that core."""
    if online:
        core.alerts.node_online(st)
        _spawn(core.commands.node_online(st))
        _spawn(_learn_sources(core, st.id))
    else:
        core.logs.node_gone(st.id)
        core.alerts.node_offline(st)
