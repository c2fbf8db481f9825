"""The node registry: enrollment, credentials, online state, latest sample, and edits."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from servermanager.common.metrics import Hardware, HostFacts, Sample
from servermanager.common.protocol import (
    CloseCode,
    ExecReport,
    Frame,
    FrameError,
    NodeInfo,
    NodeRemoved,
    NodeStatus,
    NodeUpdated,
    SampleEvent,
    decode,
    decoder,
)
from servermanager.common.series import PluginStatus
from servermanager.core.auth import NODE_CRED_PREFIX, new_secret, token_hash
from servermanager.core.bus import Bus
from servermanager.core.store.db import Database
from servermanager.core.store.samples import SampleStore
from servermanager.core.store.values import execute_values

log = logging.getLogger(__name__)

_SAMPLE_EVENT = decoder(SampleEvent)


class AgentLink(Protocol):
    """What the registry needs of a live agent socket."""

    async def close(self, code: int, reason: str) -> None: ...

    async def send(self, frame: Frame) -> None: ...


class Router(Protocol):
    """How frames reach an agent whose socket another core of the cluster holds (core/cluster.py)."""

    async def to_agent(self, owner: str, node_id: int, frame: Frame) -> None: ...

    async def close_remote(self, owner: str, node_id: int, code: int, reason: str) -> None: ...


class RemoteLink:
    """A node's socket held by another core: frames go there through the bus. A send raises
    ConnectionError when that core cannot be reached, as a local socket's would."""

    def __init__(self, owner: str, node_id: int, router: Router) -> None:
        self.owner = owner
        self.node_id = node_id
        self.router = router

    async def send(self, frame: Frame) -> None:
        await self.router.to_agent(self.owner, self.node_id, frame)

    async def close(self, code: int, reason: str) -> None:
        await self.router.close_remote(self.owner, self.node_id, code, reason)


@dataclass
class NodeState:
    id: int
    name: str
    group: str
    tags: list[str]
    created_at: float
    last_seen: float | None
    host: HostFacts | None
    spool_dropped: int = 0
    last_seq: int = 0
    link: AgentLink | None = None
    last_frame: float = 0.0  # monotonic time of the last frame from the agent
    held: bool = False  # the core is not reading its socket now: it waits for a commit of its samples
    interval: float | None = None
    containers: int | None = None  # running containers in the last list the agent sent
    hardware: Hardware | None = None
    # Why the node is offline, as the core saw its link end; shown to users next to "last seen".
    offline_reason: str | None = "no connection since the core started"
    clock_skewed: bool = False  # the agent's last batch was rejected whole for its clock
    plugins: tuple[PluginStatus, ...] = ()  # how the agent's [[custom]]/[[scrape]]/[[check]] last ran
    # What its [exec] lets run, from its last hello (None: not connected since the core started, or
    # an older agent); the command preview replays it.
    exec_policy: ExecReport | None = None
    # The newest sample (`latest`). From another core of the cluster it comes encoded, as that core
    # published it, and is decoded only when something reads it: a core receives every other core's
    # samples, and almost all are replaced by the next before anything reads them. (Keeping this
    # core's own agents' samples encoded as well was measured at 2,500 agents: no less CPU, 10 MB
    # more RSS; so those stay decoded.)
    _latest: Sample | None = field(default=None, repr=False)
    _latest_event: bytes | None = field(default=None, repr=False)
    _latest_ts: float | None = field(default=None, repr=False)

    @property
    def latest(self) -> Sample | None:
        event = self._latest_event
        if event is not None:
            self._latest_event = None
            try:
                self._latest = decode(_SAMPLE_EVENT, event).sample
            except FrameError as exc:  # not expected (a core encoded it), and never fatal
                log.warning("node %d: a sample event is unreadable: %s", self.id, exc)
        return self._latest

    @latest.setter
    def latest(self, sample: Sample | None) -> None:
        self._latest, self._latest_event = sample, None
        self._latest_ts = None if sample is None else sample.ts

    @property
    def latest_ts(self) -> float | None:
        """The newest sample's time, without decoding a sample another core sent."""
        return self._latest_ts

    def newer_event(self, ts: float, event: bytes) -> bool:
        """Another core's encoded SampleEvent for this node, its sample stamped `ts`: kept as the
        latest sample if it is newer than the one held (True), else ignored."""
        if self._latest_ts is not None and ts <= self._latest_ts:
            return False
        self._latest, self._latest_event, self._latest_ts = None, event, ts
        return True

    @property
    def online(self) -> bool:
        return self.link is not None

    @property
    def here(self) -> bool:
        """This core holds the node's socket (not another core of the cluster)."""
        return self.link is not None and not isinstance(self.link, RemoteLink)

    def info(self, with_latest: bool = True) -> NodeInfo:
        return NodeInfo(
            id=self.id,
            name=self.name,
            group=self.group,
            tags=list(self.tags),
            online=self.online,
            last_seen=self.last_seen,
            created_at=self.created_at,
            host=self.host,
            interval=self.interval,
            spool_dropped=self.spool_dropped,
            latest=self.latest if with_latest else None,
            containers=self.containers,
            hardware=self.hardware,
            offline_reason=None if self.online else self.offline_reason,
        )


