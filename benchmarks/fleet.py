"""A fleet simulator: N virtual agents in one process, speaking the real /ws/agent protocol.

Each virtual agent opens its own WebSocket to the core (aiohttp client, one shared session),
enrolls with a shared enrollment token, keeps the credential the core hands back in memory and
presents it on every reconnect. It then sends one `samples` frame per interval holding one
plausible, slowly varying reading built from `common.metrics` structs, answers the core's pings, and
counts acks. Like the real agent it sends no `ping` of its own while it streams (a samples frame
every interval already proves it alive); `--ping-interval` adds pings for stress runs. Start times
are staggered evenly over the interval so the load on the core is smooth rather than bursty.

A sample's `ts` is the wall-clock time at which it was sent, so a client subscribed to the core
can compute push latency as `receipt_time - sample.ts`.

Library use (no side effects on import, no module-level state):

    async with Fleet("http://127.0.0.1:8760", token, count=100, interval=1.0) as fleet:
        await asyncio.sleep(10)
        print(fleet.samples_sent, fleet.samples_acked, fleet.nodes)

Command line (JSON lines on stdout):

    python -m benchmarks.fleet --core http://127.0.0.1:8760 --token TOKEN --count 100 \
        --interval 1 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import resource
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
import msgspec
from aiohttp import WSMsgType

from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from servermanager.common.backoff import backoff_delay
from servermanager.core.runtime import new_event_loop

SIM_AGENT_VERSION = "sim-0.1"
# Close codes after which a virtual agent gives up instead of reconnecting.
_FATAL_CLOSE = {int(p.CloseCode.UNAUTHORIZED), int(p.CloseCode.UNSUPPORTED_PROTOCOL)}
# Bounds on memory: latency samples kept per statistic, and unacked samples tracked per agent.
_RESERVOIR = 200_000
_MAX_INFLIGHT = 1_000
_COUNTERS = (
    "samples_sent",
    "samples_resent",
    "samples_evicted",
    "samples_acked",
    "samples_rejected",
    "ticks_missed",
    "pings_sent",
    "pongs_received",
    "reconnects",
    "error_frames",
)


class FleetError(RuntimeError):
    """The fleet could not be brought up (enrollment refused, core unreachable, timeout)."""


class _Refused(Exception):
    """The core refused the hello: a wrong token or credential, or an unsupported protocol."""


def agent_ws_url(core_url: str) -> str:
    """http://h:p, ws://h:p (with or without the path) -> ws://h:p/ws/agent."""
    url = core_url.strip().rstrip("/")
    if "://" not in url:
        url = "ws://" + url
    scheme, rest = url.split("://", 1)
    scheme = {"http": "ws", "https": "wss"}.get(scheme.lower(), scheme.lower())
    if not rest.endswith(p.AGENT_WS_PATH):
        rest += p.AGENT_WS_PATH
    return f"{scheme}://{rest}"


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles plus max and count of `values` (None when empty)."""
    out: dict[str, float | None] = {}
    data = sorted(values)
    for q in qs:
        if not data:
            out[f"p{q:g}"] = None
            continue
        rank = max(1, math.ceil(q / 100 * len(data)))
        out[f"p{q:g}"] = data[rank - 1]
    out["max"] = data[-1] if data else None
    out["n"] = len(data)
    return out


def raise_nofile_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


class Reservoir:
    """A uniform random sample of at most `size` values (algorithm R): bounded memory, cheap percentiles."""

    def __init__(self, size: int = _RESERVOIR, seed: int | None = None) -> None:
        self.size = size
        self.seen = 0
        self.values: list[float] = []
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.size:
                self.values[j] = value

    def percentiles_ms(self) -> dict[str, float | None]:
        out = percentiles(self.values)
        out["n"] = self.seen
        return {k: (v if k == "n" or v is None else round(v * 1000, 2)) for k, v in out.items()}


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


@dataclass
class FleetStats:
    """Counters of one window (see Fleet.window_stats and total_stats); rates are per second.

    ack_latency_ms is send-to-ack time (the core acks after its commit); send_lag_ms is how late
    each send was against its slot (large values mean the simulator itself is short of CPU).
    """

    agents: int
    enrolled: int
    connected: int
    failed: int
    seconds: float
    samples_sent: int
    samples_resent: int
    samples_evicted: int
    samples_acked: int
    samples_rejected: int
    ticks_missed: int
    pings_sent: int
    pongs_received: int
    reconnects: int
    error_frames: int
    send_rate: float
    ack_rate: float
    target_rate: float
    ack_latency_ms: dict[str, float | None] = field(default_factory=dict)
    send_lag_ms: dict[str, float | None] = field(default_factory=dict)
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_FRAME_HEAD = b'{"type":"samples","samples":[{"seq":'


_PROC_NAMES = ("postgres", "nginx", "python3", "java", "node", "redis-server", "dockerd", "sshd", "systemd")


class SimAgent:
    """One virtual agent: its identity, seq counter, counts, and a metrics random walk."""

    def __init__(self, fleet: Fleet, index: int, name: str, rng: random.Random) -> None:
        self.fleet = fleet
        self.index = index
        self.name = name
        self.node_id: int | None = None
        self.credential: str | None = None
        # As the real agent: one id for all its attempts to enroll, so a lost welcome is given again.
        self.enroll_id = f"{rng.getrandbits(128):032x}"
        self.seq = 0
        self.sent = 0
        self.acked = 0
        self.rejected = 0
        self.reconnects = 0
        self.connected = False
        self.fatal: str | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.inflight: dict[int, float] = {}  # seq -> loop time sent (insertion order = oldest first)
        # seq -> the sample's ts, for every sample not acknowledged yet: resent after a reconnect, as
        # the real agent's spool does, so a core killed under load loses nothing (benchmarks.cluster).
        self.unacked: dict[int, float] = {}
        self.resend: list[int] = []  # seqs to send again first on the new connection
        # Spread the first sends of the fleet evenly over one interval.
        self.phase = index / max(1, fleet.count) * fleet.interval
        self._rng = rng
        self._init_host()

    # ------------------------------------------------------------ a plausible host

    def _init_host(self) -> None:
        r = self._rng
        self.cores = r.choice((2, 2, 4, 4, 8, 16))
        self.mem_total = r.choice((2, 4, 8, 16, 32, 64)) << 30
        self.swap_total = r.choice((0, 1 << 30, 2 << 30))
        self.disk_total = r.choice((20, 50, 100, 250, 500, 1000)) * 1_000_000_000
        self.boot_time = time.time() - r.uniform(3600, 90 * 86400)
        self.cpu = r.uniform(1, 60)
        self.load = [self.cpu / 100 * self.cores] * 3
        self.mem_used = self.mem_total * r.uniform(0.15, 0.8)
        self.swap_used = self.swap_total * r.uniform(0, 0.1)
        self.disk_used = self.disk_total * r.uniform(0.1, 0.9)
        self.procs = r.randint(80, 400)
        self.rx_total = r.randint(10**6, 10**12)
        self.tx_total = r.randint(10**6, 10**12)
        self.lo_total = r.randint(10**5, 10**9)
        self.facts = mt.HostFacts(
            hostname=self.name,
            os="Linux",
            os_version="12",
            kernel="6.1.0-sim",
            arch="x86_64",
            cpu_model="Simulated CPU",
            cpu_count=self.cores,
            mem_total=self.mem_total,
            agent_version=SIM_AGENT_VERSION,
            boot_time=self.boot_time,
        )
        # The simulator shares the machine with the core it loads: readings made ahead of time and
        # replayed in order leave the core the CPU that a random-walk step and an encode per send
        # would take (a third of the simulator's time). seq and ts stay fresh on every send.
        self._readings = [msgspec.json.encode(self.metrics()) for _ in range(self.fleet.pool)]

    def _frame(self, seq: int, ts: float) -> bytes:
        """One samples frame: a pooled reading spliced in, or a fresh one when the pool is off."""
        if not self._readings:
            return p.encode(p.Samples(samples=[mt.Sample(seq=seq, ts=ts, metrics=self.metrics())]))
        reading = self._readings[seq % len(self._readings)]
        return b"".join(
            (_FRAME_HEAD, str(seq).encode(), b',"ts":', repr(ts).encode(), b',"metrics":', reading, b"}]}")
        )

    def metrics(self) -> mt.Metrics:
        """The next reading: a bounded random walk, so series look like a real host's."""
        r = self._rng
        dt = self.fleet.interval
        self.cpu = _clamp(self.cpu + r.gauss(0, 3), 0.5, 99.0)
        per_core = [round(_clamp(self.cpu + r.gauss(0, 8), 0.0, 100.0), 1) for _ in range(self.cores)]
        inst = self.cpu / 100 * self.cores * r.uniform(0.7, 1.3)
        for i, k in enumerate((1 / 12, 1 / 60, 1 / 180)):
            self.load[i] += (inst - self.load[i]) * min(1.0, k * dt)
        self.mem_used = _clamp(
            self.mem_used + r.gauss(0, self.mem_total * 0.003), self.mem_total * 0.05, self.mem_total * 0.97
        )
        if self.swap_total:
            self.swap_used = _clamp(self.swap_used + r.gauss(0, self.swap_total * 0.001), 0, self.swap_total)
        self.disk_used = min(self.disk_total * 0.99, self.disk_used + r.uniform(0, 20_000) * dt)
        self.procs = max(40, self.procs + r.randint(-2, 2))
        rx_bps = r.expovariate(1 / 250_000)
        tx_bps = r.expovariate(1 / 120_000)
        lo_bps = r.expovariate(1 / 20_000)
        self.rx_total += int(rx_bps * dt)
        self.tx_total += int(tx_bps * dt)
        self.lo_total += int(lo_bps * dt)
        read_bps = round(r.expovariate(1 / 400_000), 1)
        write_bps = round(r.expovariate(1 / 900_000), 1)
        read_iops = round(r.expovariate(1 / 20), 1)
        write_iops = round(r.expovariate(1 / 60), 1)
        mem_used = int(self.mem_used)
        swap_used = int(self.swap_used)
        disk_used = int(self.disk_used)
        return mt.Metrics(
            cpu_pct=round(self.cpu, 1),
            cpu_per_core=per_core,
            load1=round(self.load[0], 2),
            load5=round(self.load[1], 2),
            load15=round(self.load[2], 2),
            mem_total=self.mem_total,
            mem_used=mem_used,
            mem_pct=round(mem_used / self.mem_total * 100, 1),
            swap_total=self.swap_total,
            swap_used=swap_used,
            swap_pct=round(swap_used / self.swap_total * 100, 1) if self.swap_total else 0.0,
            uptime=round(time.time() - self.boot_time, 1),
            procs=self.procs,
            disks=[
                mt.DiskUsage(
                    mount="/",
                    fstype="ext4",
                    total=self.disk_total,
                    used=disk_used,
                    pct=round(disk_used / self.disk_total * 100, 1),
                )
            ],
            disk_read_bps=read_bps,
            disk_write_bps=write_bps,
            disk_read_iops=read_iops,
            disk_write_iops=write_iops,
            # The one disk's rates: four dev: series per sample, as a real agent's sda gives.
            disk_io=[mt.DiskIO("sda", read_bps, write_bps, read_iops, write_iops)],
            nets=[
                mt.NetIface(
                    name="eth0", rx_total=self.rx_total, tx_total=self.tx_total, rx_bps=rx_bps, tx_bps=tx_bps
                ),
                mt.NetIface(
                    name="lo", rx_total=self.lo_total, tx_total=self.lo_total, rx_bps=lo_bps, tx_bps=lo_bps
                ),
            ],
            net_rx_bps=round(rx_bps, 1),
            net_tx_bps=round(tx_bps, 1),
            procs_top=self._procs_top(),
        )

    def _procs_top(self) -> list[mt.ProcInfo]:
        """A plausible top list: the busiest first, each with a name, user, CPU, RSS and I/O rates."""
        r = self._rng
        n = self.fleet.procs_top
        return [
            mt.ProcInfo(
                pid=1000 + i * 37,
                name=_PROC_NAMES[i % len(_PROC_NAMES)],
                cpu_pct=round(self.cpu / (i + 2) * r.uniform(0.5, 1.5), 1),
                rss=int(self.mem_total / (i + 20) * r.uniform(0.8, 1.2)),
                user="root" if i % 3 else "www-data",
                read_bps=round(r.expovariate(1 / 20_000), 1),
                write_bps=round(r.expovariate(1 / 50_000), 1),
            )
            for i in range(n)
        ]

    # ------------------------------------------------------------ life cycle

    async def run(self) -> None:
        """Connect, serve, and reconnect with jittered backoff until the fleet stops or we are refused."""
        fleet = self.fleet
        attempt = 0
        while not fleet.stopping:
            try:
                async with fleet.connect_slots:
                    ws = await self._connect()
            except _Refused as exc:
                self.fatal = str(exc)
                fleet.note_error(f"{self.name}: {exc}")
                fleet.agent_settled(self, ok=False)
                return
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError, p.FrameError) as exc:
                fleet.note_error(f"{self.name}: connect failed: {exc!r}")
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            attempt = 0
            fleet.agent_settled(self, ok=True)
            try:
                await self._serve(ws)
            finally:
                self.connected = False
                fleet.connected -= 1
                self.ws = None
                with contextlib.suppress(Exception):
                    await ws.close()
            if ws.close_code in _FATAL_CLOSE:
                self.fatal = f"closed by the core with {ws.close_code}"
                fleet.note_error(f"{self.name}: {self.fatal}")
                return
            if fleet.stopping:
                return
            self.reconnects += 1
            fleet.reconnects += 1
            await asyncio.sleep(self._backoff(0))
            attempt = 1

    def _backoff(self, attempt: int) -> float:
        """The real agent's reconnect policy (full jitter, capped), from this agent's own rng."""
        return backoff_delay(attempt, self.fleet.backoff_initial, self.fleet.backoff_max, self._rng)

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        fleet = self.fleet
        assert fleet.session is not None
        async with asyncio.timeout(fleet.connect_timeout):
            ws = await fleet.session.ws_connect(
                fleet.url,
                max_msg_size=fleet.max_msg_size,
                autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            )
            try:
                hello = p.Hello(
                    protocol=p.PROTOCOL_VERSION,
                    host=self.facts,
                    credential=self.credential,
                    enroll_token=None if self.credential else fleet.enroll_token,
                    enroll_id=None if self.credential else self.enroll_id,
                )
                await ws.send_bytes(p.encode(hello))
                while True:
                    msg = await ws.receive()
                    if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                        frame = p.decode(fleet.decoder, msg.data)
                        if isinstance(frame, p.Welcome):
                            break
                        if isinstance(frame, p.Error):
                            raise ConnectionError(f"core error before welcome: {frame.code}: {frame.message}")
                        continue  # a ping before the welcome: harmless
                    code = ws.close_code
                    if code in _FATAL_CLOSE:
                        raise _Refused(f"hello refused with close {code}: {msg.extra or ''}")
                    raise ConnectionError(f"socket ended before welcome ({msg.type.name}, close {code})")
            except BaseException:
                await ws.close()
                raise
        self.node_id = frame.node_id
        if frame.credential:
            self.credential = frame.credential
        committed = frame.last_seq or 0
        self.seq = max(self.seq, committed)
        # The core never acks across connections: what it says it has committed is done, the rest
        # goes again.
        self.inflight.clear()
        for seq in [s for s in self.unacked if s <= committed]:
            del self.unacked[seq]
        self.resend = sorted(self.unacked)
        self.ws = ws
        self.connected = True
        fleet.connected += 1
        return ws

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        sender = asyncio.create_task(self._sender(ws), name=f"sim-send-{self.index}")
        try:
            await self._receiver(ws)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def _receiver(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        fleet = self.fleet
        dec = fleet.decoder
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                if msg.type == WSMsgType.ERROR:
                    fleet.note_error(f"{self.name}: socket error {msg.data!r}")
                    return
                continue
            try:
                frame = p.decode(dec, msg.data)
            except p.FrameError as exc:
                fleet.error_frames += 1
                fleet.note_error(f"{self.name}: undecodable frame from the core: {exc}")
                continue
            if isinstance(frame, p.Ack):
                self._on_ack(frame)
            elif isinstance(frame, p.Pong):
                fleet.pongs_received += 1
            elif isinstance(frame, p.Ping):
                await ws.send_bytes(p.encode(p.Pong(ts=frame.ts)))
            elif isinstance(frame, p.Command):
                await self._on_command(ws, frame)
            elif isinstance(frame, p.Error):
                fleet.error_frames += 1
                fleet.note_error(f"{self.name}: core error {frame.code}: {frame.message}")

    async def _on_command(self, ws: aiohttp.ClientWebSocketResponse, cmd: p.Command) -> None:
        """Answer at once as if the command were `true`: exit 0, no output (a simulated host runs nothing)."""
        self.fleet.commands_received += 1
        result = p.CommandResult(command_id=cmd.command_id, status="ok", exit_code=0, duration=0.0)
        await ws.send_bytes(p.encode(result))

    def _on_ack(self, ack: p.Ack) -> None:
        fleet = self.fleet
        now = fleet.loop_time()
        lo = ack.from_seq or ack.upto_seq
        rejected = set(ack.rejected)
        for seq in [s for s in self.unacked if lo <= s <= ack.upto_seq]:
            del self.unacked[seq]
        for seq in [s for s in self.inflight if lo <= s <= ack.upto_seq]:
            sent_at = self.inflight.pop(seq)
            if seq in rejected:
                self.rejected += 1
                fleet.samples_rejected += 1
            else:
                self.acked += 1
                fleet.samples_acked += 1
                fleet.record_ack(now - sent_at)

    async def _sender(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            await self._send_loop(ws)
        except (ConnectionError, aiohttp.ClientError):
            pass  # the socket went away; the receiver sees the close and we reconnect
        except Exception as exc:  # a bug here must not leave a silent agent behind
            self.fleet.note_error(f"{self.name}: sender failed: {exc!r}")
            await ws.close()

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        fleet = self.fleet
        interval = fleet.interval
        ping_every = fleet.ping_interval
        loop_time = fleet.loop_time
        due = fleet.next_slot(self.phase, loop_time())
        next_ping = due if ping_every else math.inf
        if self.resend:
            batch = [mt.Sample(seq=s, ts=self.unacked[s], metrics=self.metrics()) for s in self.resend]
            self.resend = []
            sent_at = loop_time()
            for sample in batch:
                self.inflight[sample.seq] = sent_at
            await ws.send_bytes(p.encode(p.Samples(samples=batch)))
            fleet.samples_resent += len(batch)
        while not ws.closed:
            delay = due - loop_time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop_time()
            late = now - due
            if late >= interval:
                # The simulator itself fell behind: skip the missed ticks and count them.
                skipped = int(late // interval)
                fleet.ticks_missed += skipped
                due += skipped * interval
                late -= skipped * interval
            fleet.record_lag(late)
            self.seq += 1
            ts = time.time()
            data = self._frame(self.seq, ts)
            if len(self.inflight) >= _MAX_INFLIGHT:
                self.inflight.pop(next(iter(self.inflight)))
            if len(self.unacked) >= _MAX_INFLIGHT:
                self.unacked.pop(next(iter(self.unacked)))  # given up on, as a full spool evicts
                fleet.samples_evicted += 1
            self.inflight[self.seq] = loop_time()
            self.unacked[self.seq] = ts
            await ws.send_bytes(data)
            self.sent += 1
            fleet.samples_sent += 1
            if now >= next_ping:
                await ws.send_bytes(p.encode(p.Ping(ts=time.time())))
                fleet.pings_sent += 1
                next_ping = max(next_ping + ping_every, now)
            if self.inflight:
                oldest = next(iter(self.inflight.values()))
                if now - oldest > fleet.ack_timeout:
                    fleet.note_error(f"{self.name}: no ack for {now - oldest:.0f}s, reconnecting")
                    await ws.close()
                    return
            due += interval


class Fleet:
    """N virtual agents against one core; an async context manager (start on enter, stop on exit).

    `interval` is the simulator's own send interval (it may be below the core's 1 s minimum for
    stress runs, so the welcome's interval is not obeyed). `ping_interval` 0 (the default) sends no
    pings, as the real agent sends none while it streams; above 0 it adds one every so many seconds.
    """

    def __init__(
        self,
        core_url: str,
        enroll_token: str,
        count: int,
        interval: float = 1.0,
        name_prefix: str = "sim",
        *,
        ping_interval: float = 0.0,
        connect_concurrency: int = 200,
        connect_timeout: float = 10.0,
        start_timeout: float = 300.0,
        ack_timeout: float = 30.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        max_msg_size: int = p.DEFAULT_MAX_FRAME_BYTES,
        seed: int | None = None,
        pool: int = 30,
        agent_class: type[SimAgent] | None = None,
        procs_top: int = 0,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        if not 0.05 <= interval <= 3600:
            raise ValueError("interval must be between 0.05 and 3600 seconds")
        self.core_url = core_url
        self.url = agent_ws_url(core_url)
        self.enroll_token = enroll_token
        self.count = count
        self.interval = float(interval)
        self.name_prefix = name_prefix
        self.ping_interval = float(ping_interval)
        self.connect_concurrency = connect_concurrency
        self.connect_timeout = connect_timeout
        self.start_timeout = start_timeout
        self.ack_timeout = ack_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_msg_size = max_msg_size
        self.pool = max(0, pool)
        # Processes in each sample's top list, as an agent with [processes] every = 1 sends them.
        self.procs_top = max(0, min(procs_top, mt.MAX_PROCS_TOP))
        self.decoder = p.decoder(p.CoreToAgent)
        rng = random.Random(seed)
        width = len(str(count - 1))
        make = agent_class or SimAgent  # a subclass may send readings of its own (benchmarks.parts.alerts)
        self.agents = [make(self, i, f"{name_prefix}-{i:0{width}d}", rng) for i in range(count)]
        self.session: aiohttp.ClientSession | None = None
        self.connect_slots = asyncio.Semaphore(max(1, connect_concurrency))
        self.stopping = False
        self.started_in: float | None = None  # seconds start() took to enroll everyone
        # Fleet-wide counters (the agents keep their own too).
        self.connected = 0
        self.samples_sent = 0
        self.samples_resent = 0  # unacknowledged samples sent again after a reconnect
        self.samples_evicted = 0  # unacknowledged samples given up on (over _MAX_INFLIGHT per agent)
        self.samples_acked = 0
        self.samples_rejected = 0
        self.ticks_missed = 0
        self.pings_sent = 0
        self.pongs_received = 0
        self.reconnects = 0
        self.error_frames = 0
        self.commands_received = 0
        self.errors = 0
        self.last_error: str | None = None
        # Seconds from send to ack, and how late each send was against its slot: this window, and in all.
        self.ack_latencies = Reservoir()
        self.send_lags = Reservoir()
        self._all_acks = Reservoir()
        self._all_lags = Reservoir()
        self._tasks: list[asyncio.Task[None]] = []
        self._settled: set[int] = set()
        self._ok = 0
        self._all_settled: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._epoch = 0.0
        self._window: dict[str, Any] = {}
        self._since_start: dict[str, Any] = {}

    # ------------------------------------------------------------ observation

    @property
    def nodes(self) -> list[int]:
        """Node ids the core assigned, in agent order (agents not yet enrolled are left out)."""
        return [a.node_id for a in self.agents if a.node_id is not None]

    @property
    def enrolled(self) -> int:
        return sum(1 for a in self.agents if a.node_id is not None)

    @property
    def failed(self) -> int:
        return sum(1 for a in self.agents if a.fatal is not None)

    def loop_time(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def next_slot(self, phase: float, now: float) -> float:
        """The first send time at or after `now` on this agent's slot of the shared grid."""
        base = self._epoch + phase
        k = max(0, math.ceil((now - base) / self.interval))
        return base + k * self.interval

    def record_ack(self, seconds: float) -> None:
        self.ack_latencies.add(seconds)
        self._all_acks.add(seconds)

    def record_lag(self, seconds: float) -> None:
        self.send_lags.add(seconds)
        self._all_lags.add(seconds)

    def note_error(self, text: str) -> None:
        self.errors += 1
        self.last_error = text

    def agent_settled(self, agent: SimAgent, ok: bool) -> None:
        """First welcome (ok) or refusal of one agent; start() waits for all of them."""
        if agent.index in self._settled:
            return
        self._settled.add(agent.index)
        self._ok += ok
        if len(self._settled) == self.count and self._all_settled is not None:
            self._all_settled.set()

    def _snapshot(self) -> dict[str, Any]:
        return {"t": time.monotonic(), **{name: getattr(self, name) for name in _COUNTERS}}

    def begin_window(self) -> None:
        """Start a new measurement window: window_stats() then covers only what follows."""
        self._window = self._snapshot()
        self.ack_latencies = Reservoir()
        self.send_lags = Reservoir()

    def window_stats(self) -> FleetStats:
        """Since start() returned or the last begin_window()."""
        return self._stats(self._window, self.ack_latencies, self.send_lags)

    def total_stats(self) -> FleetStats:
        """Since start() returned (enrollment excluded)."""
        return self._stats(self._since_start, self._all_acks, self._all_lags)

    def _stats(self, since: dict[str, Any], acks: Reservoir, lags: Reservoir) -> FleetStats:
        w = since or self._snapshot()
        secs = max(1e-9, time.monotonic() - w["t"])
        d = {name: int(getattr(self, name) - w[name]) for name in _COUNTERS}
        return FleetStats(
            agents=self.count,
            enrolled=self.enrolled,
            connected=self.connected,
            failed=self.failed,
            seconds=round(secs, 3),
            **d,
            send_rate=round(d["samples_sent"] / secs, 1),
            ack_rate=round(d["samples_acked"] / secs, 1),
            target_rate=round(self.count / self.interval, 1),
            ack_latency_ms=acks.percentiles_ms(),
            send_lag_ms=lags.percentiles_ms(),
            last_error=self.last_error,
        )

    # ------------------------------------------------------------ life cycle

    async def start(self, require_all: bool = True) -> None:
        """Connect and enroll every agent (bounded concurrency); returns once all have a welcome.

        Raises FleetError if some agent was refused or start_timeout passed, unless `require_all`
        is False: then it returns anyway and the stragglers keep trying in the background.
        """
        if self._tasks:
            raise RuntimeError("Fleet.start() was already called")
        self._loop = asyncio.get_running_loop()
        self._epoch = self._loop.time()
        self._all_settled = asyncio.Event()
        self.connect_slots = asyncio.Semaphore(max(1, self.connect_concurrency))
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))
        t0 = time.monotonic()
        self._tasks = [asyncio.create_task(a.run(), name=f"sim-agent-{a.index}") for a in self.agents]
        try:
            async with asyncio.timeout(self.start_timeout):
                await self._all_settled.wait()
        except TimeoutError:
            if not require_all:
                self._started(t0)
                return
            raise FleetError(
                f"only {len(self._settled)} of {self.count} agents enrolled within {self.start_timeout:g}s; "
                f"last error: {self.last_error}"
            ) from None
        if self._ok < self.count and require_all:
            raise FleetError(
                f"{self.count - self._ok} of {self.count} agents were refused; last error: {self.last_error}"
            )
        self._started(t0)

    def _started(self, t0: float) -> None:
        self.started_in = time.monotonic() - t0
        self._since_start = self._snapshot()
        self._all_acks = Reservoir()
        self._all_lags = Reservoir()
        self.begin_window()

    async def stop(self) -> None:
        """Close every socket and wait (bounded) for the agents to finish."""
        self.stopping = True
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=15.0)
        self._tasks = []
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def __aenter__(self) -> Fleet:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


# ---------------------------------------------------------------- command line


def _emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.time(), 3), **data}), flush=True)


