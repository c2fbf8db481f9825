"""Docker and Podman containers through the engine's API socket, read-only: a background poll keeps
the last list, and each sample takes it when it is new."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple
from urllib.parse import urlencode

import msgspec

from servermanager.agent.rates import RateTracker
from servermanager.common.metrics import (
    MAX_CONTAINER_IMAGE,
    MAX_CONTAINER_NAME,
    MAX_CONTAINERS,
    ContainerInfo,
)
from servermanager.common.settings import SettingsError

log = logging.getLogger(__name__)

# Where the engines listen by default: Docker's socket (also Podman's with podman-docker), then
# rootful Podman's own.
DEFAULT_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock")
MAX_RESPONSE = 8 << 20  # bytes of one JSON answer at most: a list of a few hundred containers
_ENABLED: dict[str, bool | str] = {
    "auto": "auto",
    "true": True,
    "on": True,
    "yes": True,
    "false": False,
    "off": False,
    "no": False,
}


class ContainersSettings(msgspec.Struct, kw_only=True):
    """The [containers] table: Docker or Podman containers through the engine's API socket
    (env SM_AGENT_CONTAINERS_<KEY>). Read-only: only GET requests are ever made."""

    enabled: bool | str = "auto"
    socket: str = ""
    interval: float = 10.0
    max_containers: int = 100
    max_concurrent: int = 8
    timeout: float = 5.0

    __doc_fields__ = {
        "enabled": "list containers: true, false, or auto (when an engine's socket exists)",
        "socket": "the engine's API socket (unix:///path or /path); empty: /var/run/docker.sock, "
        "then /run/podman/podman.sock",
        "interval": "seconds between two polls of the engine; samples in between carry no list",
        "max_containers": f"containers listed at most (running ones first), 1 to {MAX_CONTAINERS}",
        "max_concurrent": "stats requests in flight at once",
        "timeout": "seconds one request to the engine may take; a slow container is left without stats",
    }

    def validate(self) -> None:
        raw = self.enabled
        key = str(raw).strip().lower() if not isinstance(raw, bool) else ("true" if raw else "false")
        if key not in _ENABLED:
            raise SettingsError(f"setting containers.enabled: expected true, false or auto, got {raw!r}")
        self.enabled = _ENABLED[key]
        sock = self.socket.strip()
        if sock.startswith("unix://"):
            sock = sock[len("unix://") :]
        if sock and not os.path.isabs(sock):
            raise SettingsError(
                f"setting containers.socket: {self.socket!r} is not an absolute path or unix:///path"
            )
        if sock and os.path.exists(sock) and not stat.S_ISSOCK(os.stat(sock).st_mode):
            raise SettingsError(f"setting containers.socket: {sock} exists but is not a socket")
        self.socket = sock
        if not 1 <= self.interval <= 3600:
            raise SettingsError(f"setting containers.interval must be 1s to 1h (got {self.interval:g}s)")
        if not 1 <= self.max_containers <= MAX_CONTAINERS:
            raise SettingsError(
                f"setting containers.max_containers must be 1 to {MAX_CONTAINERS} (got {self.max_containers})"
            )
        if not 1 <= self.max_concurrent <= 64:
            raise SettingsError("setting containers.max_concurrent must be 1 to 64")
        if not 0 < self.timeout <= 60:
            raise SettingsError("setting containers.timeout must be above 0 and at most 60s")

    def sockets(self) -> tuple[str, ...]:
        return (self.socket,) if self.socket else DEFAULT_SOCKETS

    def watcher(self) -> ContainerWatcher | None:
        return None if self.enabled is False else ContainerWatcher(self)


class EngineError(Exception):
    """The engine refused or failed a request; the message says which and why."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Body:
    """A response body as it arrives: `readany()` gives the next bytes, b"" at the end. Chunked
    transfer encoding (what engines use for logs and most answers) is undone here."""

    def __init__(self, reader: asyncio.StreamReader, length: int | None, chunked: bool) -> None:
        self.reader = reader
        self.left = length  # bytes still to come with Content-Length; None: to the end or chunked
        self.chunked = chunked
        self.chunk_left = 0
        self.done = False

    async def readany(self) -> bytes:
        if self.done:
            return b""
        if self.chunked:
            if self.chunk_left == 0:
                line = await self.reader.readline()
                try:
                    self.chunk_left = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    raise EngineError(f"bad chunk header {line[:40]!r}") from None
                if self.chunk_left == 0:
                    self.done = True
                    return b""
            data = await self.reader.read(min(self.chunk_left, 65536))
            if not data:
                raise EngineError("the engine closed the connection mid-answer")
            self.chunk_left -= len(data)
            if self.chunk_left == 0:
                await self.reader.readexactly(2)  # the CRLF after each chunk
            return data
        want = 65536 if self.left is None else min(self.left, 65536)
        data = await self.reader.read(want) if want else b""
        if self.left is not None:
            self.left -= len(data)
            if self.left == 0:
                self.done = True
        if not data:
            self.done = True
        return data

    async def read(self, limit: int) -> bytes:
        """The whole body, or EngineError past `limit` bytes."""
        out = bytearray()
        while chunk := await self.readany():
            out += chunk
            if len(out) > limit:
                raise EngineError(f"answer over {limit} bytes")
        return bytes(out)