# Seconds between the watchdog's sweeps (the job in app.py).
WATCHDOG_EVERY = 0.25


class EnrollError(Exception):
    pass


# How long after its enrollment an agent that missed its welcome may come back for it (see Unwelcomed).
ENROLL_RETRY_WINDOW = 600.0


@dataclass
class Unwelcomed:
    """An enrollment whose credential no hello has used yet, by the agent's enroll id: the welcome
    carrying it may never have reached the agent (it gave up waiting on an overloaded core), and the
    agent comes back with the same token and id. In memory only: a core that restarted meanwhile
    enrolls it as a new node, as before."""

    node_id: int
    token_hash: bytes
    cred_hash: bytes
    at: float


@dataclass
class _Enrolling:
    """Hellos with one enroll id being handled now."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    hellos: int = 0


class Nodes:
    def __init__(self, db: Database, store: SampleStore, bus: Bus) -> None:
        self.db = db
        self.store = store
        self.bus = bus
        self.nodes: dict[int, NodeState] = {}
        # What hellos and goodbyes changed in the nodes table, written by flush() every second in
        # one transaction: a transaction each put thousands of them in the write lock's queue when
        # a fleet reconnected at once, and the sample commits waited behind them all. Node id ->
        # host (JSON), spool_dropped, last_seen; and the ids whose link ended (last_seen only).
        self._attached: dict[int, tuple[str, int, float | None]] = {}
        self._detached: set[int] = set()
        self._swept = 0.0  # monotonic time of the watchdog's last sweep
        self._lag = 0.0  # how late the core itself has lately been to sweep (s): see watchdog()
        self._unwelcomed: dict[bytes, Unwelcomed] = {}  # by the hash of the agent's enroll id
        self._unwelcomed_ref: dict[int, bytes] = {}  # node id -> its key there
        # Hellos with the same enroll id, one at a time: an agent's retry that arrives while its first
        # hello still waits for the write lock must find that enrollment. Only those: one lock for
        # every enrollment let one into the write lock's queue per sample commit (16 a second at
        # 5,000 agents), where they used to queue together.
        self._enrolling: dict[bytes, _Enrolling] = {}

    async def load(self, where: str = "", params: tuple[Any, ...] = ()) -> None:
        rows = await self.db.fetchall(
            "SELECT id, name, grp, tags, host, created_at, last_seen, last_seq, spool_dropped FROM nodes "
            + where,
            params,
        )
        for r in rows:
            host = msgspec.json.decode(r[4], type=HostFacts) if r[4] else None
            st = NodeState(r[0], r[1], r[2], json.loads(r[3]), r[5], r[6], host, r[8], r[7])
            st.latest = await self.store.latest(st.id)
            self.nodes[st.id] = st

    def get(self, node_id: int) -> NodeState | None:
        return self.nodes.get(node_id)

    async def find(self, node_id: int) -> NodeState | None:
        """A node this core knows, or one enrolled through another core on the same database a
        moment ago (before that core's news of it arrived): read in, so any core answers at once."""
        st = self.nodes.get(node_id)
        if st is None:
            await self.load("WHERE id = ?", (node_id,))
            st = self.nodes.get(node_id)
        return st

    async def by_credential(self, credential: str) -> NodeState | None:
        row = await self.db.fetchone(
            "SELECT id, last_seq FROM nodes WHERE cred_hash = ?", (token_hash(credential),)
        )
        if row is None:
            return None
        # Its agent has its credential: no enrollment of it can be taken up again.
        self._unwelcomed.pop(self._unwelcomed_ref.pop(row[0], b""), None)
        if row[0] not in self.nodes:
            # Enrolled through another core on the same database (PostgreSQL), and reconnecting
            # here now: read it in, as load() read the others at start.
            await self.load("WHERE id = ?", (row[0],))
        st = self.nodes.get(row[0])
        if st is not None:
            # Another core on the same database may have stored newer samples of it since.
            st.last_seq = max(st.last_seq, row[1])
        return st

    async def enroll(
        self, token: str, host: HostFacts, enroll_id: str | None = None
    ) -> tuple[NodeState, str, bool]:
        """Spend one use of an enrollment token and create a node with its own credential; or, for an
        agent back with the same token and `enroll_id` for a welcome it missed, give that node a new
        credential (the third value says which: True) and spend nothing."""
        if not enroll_id:
            return await self._enroll(token, host, None)
        ref = token_hash(enroll_id)
        same = self._enrolling.get(ref)
        if same is None:
            same = self._enrolling[ref] = _Enrolling()
        same.hellos += 1
        try:
            async with same.lock:
                return await self._enroll(token, host, ref)
        finally:
            same.hellos -= 1
            if not same.hellos:
                del self._enrolling[ref]

    async def _enroll(self, token: str, host: HostFacts, ref: bytes | None) -> tuple[NodeState, str, bool]:
        credential = new_secret(NODE_CRED_PREFIX)
        now = time.time()
        if ref is not None:
            again = await self._enroll_again(ref, token_hash(token), credential, now)
            if again is not None:
                return again, credential, True
        async with self.db.transaction() as con:
            cur = await con.execute(
                "UPDATE enroll_tokens SET uses_left = uses_left - 1 "
                "WHERE hash = ? AND uses_left > 0 AND expires_at > ?",
                (token_hash(token), now),
            )
            if cur.rowcount != 1:
                raise EnrollError("enrollment token is unknown, expired or used up")
            cur = await con.execute(
                "INSERT INTO nodes (name, cred_hash, host, created_at) VALUES (?, ?, ?, ?)",
                (host.hostname, token_hash(credential), msgspec.json.encode(host).decode(), now),
            )
            assert cur.lastrowid is not None
            node_id = cur.lastrowid
            await con.execute("DELETE FROM enroll_tokens WHERE uses_left <= 0 OR expires_at <= ?", (now,))
        st = NodeState(node_id, host.hostname, "", [], now, None, host, offline_reason="enrolling")
        self.nodes[node_id] = st
        log.info("node %d enrolled (hostname %s)", node_id, host.hostname)
        self.bus.publish(None, NodeUpdated(node=st.info()))
        if ref is not None:
            self._forget_unwelcomed(now)
            self._unwelcomed[ref] = Unwelcomed(node_id, token_hash(token), token_hash(credential), now)
            self._unwelcomed_ref[node_id] = ref
        return st, credential, False

    async def _enroll_again(self, ref: bytes, token: bytes, credential: str, now: float) -> NodeState | None:
        """The node an agent enrolled moments ago with this token and enroll id, if no hello has used
        its credential since: it now has `credential` instead."""
        prior = self._unwelcomed.get(ref)
        if prior is None or prior.token_hash != token or now - prior.at > ENROLL_RETRY_WINDOW:
            return None
        st = self.nodes.get(prior.node_id)
        if st is None:
            return None
        cred = token_hash(credential)
        changed = await self.db.execute(
            "UPDATE nodes SET cred_hash = ? WHERE id = ? AND cred_hash = ?", (cred, st.id, prior.cred_hash)
        )
        if changed != 1:
            return None  # deleted meanwhile
        prior.cred_hash = cred
        log.info("node %d: its agent enrolled again for the welcome it missed; a new credential", st.id)
        return st

    def _forget_unwelcomed(self, now: float) -> None:
        """Drop enrollments past the retry window, oldest first (the dict keeps insertion order)."""
        while self._unwelcomed:
            ref, first = next(iter(self._unwelcomed.items()))
            if now - first.at <= ENROLL_RETRY_WINDOW:
                return
            del self._unwelcomed[ref]
            self._unwelcomed_ref.pop(first.node_id, None)

    async def attach(self, st: NodeState, link: AgentLink, host: HostFacts, spool_dropped: int) -> None:
        """Mark the node online on this link; an older link for the same node is closed."""
        old, st.link = st.link, link
        # Before any await: the watchdog must not find the new link with the old one's silence.
        st.last_frame = time.monotonic()
        st.last_seen = time.time()
        if old is not None and old is not link:
            log.info("node %d: newer connection replaces the old one", st.id)
            await old.close(CloseCode.REPLACED, "replaced by a newer connection for this node")
        st.offline_reason = None
        st.clock_skewed = False
        st.spool_dropped = spool_dropped
        changed_host = st.host != host
        st.host = host
        self._attached[st.id] = (msgspec.json.encode(host).decode(), spool_dropped, st.last_seen)
        if old is None or isinstance(old, RemoteLink):  # the other cores learn it is here now
            log.info("node %d online", st.id)
            self.bus.publish(st.id, NodeStatus(node_id=st.id, online=True, last_seen=st.last_seen))
        if changed_host:
            self.bus.publish(st.id, NodeUpdated(node=st.info(with_latest=False)))

    async def detach(self, st: NodeState, link: AgentLink, reason: str = "connection closed") -> None:
        """The link ended (reason says how); the node goes offline only if this was its current link."""
        if st.link is not link:
            return
        st.link = None
        if st.clock_skewed:
            reason += "; its last samples were rejected: the agent's clock is off"
        st.offline_reason = reason
        self._detached.add(st.id)
        log.info("node %d offline: %s", st.id, reason)
        self.bus.publish(
            st.id, NodeStatus(node_id=st.id, online=False, last_seen=st.last_seen, reason=reason)
        )

    def seen(self, st: NodeState) -> None:
        st.last_frame = time.monotonic()
        st.last_seen = time.time()

    async def watchdog(self, timeout_for: Callable[[float], float]) -> int:
        """Take offline every node whose agent fell silent for its heartbeat timeout; returns how many.

        One sweep a tick over the online nodes replaces a receive timer per frame.
        """
        now = time.monotonic()
        if self._swept:
            # A sweep that comes late measures the core's own backlog: an overloaded loop reads the
            # frames of live agents as late, and closing them for it (28,000 closes in one 45 s window
            # at 5,000 agents) only brought their reconnects on top. That lateness is forgiven for as
            # long again after it.
            gap = now - self._swept
            self._lag = max(gap - WATCHDOG_EVERY, self._lag - gap, 0.0)
        self._swept = now
        grace = self._lag
        silent = [
            st
            for st in self.nodes.values()
            # Another core's node is its core's to watch; it is gone when its ownership expires.
            if st.here and not st.held and now - st.last_frame > timeout_for(st.interval or 1.0) + grace
        ]
        closed = 0
        for st in silent:
            link = st.link
            if link is None:  # an earlier detach in this sweep let another task in
                continue
            # Measured again: each close below waits on its socket, and frames read meanwhile
            # (a busy core's backlog) show a node alive that looked silent at the start.
            silent_for = time.monotonic() - st.last_frame
            if st.held or silent_for <= timeout_for(st.interval or 1.0) + grace:
                continue
            log.warning("node %d silent for %.1fs, closing", st.id, silent_for)
            # Offline first: a dead peer never answers the close handshake started next.
            await self.detach(st, link, f"heartbeat timeout: nothing heard for {silent_for:.0f} s")
            await link.close(CloseCode.TIMEOUT, "heartbeat timeout")
            closed += 1
        return closed

    async def flush(self) -> None:
        """Write what hellos and goodbyes changed since the last flush, in one transaction."""
        if not (self._attached or self._detached) or self.db.closed:
            return
        attached, self._attached = self._attached, {}
        detached, self._detached = self._detached, set()
        seen = [(nid, st.last_seen) for nid in detached if (st := self.nodes.get(nid)) is not None]
        try:
            async with self.db.transaction() as con:
                await execute_values(
                    con,
                    "UPDATE nodes SET host = v.column2, spool_dropped = v.column3, last_seen = v.column4 "
                    "FROM (VALUES {values}) AS v WHERE nodes.id = v.column1",
                    [(nid, *row) for nid, row in attached.items()],
                )
                await execute_values(
                    con,
                    "UPDATE nodes SET last_seen = v.column2 FROM (VALUES {values}) AS v WHERE nodes.id = v.column1",
                    seen,
                )
        except BaseException:
            # Written next time, unless a newer hello or goodbye has taken their place meanwhile.
            self._attached = {**attached, **self._attached}
            self._detached |= detached
            raise

    async def persist_last_seen(self) -> None:
        await self.flush()
        rows = [(st.id, st.last_seen) for st in self.nodes.values() if st.here]
        if rows:
            async with self.db.transaction() as con:
                await execute_values(
                    con,
                    "UPDATE nodes SET last_seen = v.column2 FROM (VALUES {values}) AS v WHERE nodes.id = v.column1",
                    rows,
                )

    async def update(
        self, node_id: int, name: str | None, group: str | None, tags: list[str] | None
    ) -> NodeState | None:
        st = await self.find(node_id)
        if st is None:
            return None
        if name is not None:
            st.name = name
        if group is not None:
            st.group = group
        if tags is not None:
            st.tags = sorted(set(tags))
        await self.db.execute(
            "UPDATE nodes SET name = ?, grp = ?, tags = ? WHERE id = ?",
            (st.name, st.group, json.dumps(st.tags), node_id),
        )
        self.bus.publish(node_id, NodeUpdated(node=st.info(with_latest=False)))
        return st

    async def delete(self, node_id: int) -> bool:
        """Forget the node, its samples and its credential; a connected agent is cut off."""
        await self.find(node_id)
        st = self.nodes.pop(node_id, None)
        if st is None:
            return False
        self._unwelcomed.pop(self._unwelcomed_ref.pop(node_id, b""), None)
        await self.db.execute("DELETE FROM nodes WHERE id = ?", (node_id,))
        await self.store.delete_node(node_id)
        if st.link is not None:
            link, st.link = st.link, None
            await link.close(CloseCode.UNAUTHORIZED, "node was deleted")
        self.bus.publish(None, NodeRemoved(node_id=node_id))
        log.info("node %d deleted; its credential is revoked", node_id)
        return True