async def _control(fleet: Fleet, stop: asyncio.Event) -> None:
    """--control: read commands from stdin: `begin` (new window), `report` (window stats), `stop`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not stop.is_set():
        line = await reader.readline()
        if not line:  # our parent went away: stop rather than run on unattended
            stop.set()
            return
        cmd = line.decode().strip()
        if cmd == "begin":
            fleet.begin_window()
            _emit("begin")
        elif cmd == "report":
            _emit("report", **fleet.window_stats().as_dict())
        elif cmd == "stop":
            stop.set()
        elif cmd:
            _emit("error", message=f"unknown command {cmd!r}")


async def _run_cli(args: argparse.Namespace) -> int:
    nofile = raise_nofile_limit()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    fleet = Fleet(
        args.core,
        args.token,
        args.count,
        args.interval,
        args.prefix,
        ping_interval=args.ping_interval,
        connect_concurrency=args.concurrency,
        connect_timeout=args.connect_timeout,
        start_timeout=args.start_timeout,
        seed=args.seed,
        pool=args.pool,
        procs_top=args.procs_top,
    )
    _emit("starting", count=args.count, interval=args.interval, url=fleet.url, nofile=nofile)
    try:
        await fleet.start(require_all=not args.allow_partial)
    except FleetError as exc:
        _emit("failed", message=str(exc))
        await fleet.stop()
        return 1
    tasks: list[asyncio.Task[None]] = []
    try:
        _emit(
            "ready",
            enroll_seconds=round(fleet.started_in or 0.0, 2),
            nodes=len(fleet.nodes),
            failed=fleet.failed,
            last_error=fleet.last_error,
        )
        if args.control:
            tasks.append(asyncio.create_task(_control(fleet, stop)))
        deadline = time.monotonic() + args.duration
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(args.report_every, max(0.0, deadline - time.monotonic()))):
                    await stop.wait()
            if args.report_every and not args.control and not stop.is_set():
                _emit("status", **fleet.window_stats().as_dict())  # this report period only
                fleet.begin_window()
        _emit("summary", **fleet.total_stats().as_dict())
    finally:
        for t in tasks:
            t.cancel()
        await fleet.stop()
    _emit("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.fleet",
        description="Simulate N agents against a core (JSON lines on stdout).",
    )
    ap.add_argument("--core", required=True, help="core URL, e.g. http://127.0.0.1:8760")
    ap.add_argument("--token", required=True, help="enrollment token with at least --count uses")
    ap.add_argument("--count", type=int, default=100, help="number of virtual agents")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between samples per agent")
    ap.add_argument(
        "--duration", type=float, default=30.0, help="seconds to run after enrollment (upper bound)"
    )
    ap.add_argument("--prefix", default="sim", help="hostname prefix of the virtual agents")
    ap.add_argument(
        "--ping-interval",
        type=float,
        default=0.0,
        help="seconds between extra pings (default 0: none, as a streaming agent sends none)",
    )
    ap.add_argument("--concurrency", type=int, default=200, help="connections being set up at once")
    ap.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds for dial + hello + welcome (agent: 10)"
    )
    ap.add_argument(
        "--start-timeout", type=float, default=300.0, help="seconds allowed for enrolling everyone"
    )
    ap.add_argument(
        "--report-every",
        type=float,
        default=5.0,
        help="seconds between status lines (each covers its own period)",
    )
    ap.add_argument("--seed", type=int, default=None, help="seed of the metrics random walk")
    ap.add_argument(
        "--pool",
        type=int,
        default=30,
        help="readings made ahead per agent and replayed in order (0: a fresh random-walk step per send)",
    )
    ap.add_argument(
        "--procs-top",
        type=int,
        default=0,
        help="processes in every sample's top list, as [processes] every = 1 sends (0: none)",
    )
    ap.add_argument(
        "--allow-partial",
        action="store_true",
        help="go on after --start-timeout even if some agents are not in",
    )
    ap.add_argument("--control", action="store_true", help="read begin/report/stop commands from stdin")
    args = ap.parse_args(argv)
    if not 0 < args.duration <= 7 * 86400:
        ap.error("--duration must be between 0 and 7 days")
    # The simulator shares the machine with the core it measures: the cheaper its loop, the more
    # CPU is left to the core.
    with asyncio.Runner(loop_factory=lambda: new_event_loop(prefer_uvloop=True)) as runner:
        return runner.run(_run_cli(args))


if __name__ == "__main__":
    sys.exit(main())