class Engine:
    """A read-only client of the Docker Engine API (which Podman serves too) on a unix socket.

    HTTP/1.1 GET only, a connection per request, from the standard library: the agent needs no
    HTTP client library for a handful of local requests (an HTTP library costs it ~8 MB of RSS).
    """

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout

    async def _open(self, path: str, params: dict[str, str] | None) -> tuple[asyncio.StreamWriter, int, Body]:
        target = path + ("?" + urlencode(params) if params else "")
        try:
            reader, writer = await asyncio.open_unix_connection(self.path, limit=1 << 16)
        except OSError as exc:
            raise EngineError(f"cannot reach the engine at {self.path}: {exc.strerror or exc}") from None
        try:
            # The host part means nothing on a unix socket; "docker" is what the Docker CLI sends.
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: servermanager-agent\r\n\r\n".encode()
            )
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            status = int(parts[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            IndexError,
            OSError,
        ) as exc:
            writer.close()
            raise EngineError(f"{path}: not an HTTP answer ({exc!r})"[:300]) from None
        except BaseException:
            writer.close()
            raise
        length = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        return writer, status, Body(reader, int(length) if length and length.isdigit() else None, chunked)

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET `path` (unversioned: the engine's own API version), decoded JSON, or EngineError."""
        writer = None
        try:
            async with asyncio.timeout(self.timeout):
                writer, status, body = await self._open(path, params)
                data = await body.read(MAX_RESPONSE)
        except TimeoutError:
            raise EngineError(f"{path}: no answer within {self.timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise EngineError(f"{path}: the connection failed ({exc!r})"[:300]) from None
        finally:
            if writer is not None:
                writer.close()
        if status != 200:
            raise EngineError(f"{path}: HTTP {status} {_message(data)}", status)
        try:
            return msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise EngineError(f"{path}: not JSON ({exc})") from None

    @contextlib.asynccontextmanager
    async def stream(self, path: str, params: dict[str, str]) -> AsyncIterator[Body]:
        """The body of a streaming GET (logs), opened within the timeout and then read freely."""
        try:
            async with asyncio.timeout(self.timeout):
                writer, status, body = await self._open(path, params)
        except TimeoutError:
            raise EngineError(f"{path}: no answer within {self.timeout:g}s") from None
        try:
            if status != 200:
                raise EngineError(_message(await body.read(MAX_RESPONSE)), status)
            yield body
        finally:
            writer.close()

    async def close(self) -> None:
        """Nothing stays open between requests."""


def _message(body: bytes) -> str:
    """The engine's {"message": ...} error text, or the start of the body."""
    with contextlib.suppress(msgspec.DecodeError, AttributeError, TypeError):
        msg = msgspec.json.decode(body).get("message")
        if isinstance(msg, str):
            return msg[:300]
    return body[:300].decode("utf-8", "replace")


# ---------------------------------------------------------------- parsing (the Engine API's JSON)


class Listed(NamedTuple):
    id: str
    name: str
    image: str
    state: str


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_list(items: Any) -> list[Listed]:
    """GET /containers/json?all=1: id, name (without the leading /), image and state of each."""
    if not isinstance(items, list):
        raise EngineError("/containers/json: not a list")
    out = []
    for c in items:
        if not isinstance(c, dict) or not isinstance(c.get("Id"), str):
            continue
        names = c.get("Names") or []
        name = names[0] if names and isinstance(names[0], str) else c["Id"][:12]
        image = c["Image"] if isinstance(c.get("Image"), str) else ""
        state = c["State"] if isinstance(c.get("State"), str) else ""
        out.append(
            Listed(
                c["Id"], _cut(name.lstrip("/"), MAX_CONTAINER_NAME), _cut(image, MAX_CONTAINER_IMAGE), state
            )
        )
    return out


class Stats(NamedTuple):
    """What one stats answer says, as counters; the watcher turns them into rates."""

    cpu_total: int | None  # ns of CPU the container used, ever
    system: int | None  # ns of CPU the host used, ever (the Docker formula's denominator)
    online_cpus: int
    mem_used: int | None
    mem_limit: int | None
    net_rx: int | None
    net_tx: int | None
    blk_read: int | None
    blk_write: int | None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def parse_stats(obj: Any) -> Stats:
    """GET /containers/{id}/stats?stream=false&one-shot=true, read the way the Docker CLI reads it."""
    if not isinstance(obj, dict):
        raise EngineError("stats: not an object")
    cpu = obj.get("cpu_stats") or {}
    usage = cpu.get("cpu_usage") or {}
    total = _int(usage.get("total_usage"))
    system = _int(cpu.get("system_cpu_usage"))
    ncpu = _int(cpu.get("online_cpus")) or len(usage.get("percpu_usage") or []) or 1
    mem = obj.get("memory_stats") or {}
    used = _int(mem.get("usage"))
    if used is not None:
        # The CLI's "MEM USAGE": the page cache is left out, which the kernel reclaims at will
        # (inactive_file on cgroup v2, total_inactive_file on v1, cache on old engines).
        extra = mem.get("stats") or {}
        for key in ("inactive_file", "total_inactive_file", "cache"):
            cache = _int(extra.get(key))
            if cache is not None:
                used = max(0, used - cache)
                break
    limit = _int(mem.get("limit"))
    rx = tx = None
    nets = obj.get("networks")
    if isinstance(nets, dict):
        for n in nets.values():
            if isinstance(n, dict):
                r, t = _int(n.get("rx_bytes")), _int(n.get("tx_bytes"))
                rx = (rx or 0) + (r or 0)
                tx = (tx or 0) + (t or 0)
    rd = wr = None
    blk = (obj.get("blkio_stats") or {}).get("io_service_bytes_recursive")
    if isinstance(blk, list):
        rd = wr = 0
        for e in blk:
            if not isinstance(e, dict):
                continue
            op = str(e.get("op", "")).lower()  # "Read" on cgroup v1, "read" on v2
            v = _int(e.get("value")) or 0
            if op == "read":
                rd += v
            elif op == "write":
                wr += v
    return Stats(total, system, ncpu, used, limit or None, rx, tx, rd, wr)


def parse_health(obj: Any) -> str | None:
    """GET /containers/{id}/json: State.Health.Status, None where the container has no healthcheck."""
    if not isinstance(obj, dict):
        return None
    health = (obj.get("State") or {}).get("Health")
    status = health.get("Status") if isinstance(health, dict) else None
    return status[:32] if isinstance(status, str) and status else None


# ---------------------------------------------------------------- the poll


class ContainerWatcher:
    """Polls the engine every `interval` in the agent's event loop; `take()` (any thread) hands the
    newest list once. A slow or stuck engine delays only the next list, never a sample."""

    def __init__(self, settings: ContainersSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.engine: Engine | None = None
        self.note: str | None = None  # why there is no list (no socket, engine error), for logs
        self.polls = 0  # completed polls, listed or not; tests wait on it
        self.found = False  # an engine's socket was seen since the start (one gone is then news)
        self._rates = RateTracker(clock)
        self._cpu: dict[str, tuple[int, int]] = {}  # id -> (container ns, system ns) last seen
        self._lock = threading.Lock()
        self._fresh: list[ContainerInfo] | None = None
        self.latest: list[ContainerInfo] | None = None

    def take(self) -> list[ContainerInfo] | None:
        """The list of a poll that finished since the last take, else None."""
        with self._lock:
            out, self._fresh = self._fresh, None
        return out

    def _find(self) -> Engine | None:
        if self.engine is not None and os.path.exists(self.engine.path):
            return self.engine
        for path in self.settings.sockets():
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    self.engine = Engine(path, self.settings.timeout)
                    self.found = True
                    log.info("containers: engine socket %s", path)
                    return self.engine
        return None

    def _say(self, note: str | None, expected: bool = False) -> None:
        """Log a change of state once. `expected`: nothing is wrong (no engine here, and
        `enabled = "auto"` asked for containers only where one runs), so not a warning."""
        if note != self.note:
            level = logging.INFO if note is None or expected else logging.WARNING
            log.log(level, "containers: %s", note or "engine answering again")
        self.note = note

    async def run(self) -> None:
        """Poll until cancelled."""
        try:
            while True:
                started = time.monotonic()
                await self.poll()
                await asyncio.sleep(max(0.0, self.settings.interval - (time.monotonic() - started)))
        finally:
            if self.engine is not None:
                await self.engine.close()

    async def poll(self) -> list[ContainerInfo] | None:
        """One poll: the list (also kept for take()), or None with `note` saying why not."""
        try:
            engine = self._find()
            if engine is None:
                self._say(
                    f"no engine socket at {' or '.join(self.settings.sockets())}",
                    expected=self.settings.enabled == "auto" and not self.found,
                )
                return None
            try:
                listed = parse_list(await engine.get("/containers/json", {"all": "1"}))
            except EngineError as exc:
                self._say(str(exc))
                return None
            self._say(None)
            # Running ones first, then by name: the cut at max_containers keeps what matters.
            listed.sort(key=lambda c: (c.state != "running", c.name))
            listed = listed[: self.settings.max_containers]
            gate = asyncio.Semaphore(self.settings.max_concurrent)
            infos = await asyncio.gather(*(self._one(engine, c, gate) for c in listed))
            # Forget containers that went away, so a host churning short-lived ones cannot grow memory.
            keep = {c.id for c in listed}
            self._cpu = {k: v for k, v in self._cpu.items() if k in keep}
            self._rates.retain((cid, w) for cid in keep for w in ("rx", "tx", "r", "w"))
            with self._lock:
                self._fresh = self.latest = list(infos)
            return self.latest
        finally:
            self.polls += 1

    async def _one(self, engine: Engine, c: Listed, gate: asyncio.Semaphore) -> ContainerInfo:
        base = ContainerInfo(name=c.name, image=c.image, state=c.state)
        if c.state != "running":
            self._cpu.pop(c.id, None)
            return base
        async with gate:
            stats_call = engine.get(f"/containers/{c.id}/stats", {"stream": "false", "one-shot": "true"})
            results = await asyncio.gather(
                stats_call, engine.get(f"/containers/{c.id}/json"), return_exceptions=True
            )
        raw_stats, inspect = results
        health = None if isinstance(inspect, BaseException) else parse_health(inspect)
        if isinstance(raw_stats, BaseException):
            log.debug("containers: stats of %s: %s", c.name, raw_stats)
            return msgspec.structs.replace(base, health=health)
        try:
            s = parse_stats(raw_stats)
        except EngineError:
            return msgspec.structs.replace(base, health=health)
        return ContainerInfo(
            name=c.name,
            image=c.image,
            state=c.state,
            health=health,
            cpu_pct=self._cpu_pct(c.id, s),
            mem_used=s.mem_used,
            mem_limit=s.mem_limit,
            net_rx_bps=self._rate(c.id, "rx", s.net_rx),
            net_tx_bps=self._rate(c.id, "tx", s.net_tx),
            blk_read_bps=self._rate(c.id, "r", s.blk_read),
            blk_write_bps=self._rate(c.id, "w", s.blk_write),
        )

    def _cpu_pct(self, cid: str, s: Stats) -> float | None:
        """Docker's formula, (container delta / system delta) x online CPUs x 100, between this
        poll and the last (one-shot stats carry no previous reading of their own)."""
        if s.cpu_total is None or s.system is None:
            return None
        prev = self._cpu.get(cid)
        self._cpu[cid] = (s.cpu_total, s.system)
        if prev is None:
            return None
        d_cpu, d_sys = s.cpu_total - prev[0], s.system - prev[1]
        if d_cpu < 0 or d_sys <= 0:
            return None  # restarted container (counter reset), or the same instant twice
        return round(d_cpu / d_sys * s.online_cpus * 100.0, 1)

    def _rate(self, cid: str, what: str, value: int | None) -> float | None:
        if value is None:
            return None
        r = self._rates.rate((cid, what), value)
        return None if r is None else float(round(r))
