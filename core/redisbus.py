"""The Redis bus: live events published on any core reach the subscribers of every core of the cluster."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
import redis.asyncio as aioredis
from redis import utils as redis_utils
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from servermanager.common.backoff import Backoff
from servermanager.common.tasks import stop_tasks
from servermanager.core.auth import Role
from servermanager.core.bus import Bus
from servermanager.core.settings import redact_url

log = logging.getLogger(__name__)

# Events published while the sender was busy go out as one PUBLISH: at thousands of samples a
# second that is one round trip per loop turn, not one per event.
MAX_BATCH = 2000
# How long the sender gathers events before a PUBLISH. A PUBLISH costs a round trip through redis-py,
# and every core, this one included, receives it back, so the bus's CPU is mostly per message, and
# other cores see events up to that much later. 25 ms took a sixth off each core of a pair while
# redis-py's push handler made a string of every message; since that is gone (_as_received), 10 ms
# costs each core of a pair about 2 points of a CPU at 1,000 agents and takes 14 ms off the push p99
# of what crosses cores, and a pair held to 40 % of a CPU per core holds more agents with it
# (docs/benchmarks.md, "The bus's push handler, and an even split").
GATHER = 0.01
# Sockets to Redis per core, and how long a call waits for one of them before it fails (as if
# Redis did not answer): the listener and the inbox reader hold one each, the rest are short calls.
MAX_CONNECTIONS = 64
POOL_WAIT = 10.0
# Held back while Redis is unreachable at most this many; live events are news, so older ones go.
MAX_BACKLOG = 20_000
# The protocol a URL without `?protocol=` gets: 3 since redis-py 8, 2 before (and no constant).
_DEFAULT_RESP = int(getattr(redis_utils, "DEFAULT_RESP_VERSION", 2))

# One Redis message: the origin core's id, a NUL, then msgpack [(node_id, role, encoded frame), ...].
# The id comes first so that a core drops its own messages (every subscriber gets them back)
# without decoding them.
_Events = list[tuple[int | None, str, bytes]]
_decode_events = msgspec.msgpack.Decoder(_Events)
_encode = msgspec.msgpack.Encoder()


async def _as_received(message: list[bytes]) -> list[bytes]:
    """The pub/sub handler for RESP3 push messages: the message as it came.

    redis-py's own (8.1) builds `"Push response: " + str(message)` for a debug line on every
    message, whatever the log level (redis-py #4230, fixed after 8.1): a repr of every batch of
    events, a third of the bus's CPU (docs/benchmarks.md, "The bus's push handler, and an even split").
    """
    return message


# What a core with events from another does before offering them to its subscribers (the node
# registry follows remote nodes): origin, node id, encoded frame.
RemoteHook = Callable[[str, int | None, bytes], None]


class RedisBus(Bus):
    """Bus whose events also go through one Redis pub/sub channel to the other cores.

    Each event is encoded once (Bus.publish), offered to this core's subscribers at once, and sent
    to Redis by one sender task; one listener task per core receives the others' events and fans
    them out locally with the same role and node filters. A core skips its own events on the
    channel, so nothing is delivered twice. Pub/sub, not a stream: a live event missed in a blip
    is replaced by the next one within a second, and on reconnect each core announces its nodes
    again (see Cluster), so a stream's replay would only deliver stale samples late.
    """

    def __init__(self, url: str, prefix: str, core_id: str, queue_size: int = 20_000) -> None:
        super().__init__(queue_size)
        self.remote = True
        self.url = url
        self.prefix = prefix
        self.core_id = core_id
        self.channel = f"{prefix}:events"
        self.control = f"{prefix}:control"  # notices: "rule:<id>", "silences:0"
        self._origin = core_id.encode() + b"\0"
        # No retries inside redis-py: a failed call says so at once, and the loops here back off.
        # A blocking pool: every agent that connects or goes claims or frees its key, and when
        # hundreds do at once (a core died, a network blip) the calls wait their turn for one of
        # MAX_CONNECTIONS sockets. redis-py's default pool refuses the 101st concurrent call with
        # "Too many connections", which read as Redis lost: the bus went down, leadership flapped.
        self.redis = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=MAX_CONNECTIONS,
                timeout=POOL_WAIT,
                socket_connect_timeout=2.0,
                socket_timeout=10.0,
                health_check_interval=2,
                retry=Retry(NoBackoff(), 0),
            )
        )
        self.down_since: float | None = time.time()  # until the first connection
        self.reason = "not connected yet"
        self.on_remote: RemoteHook | None = None
        self.on_notice: Callable[[str, int], None] | None = None  # another core's notice
        self._notices: list[bytes] = []
        self.on_up: list[Callable[[], Awaitable[None]]] = []  # after each (re)connection
        self.on_down: list[Callable[[], None]] = []
        self.dropped = 0  # events not sent to the other cores (Redis unreachable, backlog full)
        self._out: list[tuple[int | None, str, bytes]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.up = asyncio.Event()
        self._ever_up = False
        self._said = False  # the first failed connection was logged

    @property
    def _resp3(self) -> bool:
        """Whether pub/sub messages come as RESP3 pushes (redis-py 8's default; a URL's `?protocol=2`
        says otherwise), the only kind that goes through a push handler."""
        proto = self.redis.connection_pool.connection_kwargs.get("protocol") or _DEFAULT_RESP
        return int(proto) == 3

    @property
    def where(self) -> str:
        return redact_url(self.url)

    @property
    def problem(self) -> str | None:
        if self.down_since is None:
            return None
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.down_since))
        return f"bus: Redis at {self.where} unreachable since {since} ({self.reason}); serving this core's own agents and clients only"

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="bus-listen"),
            asyncio.create_task(self._send(), name="bus-send"),
        ]

    async def stop(self) -> None:
        # stop_tasks: redis-py's writes go through wait_for(), which can lose a cancel (3.11).
        tasks, self._tasks = self._tasks, []
        await stop_tasks(*tasks)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()

    # ------------------------------------------------------------ connection state

    def mark_down(self, exc: BaseException) -> None:
        """Any task that finds Redis gone says so here; the listener reconnects."""
        self.reason = str(exc) or type(exc).__name__
        if self.down_since is not None:
            if not self._ever_up and not self._said:
                self._said = True  # once at start, not on every retry
                log.warning(
                    "bus: cannot reach Redis at %s (%s); serving this core's own agents and clients, "
                    "retrying",
                    self.where,
                    self.reason,
                )
            return
        self.down_since = time.time()
        self.up.clear()
        log.warning(
            "bus: lost Redis at %s (%s); each core serves its own agents and clients until it is back",
            self.where,
            self.reason,
        )
        for hook in self.on_down:
            hook()

    async def _mark_up(self) -> None:
        was = self.down_since
        self.down_since = None
        self._ever_up = True
        self.up.set()
        if was is not None:
            log.info("bus: connected to Redis at %s as core %s", self.where, self.core_id)
        for hook in self.on_up:
            try:
                await hook()
            except (RedisError, OSError) as exc:
                self.mark_down(exc)
                return

    # ------------------------------------------------------------ events

    def forward(self, node_id: int | None, data: bytes, role: Role) -> None:
        if self.down_since is not None:
            self.dropped += 1
            return
        if len(self._out) >= MAX_BACKLOG:
            self.dropped += 1
            return
        self._out.append((node_id, role.value, data))
        self._wake.set()

    def notice(self, kind: str, ident: int) -> None:
        """Tell the other cores that something they keep in memory changed in the database."""
        if self.down_since is not None:
            return  # each core reloads rules and silences when the bus is back (core/app.py)
        self._notices.append(self._origin + f"{kind}:{ident}".encode())
        self._wake.set()

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(GATHER)
            self._wake.clear()
            while self._notices:
                try:
                    await self.redis.publish(self.control, self._notices[0])
                    self._notices.pop(0)
                except (RedisError, OSError) as exc:
                    self._notices.clear()
                    self.mark_down(exc)
            while self._out:
                batch, self._out = self._out[:MAX_BATCH], self._out[MAX_BATCH:]
                try:
                    await self.redis.publish(self.channel, self._origin + _encode.encode(batch))
                except (RedisError, OSError) as exc:
                    self.dropped += len(batch) + len(self._out)
                    self._out = []
                    self.mark_down(exc)

    async def _listen(self) -> None:
        backoff = Backoff(0.2, 5.0)
        while True:
            pubsub = self.redis.pubsub(push_handler_func=_as_received if self._resp3 else None)
            try:
                await pubsub.subscribe(self.channel, self.control)
                await self._mark_up()
                backoff.reset()
                while self.down_since is None:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is None or msg["type"] != "message":
                        continue
                    if msg["channel"] == self.control.encode():
                        self._noticed(msg["data"])
                    else:
                        self._received(msg["data"])
            except (RedisError, OSError) as exc:
                self.mark_down(exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            # Connections the outage broke would each fail once more after the reconnect.
            with contextlib.suppress(RedisError, OSError):
                await self.redis.connection_pool.disconnect()
            await asyncio.sleep(backoff.next())

    def _noticed(self, raw: bytes) -> None:
        if raw.startswith(self._origin) or self.on_notice is None:
            return
        kind, _, ident = raw.partition(b"\0")[2].decode(errors="replace").partition(":")
        if ident.isdigit():
            self.on_notice(kind, int(ident))

    def _received(self, raw: bytes) -> None:
        if raw.startswith(self._origin):
            return  # ours: offered locally when published
        head, sep, body = raw.partition(b"\0")
        try:
            if not sep:
                raise msgspec.ValidationError("no origin")
            origin = head.decode()
            events = _decode_events.decode(body)
        except (msgspec.ValidationError, UnicodeDecodeError) as exc:
            log.warning("bus: ignored a malformed message on %s: %s", self.channel, exc)
            return
        hook = self.on_remote
        for node_id, role, data in events:
            if hook is not None:
                hook(origin, node_id, data)
            try:
                needed = Role(role)
            except ValueError:
                continue
            self.fan_out(node_id, data, needed)
