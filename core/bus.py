"""In-process event bus: each live event is encoded once and fanned out to the subscribers allowed to see it."""

from __future__ import annotations

import asyncio
import logging

from servermanager.common.protocol import Frame, encode
from servermanager.core.auth import Role

log = logging.getLogger(__name__)


class Subscription:
    """One subscriber's bounded queue; a subscriber that falls too far behind is marked lagging."""

    def __init__(self, bus: Bus, maxsize: int, role: Role) -> None:
        self._bus = bus
        # Who is listening: an event is offered only if this role could fetch it over REST. The
        # client gateway lowers or raises it when the user's role changes.
        self.role = role
        self.queue: asyncio.Queue[tuple[int | None, bytes]] = asyncio.Queue(maxsize)
        self.nodes: set[int] | None = set()  # None: every node; empty: none yet
        self.lagging = asyncio.Event()

    def wants(self, node_id: int | None) -> bool:
        return node_id is None or self.nodes is None or node_id in self.nodes

    def offer(self, node_id: int | None, data: bytes, role: Role = Role.VIEWER) -> None:
        if not self.role.allows(role) or not self.wants(node_id):
            return
        try:
            self.queue.put_nowait((node_id, data))
        except asyncio.QueueFull:
            self.lagging.set()

    def close(self) -> None:
        self._bus._subs.discard(self)


class Bus:
    """The local bus: one process is the whole cluster. RedisBus (core/redisbus.py) extends it to several."""

    def __init__(self, queue_size: int = 20_000) -> None:
        self._subs: set[Subscription] = set()
        self.queue_size = queue_size
        self.remote = False  # events also go to other cores (forward)

    @property
    def problem(self) -> str | None:
        """Why the bus cannot reach the other cores right now (health shows it); None: all is well."""
        return None

    async def start(self) -> None:
        """Connect to whatever carries events between cores; the local bus has nothing to connect."""

    async def stop(self) -> None:
        pass

    def subscribe(self, role: Role) -> Subscription:
        sub = Subscription(self, self.queue_size, role)
        self._subs.add(sub)
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, node_id: int | None, frame: Frame, role: Role = Role.VIEWER) -> None:
        """node_id scopes the event to subscribers of that node (None reaches every node's);
        role is what REST asks to fetch the same thing, and subscribers below it never get it."""
        if not self._subs and not self.remote:
            return
        data = encode(frame)
        self.fan_out(node_id, data, role)
        self.forward(node_id, data, role)

    def fan_out(self, node_id: int | None, data: bytes, role: Role) -> None:
        """Offer one encoded event to this process's subscribers."""
        for sub in tuple(self._subs):
            sub.offer(node_id, data, role)

    def forward(self, node_id: int | None, data: bytes, role: Role) -> None:
        """Send one encoded event to the other cores; the local bus has none."""
