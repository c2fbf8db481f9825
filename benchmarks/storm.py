"""Flood and storm: one agent floods, thousands of sockets connect and drop, and the others are watched.

    .venv/bin/python -m benchmarks.storm                        # about 2 minutes
    .venv/bin/python -m benchmarks.storm --core-tree ../old     # the same against another checkout's core

A real `servermanager core` (its own process, 127.0.0.1) and, each in a process of its own:

- 200 honest simulated agents at 1 Hz (`benchmarks.fleet`); their sample age is measured by a
  `/ws/client` subscriber to all nodes in this process (receipt time minus the sample's `ts`,
  stamped by the agent when it sent it; same host, same clock), and their send-to-ack time by
  the simulator;
- one authenticated agent that floods: `samples` frames of `--flood-batch` fresh samples each,
  written as fast as its socket takes them, for `--flood-seconds` (20 s);
- a storm of `--sockets` (3,000) connections opened at once `--storm-at` seconds into the flood,
  a third each: WebSockets to /ws/agent that say nothing, /ws/agent hellos with a credential that
  does not exist, /ws/client auths with a token that does not exist; `--hold` seconds later every
  one of them is dropped at once (the TCP connection aborted, no close handshake).

Phases: `--before` seconds of calm, the flood (with the storm in it), `--after` seconds. Reported
per phase: the honest agents' sample age p50/p99/max and their ack time, the core's CPU and its
health-check latency; over the whole run the core's RSS every half second (peak, and at the end);
the sockets shed (`sm_core_sockets_shed_total`) and what each storm socket saw; the flooder's sent
and accepted rates. The JSON goes to --out (default benchmarks/results/storm.json).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psutil

from benchmarks.fleet import Fleet, agent_ws_url, percentiles, raise_nofile_limit
from benchmarks.harness import (
    RESULTS,
    CoreProc,
    ProcWatch,
    SystemCpu,
    log,
    machine_info,
    spawned,
    tail,
    wait_quiet,
)
from benchmarks.parts.load import FleetProc, core_log_counts
from servermanager.common import metrics as mt
from servermanager.common import protocol as p

MB = 1024 * 1024
# The figures for main before the ingest limits and the socket cap (issue 12).
BASELINE = {"core_rss_mb_never_given_back": 1860, "delay_to_other_agents_s": 8.8}


def loadavg() -> list[float]:
    with contextlib.suppress(OSError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return []


def _emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.time(), 3), **data}), flush=True)


def _ms(values: list[float]) -> dict[str, Any]:
    pc = percentiles(values, (50, 99))
    return {k: (v if k == "n" or v is None else round(v * 1000, 1)) for k, v in pc.items()}


# ---------------------------------------------------------------- the flooder (its own process)


def one_reading() -> bytes:
    """A plausible reading, encoded once: the flooder splices it into every sample it sends."""
    sim = Fleet("http://127.0.0.1:1", "unused", 1, pool=0, seed=7).agents[0]
    return msgspec.json.encode(sim.metrics())


async def flood(core_url: str, token: str, seconds: float, batch: int, tail_s: float) -> dict[str, Any]:
    reading = one_reading()
    per_second: list[dict[str, int]] = []
    stats = Counter[str]()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(agent_ws_url(core_url), max_msg_size=0)
        host = mt.HostFacts(
            hostname="flooder", os="Linux", os_version="12", kernel="6.1", arch="x86_64",
            cpu_model="flood", cpu_count=2, mem_total=1 << 30, agent_version="flood", boot_time=0.0,
        )  # fmt: skip
        await ws.send_bytes(p.encode(p.Hello(protocol=p.PROTOCOL_VERSION, host=host, enroll_token=token)))
        welcome = p.decode(p.decoder(p.CoreToAgent), (await ws.receive(timeout=30)).data)
        if not isinstance(welcome, p.Welcome):
            raise RuntimeError(f"the flooder was not welcomed: {welcome!r}")
        _emit("ready", node_id=welcome.node_id)
        dec = p.decoder(p.CoreToAgent)

        async def read() -> None:
            async for msg in ws:
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    continue
                frame = p.decode(dec, msg.data)
                if isinstance(frame, p.Ack):
                    n = frame.upto_seq - (frame.from_seq or frame.upto_seq) + 1 - len(frame.rejected)
                    stats["samples_accepted"] += n
                    stats["acks"] += 1
                elif isinstance(frame, p.Error):
                    stats[f"error_{frame.code}"] += 1

        reader = asyncio.create_task(read())
        seq = welcome.last_seq or 0
        # Stamped from an hour ago, 2 ms apart: within the core's clock bounds however fast it sends,
        # each newer than the last (so each is live news for the subscribers), and never two in one
        # millisecond (the core keeps one row per node and millisecond).
        base, first = time.time() - 3600.0, seq
        t0 = time.monotonic()
        mark = dict(stats)
        next_tick = t0 + 1.0
        while (now := time.monotonic()) < t0 + seconds and not ws.closed:
            parts = []
            for _ in range(batch):
                seq += 1
                ts = base + 0.002 * (seq - first)
                parts.append(b'{"seq":%d,"ts":%r,"metrics":%b}' % (seq, ts, reading))
            frame_bytes = b'{"type":"samples","samples":[' + b",".join(parts) + b"]}"
            try:
                await ws.send_bytes(frame_bytes)
            except (ConnectionError, aiohttp.ClientError):
                break
            stats["frames_sent"] += 1
            stats["samples_sent"] += batch
            stats["bytes_sent"] += len(frame_bytes)
            if now >= next_tick:
                per_second.append(
                    {k: stats[k] - mark.get(k, 0) for k in ("samples_sent", "samples_accepted")}
                )
                mark = dict(stats)
                next_tick += 1.0
        flood_s = time.monotonic() - t0
        during = dict(stats)
        await asyncio.sleep(tail_s)  # what the core still takes after the flooder stops writing
        with contextlib.suppress(Exception):
            await ws.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return {
        "node_id": welcome.node_id,
        "batch": batch,
        "frame_bytes": len(frame_bytes),
        "flood_seconds": round(flood_s, 2),
        "frames_sent": during.get("frames_sent", 0),
        "samples_sent": during.get("samples_sent", 0),
        "bytes_sent": during.get("bytes_sent", 0),
        "samples_accepted_during": during.get("samples_accepted", 0),
        "samples_accepted_total": stats["samples_accepted"],
        "sent_samples_per_s": round(during.get("samples_sent", 0) / flood_s, 1),
        "sent_mb_per_s": round(during.get("bytes_sent", 0) / flood_s / MB, 2),
        "accepted_samples_per_s": round(during.get("samples_accepted", 0) / flood_s, 1),
        "errors": {k: v for k, v in stats.items() if k.startswith("error_")},
        "close_code": ws.close_code,
        "per_second": per_second,
    }


# ---------------------------------------------------------------- the storm (its own process)


def _client_frame(payload: bytes) -> bytes:
    """One masked text frame, as a client must send it."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _read_close(reader: asyncio.StreamReader) -> str:
    """Server frames until a close: 'closed_<code>', or 'eof' if the connection just ends."""
    while True:
        try:
            b0, b1 = await reader.readexactly(2)
        except asyncio.IncompleteReadError:
            return "eof"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await reader.readexactly(8))[0]
        payload = await reader.readexactly(n)
        if b0 & 0x0F == 0x8:
            return f"closed_{struct.unpack('!H', payload[:2])[0]}" if len(payload) >= 2 else "closed"


async def storm_socket(
    host: str, port: int, kind: str, drop_at: float, hello: bytes, auth: bytes
) -> tuple[str, str, float | None]:
    """One socket of the storm: (kind, outcome, seconds to the outcome if the core ended it)."""
    t0 = time.monotonic()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(max(0.1, drop_at - t0)):
            reader, writer = await asyncio.open_connection(host, port)
            path = p.CLIENT_WS_PATH if kind == "bad_auth" else p.AGENT_WS_PATH
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            if status != "101":
                return kind, f"http_{status}", time.monotonic() - t0
            if kind == "bad_hello":
                writer.write(_client_frame(hello))
            elif kind == "bad_auth":
                writer.write(_client_frame(auth))
            outcome = await _read_close(reader)
            return kind, outcome, time.monotonic() - t0
    except TimeoutError:
        return kind, "open_at_drop" if writer is not None else "connecting_at_drop", None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return kind, f"failed_{type(exc).__name__}", time.monotonic() - t0
    finally:
        if writer is not None:
            writer.transport.abort()  # dropped: no close handshake


async def storm(core_url: str, count: int, hold: float) -> dict[str, Any]:
    host, _, port = core_url.split("://", 1)[1].rstrip("/").rpartition(":")
    facts = mt.HostFacts(
        hostname="storm", os="Linux", os_version="12", kernel="6.1", arch="x86_64",
        cpu_model="storm", cpu_count=1, mem_total=1 << 30, agent_version="storm", boot_time=0.0,
    )  # fmt: skip
    hello = p.encode(p.Hello(protocol=p.PROTOCOL_VERSION, host=facts, credential="x" * 43))
    auth = p.encode(p.Auth(token="sm_" + "x" * 40))
    kinds = ("silent", "bad_hello", "bad_auth")
    t0 = time.monotonic()
    drop_at = t0 + hold
    _emit("storming", count=count)
    results = await asyncio.gather(
        *(storm_socket(host, int(port), kinds[i % 3], drop_at, hello, auth) for i in range(count))
    )
    outcomes: dict[str, Counter[str]] = {k: Counter() for k in kinds}
    times: dict[str, list[float]] = {}
    for kind, outcome, secs in results:
        outcomes[kind][outcome] += 1
        if secs is not None:
            times.setdefault(outcome, []).append(secs)
    total = Counter[str]()
    for c in outcomes.values():
        total.update(c)
    return {
        "sockets": count,
        "hold_s": hold,
        "seconds": round(time.monotonic() - t0, 2),
        "outcomes": dict(total),
        "by_kind": {k: dict(v) for k, v in outcomes.items()},
        "seconds_to_outcome_ms": {k: _ms(v) for k, v in times.items()},
    }


# ---------------------------------------------------------------- the watcher (this process)


class _Sample(msgspec.Struct):
    ts: float


class _Event(msgspec.Struct):
    type: str
    node_id: int | None = None
    sample: _Sample | None = None
    frames: list[msgspec.Raw] | None = None


class AgeClient:
    """A /ws/client subscriber to every node: (receipt time, node, age) of every live sample."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.replace("http://", "ws://") + p.CLIENT_WS_PATH
        self.token = token
        self.records: list[tuple[float, int, float]] = []  # (monotonic receipt, node, age s)
        self.drops: list[str] = []
        self._dec = msgspec.json.Decoder(_Event)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._up = asyncio.Event()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(30):
            await self._up.wait()

    async def _run(self) -> None:
        assert self._session is not None
        t0 = time.monotonic()
        while True:
            try:
                ws = await self._session.ws_connect(self.url, max_msg_size=0)
                await ws.send_bytes(p.encode(p.Auth(token=self.token)))
                ok = await ws.receive(timeout=30)
                if '"auth_ok"' not in str(ok.data):
                    raise RuntimeError(f"client auth failed: {ok}")
                await ws.send_bytes(p.encode(p.Subscribe(all=True)))
                self._up.set()
                await self._read(ws)
                self.drops.append(f"+{time.monotonic() - t0:.1f}s closed by the core ({ws.close_code})")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.drops.append(f"+{time.monotonic() - t0:.1f}s {exc!r}")
            await asyncio.sleep(0.5)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        dec, records = self._dec, self.records
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            mono, wall = time.monotonic(), time.time()
            ev = dec.decode(msg.data)
            events = [dec.decode(raw) for raw in ev.frames] if ev.frames is not None else [ev]
            for e in events:
                if e.type == "sample" and e.sample is not None and e.node_id is not None:
                    records.append((mono, e.node_id, wall - e.sample.ts))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


@dataclass(frozen=True)
class Options:
    agents: int = 200
    interval: float = 1.0
    warmup: float = 10.0
    before: float = 15.0
    flood_seconds: float = 20.0
    flood_batch: int = 100
    storm_at: float = 5.0
    sockets: int = 3000
    hold: float = 2.0
    after: float = 30.0
    core_tree: str | None = None


class Child:
    """A JSON-lines child process of this module (flooder or storm)."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(json.JSONDecodeError):
                await self.events.put(json.loads(line))
        await self.events.put({"event": "eof"})

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.events.get()
                if ev.get("event") == event:
                    return ev
                if ev.get("event") in ("eof", "failed"):
                    raise RuntimeError(f"{self.name} ended before {event}: {ev}")


async def run(opts: Options, workdir: Path) -> dict[str, Any]:
    me = [sys.executable, "-m", "benchmarks.storm"]
    env, cmd = _core_cmd(opts)
    out: dict[str, Any] = {"options": msgspec.to_builtins(opts)}
    rss: list[tuple[float, float]] = []  # (seconds from the flood's start, MB)
    health: list[tuple[float, float | None]] = []
    async with contextlib.AsyncExitStack() as stack:
        core = await stack.enter_async_context(CoreProc(workdir, env=env, cmd=cmd))
        assert core.proc is not None and core.token is not None and core.http is not None
        core_ps = psutil.Process(core.proc.pid)
        out["core_nofile_soft"] = _nofile_of(core.proc.pid)
        fleet_token = await core.enroll_token(opts.agents + 50)
        flood_token = await core.enroll_token(1)
        client = AgeClient(core.url, core.token)
        await client.start()
        stack.push_async_callback(client.stop)
        fcmd = [
            sys.executable, "-m", "benchmarks.fleet", "--control", "--core", core.url, "--token", fleet_token,
            "--count", str(opts.agents), "--interval", str(opts.interval), "--prefix", "honest",
            "--duration", "3600", "--seed", "1",
        ]  # fmt: skip
        fleet = FleetProc(
            await stack.enter_async_context(spawned(fcmd, workdir / "fleet.log", pipes=True)), "fleet"
        )
        stack.callback(fleet.close)
        ready = await fleet.expect("ready", 120)
        honest = {n["id"] for n in (await core.request("GET", "/api/v1/nodes"))["nodes"]}
        log(f"{ready['nodes']} honest agents streaming; warming up {opts.warmup:g}s")
        await asyncio.sleep(opts.warmup)

        t_flood = time.monotonic() + opts.before  # the flood starts at this moment
        stop = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                with contextlib.suppress(psutil.Error):
                    rss.append(
                        (round(time.monotonic() - t_flood, 2), round(core_ps.memory_info().rss / MB, 1))
                    )
                await asyncio.sleep(0.5)

        async def probe() -> None:
            assert core.http is not None
            while not stop.is_set():
                t = time.monotonic()
                lat: float | None = None
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with core.http.get(
                        core.url + "/api/v1/health", timeout=aiohttp.ClientTimeout(total=15)
                    ) as r:
                        await r.read()
                        lat = time.monotonic() - t
                health.append((round(t - t_flood, 2), lat))
                await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - t)))

        watchers = [asyncio.create_task(watch()), asyncio.create_task(probe())]
        c0 = await core.counters()
        phases: dict[str, dict[str, Any]] = {}

        async def phase(name: str, seconds: float, during: Any = None) -> None:
            pw, sc = ProcWatch(core.proc.pid if core.proc else 0, "core", children=False), SystemCpu()
            ours = ProcWatch(os.getpid(), "this run: this process and every child", children=True)
            await fleet.command("begin")
            await fleet.expect("begin", 30)
            t0 = time.monotonic()
            pw.begin()
            ours.begin()
            sc.begin()
            if during is not None:
                await during
            await asyncio.sleep(max(0.0, t0 + seconds - time.monotonic()))
            t1 = time.monotonic()
            cpu = pw.end()
            ours_pct = ours.end()["cpu_pct"] or 0.0
            busy = sc.end()
            others = max(0.0, busy["busy_pct_of_all_cores"] * busy["cores"] - ours_pct)
            await fleet.command("report")
            rep = await fleet.expect("report", 30)
            ages = [a for (t, n, a) in client.records if t0 <= t < t1 and n in honest]
            lats = [lat for (t, lat) in health if t0 - t_flood <= t < t1 - t_flood]
            phases[name] = {
                "from_s": round(t0 - t_flood, 1),
                "to_s": round(t1 - t_flood, 1),
                "honest_sample_age_ms": _ms(ages),
                "honest_samples_per_s": round(len(ages) / (t1 - t0), 1),
                "honest_ack_ms": rep["ack_latency_ms"],
                "honest_sent_per_s": rep["send_rate"],
                "honest_acked_per_s": rep["ack_rate"],
                "honest_reconnects": rep["reconnects"],
                "honest_error_frames": rep["error_frames"],
                "honest_connected_at_end": rep["connected"],
                "core_cpu_pct": cpu["cpu_pct"],
                "health_ms": _ms([x for x in lats if x is not None]),
                "health_failed": sum(1 for x in lats if x is None),
                "machine_busy_pct": busy["busy_pct_of_all_cores"],
                "this_run_cpu_pct": ours_pct,
                "others_pct_of_one_core": round(others, 1),
            }
            log(f"{name}: honest age p50/p99/max {phases[name]['honest_sample_age_ms']}")

        await phase("before", opts.before)
        log(f"flood for {opts.flood_seconds:g}s; {opts.sockets} sockets at +{opts.storm_at:g}s")
        fl_cmd = [*me, "flooder", "--core", core.url, "--token", flood_token,
                  "--seconds", str(opts.flood_seconds), "--batch", str(opts.flood_batch)]  # fmt: skip
        flooder = Child(
            await stack.enter_async_context(spawned(fl_cmd, workdir / "flooder.log", pipes=True)), "flooder"
        )

        async def storm_later() -> Child:
            await asyncio.sleep(opts.storm_at)
            st_cmd = [
                *me,
                "sockets",
                "--core",
                core.url,
                "--count",
                str(opts.sockets),
                "--hold",
                str(opts.hold),
            ]
            return Child(
                await stack.enter_async_context(spawned(st_cmd, workdir / "storm.log", pipes=True)), "storm"
            )

        storm_task = asyncio.create_task(storm_later())
        await phase("flood", opts.flood_seconds)
        stormer = await storm_task
        await phase("after", opts.after)
        stop.set()
        await asyncio.gather(*watchers, return_exceptions=True)
        c1 = await core.counters()
        flood_res = await flooder.expect("result", 60)
        storm_res = await stormer.expect("result", 60)
        out["flooder"] = flood_res["result"]
        out["storm"] = storm_res["result"]
        flooder_node = out["flooder"]["node_id"]
        st_start = opts.storm_at
        storm_ages = [
            a
            for (t, n, a) in client.records
            if n in honest and st_start <= t - t_flood < st_start + opts.hold + 3.0
        ]
        out["storm"]["honest_sample_age_ms_in_storm_window"] = _ms(storm_ages)
        out["phases"] = phases
        out["counters"] = {
            "sockets_shed": c1.get("sm_core_sockets_shed_total", 0) - c0.get("sm_core_sockets_shed_total", 0),
            "samples_written": c1.get("sm_core_samples_written_total", 0)
            - c0.get("sm_core_samples_written_total", 0),
        }
        out["flooder"]["stored_rows"] = None  # filled below from the database, once the core is stopped
        out["client_drops"] = client.drops[:20]
        await fleet.command("stop")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await fleet.proc.wait()
        await client.stop()
        out["core_exit_code"] = await core.stop()
    out["rss_mb"] = _rss_summary(rss, opts)
    out["rss_series"] = rss
    out["health_series"] = [(t, None if x is None else round(x * 1000, 1)) for t, x in health]
    out["per_second"] = _per_second(client.records, honest, t_flood, rss)
    out["core_log"] = {
        **core_log_counts(core.log),
        "tracebacks": _count(core.log, "Traceback"),
        "shed_lines": _count(core.log, "shedding new sockets"),
        "throttle_lines": _count(core.log, "faster than the ingest limits"),
        "refused_lines": _count(core.log, " refused: "),
    }
    out["flooder"]["stored_rows"] = _stored_rows(core.db_path, flooder_node)
    return out


async def run_repeated(opts: Options, workdir: Path, storms: int, pause: float) -> dict[str, Any]:
    """Storms only, one after another against an idle core: does what they leave behind add up?"""
    me = [sys.executable, "-m", "benchmarks.storm"]
    env, cmd = _core_cmd(opts)
    rounds: list[dict[str, Any]] = []
    async with contextlib.AsyncExitStack() as stack:
        core = await stack.enter_async_context(CoreProc(workdir, env=env, cmd=cmd))
        assert core.proc is not None
        ps = psutil.Process(core.proc.pid)
        start_mb = round(ps.memory_info().rss / MB, 1)
        log(f"{storms} storms of {opts.sockets} sockets, {pause:g}s apart; core RSS {start_mb} MB")
        for i in range(storms):
            st_cmd = [
                *me,
                "sockets",
                "--core",
                core.url,
                "--count",
                str(opts.sockets),
                "--hold",
                str(opts.hold),
            ]
            child = Child(
                await stack.enter_async_context(spawned(st_cmd, workdir / f"storm{i}.log", pipes=True)),
                f"storm{i}",
            )
            res = (await child.expect("result", 120))["result"]
            await asyncio.sleep(pause)
            t = time.monotonic()
            healthy = await core.request("GET", "/api/v1/health")
            rounds.append(
                {
                    "storm": i + 1,
                    "outcomes": res["outcomes"],
                    "core_rss_mb": round(ps.memory_info().rss / MB, 1),
                    "core_fds": ps.num_fds(),
                    "health_ms": round((time.monotonic() - t) * 1000, 1),
                    "health": healthy.get("status") if isinstance(healthy, dict) else None,
                }
            )
            log(f"storm {i + 1}: core RSS {rounds[-1]['core_rss_mb']} MB, {rounds[-1]['core_fds']} fds")
        counters = await core.counters()
        out_exit = await core.stop()
    return {
        "options": msgspec.to_builtins(opts),
        "storms": storms,
        "pause_s": pause,
        "core_rss_mb_at_start": start_mb,
        "rounds": rounds,
        "sockets_shed": counters.get("sm_core_sockets_shed_total"),
        "core_exit_code": out_exit,
        "core_log": {**core_log_counts(core.log), "tracebacks": _count(core.log, "Traceback")},
    }


def _core_cmd(opts: Options) -> tuple[dict[str, str] | None, list[str] | None]:
    if not opts.core_tree:
        return None, None
    # -P: no script directory on sys.path, so PYTHONPATH alone decides whose servermanager runs.
    return {"PYTHONPATH": opts.core_tree}, [sys.executable, "-P", "-m", "servermanager"]


def _nofile_of(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return None


def _count(path: Path, mark: str) -> int:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace").count(mark)
    return 0


def _stored_rows(db: Path, node: int) -> int | None:
    import sqlite3

    with contextlib.suppress(sqlite3.Error):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return int(
                con.execute(
                    "SELECT count(*) FROM (SELECT ts FROM samples_raw WHERE node_id = ? "
                    "UNION SELECT ts FROM samples_head WHERE node_id = ?)",
                    (node, node),
                ).fetchone()[0]
            )
        finally:
            con.close()
    return None


def _rss_summary(rss: list[tuple[float, float]], opts: Options) -> dict[str, Any]:
    def peak(lo: float, hi: float) -> float | None:
        vals = [m for t, m in rss if lo <= t < hi]
        return max(vals) if vals else None

    end = opts.flood_seconds + opts.after
    last10 = [m for t, m in rss if t >= end - 10]
    return {
        "before_peak": peak(-opts.before, 0),
        "flood_peak": peak(0, opts.flood_seconds),
        "after_peak": peak(opts.flood_seconds, end + 1),
        "peak": max((m for _, m in rss), default=None),
        "at_end": rss[-1][1] if rss else None,
        "last_10s_min": min(last10) if last10 else None,
    }


def _per_second(
    records: list[tuple[float, int, float]], honest: set[int], t_flood: float, rss: list[tuple[float, float]]
) -> list[dict[str, Any]]:
    """Every second from the start of 'before': honest age p50/max, samples seen, the core's RSS."""
    buckets: dict[int, list[float]] = {}
    for t, n, a in records:
        if n in honest:
            buckets.setdefault(int((t - t_flood) // 1), []).append(a)
    mem: dict[int, float] = {}
    for t, m in rss:
        mem[int(t // 1)] = max(m, mem.get(int(t // 1), 0.0))
    out = []
    for sec in sorted(set(buckets) | set(mem)):
        ages = sorted(buckets.get(sec, []))
        out.append(
            {
                "t": sec,
                "n": len(ages),
                "age_p50_ms": round(ages[len(ages) // 2] * 1000, 1) if ages else None,
                "age_max_ms": round(ages[-1] * 1000, 1) if ages else None,
                "rss_mb": mem.get(sec),
            }
        )
    return out


def markdown(report: dict[str, Any]) -> str:
    r = report["results"]
    lines = [
        "| phase | honest sample age p50 / p99 / max (ms) | honest ack p50 / p99 (ms) | honest samples/s seen | "
        "core CPU % | health p99 (ms) | machine busy % (others, % of a core) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, ph in r["phases"].items():
        a, k, h = ph["honest_sample_age_ms"], ph["honest_ack_ms"], ph["health_ms"]
        lines.append(
            f"| {name} ({ph['from_s']:g} to {ph['to_s']:g} s) | {a['p50']} / {a['p99']} / {a['max']} | "
            f"{k.get('p50')} / {k.get('p99')} | {ph['honest_samples_per_s']} | {ph['core_cpu_pct']} | "
            f"{h['p99']} | {ph['machine_busy_pct']} ({ph['others_pct_of_one_core']}) |"
        )
    f, s, m = r["flooder"], r["storm"], r["rss_mb"]
    lines += [
        "",
        f"Core RSS: {m['before_peak']} MB before, peak {m['peak']} MB (flood {m['flood_peak']}), "
        f"{m['at_end']} MB at the end ({m['last_10s_min']} MB lowest in the last 10 s).",
        f"Flooder: sent {f['sent_samples_per_s']:,} samples/s ({f['sent_mb_per_s']} MB/s, {f['frames_sent']} frames "
        f"of {f['batch']}), accepted {f['accepted_samples_per_s']:,} samples/s; rows stored {f['stored_rows']}.",
        f"Storm: {s['sockets']} sockets, outcomes {s['outcomes']}; shed (sm_core_sockets_shed_total) "
        f"{r['counters']['sockets_shed']:g}; honest age in the storm window {s['honest_sample_age_ms_in_storm_window']}.",
    ]
    return "\n".join(lines)


def markdown_repeated(report: dict[str, Any]) -> str:
    r = report["results"]
    lines = [
        f"Core RSS at start: {r['core_rss_mb_at_start']} MB; shed in all: {r['sockets_shed']:g}; "
        f"tracebacks in the core log: {r['core_log']['tracebacks']}",
        "",
        "| storm | core RSS after (MB) | open fds | health (ms) | outcomes |",
        "|---|---|---|---|---|",
    ]
    for x in r["rounds"]:
        lines.append(
            f"| {x['storm']} | {x['core_rss_mb']} | {x['core_fds']} | {x['health_ms']} | {x['outcomes']} |"
        )
    return "\n".join(lines)


async def _child_main(role: str, args: argparse.Namespace) -> int:
    try:
        if role == "flooder":
            res = await flood(args.core, args.token, args.seconds, args.batch, args.tail)
        else:
            res = await storm(args.core, args.count, args.hold)
    except Exception as exc:
        _emit("failed", message=repr(exc))
        return 1
    _emit("result", result=res)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("flooder", "sockets"):  # the children this script starts
        cp = argparse.ArgumentParser(prog=f"python -m benchmarks.storm {argv[0]}")
        cp.add_argument("--core", required=True)
        cp.add_argument("--token", default="")
        cp.add_argument("--seconds", type=float, default=20.0)
        cp.add_argument("--batch", type=int, default=100)
        cp.add_argument("--tail", type=float, default=5.0)
        cp.add_argument("--count", type=int, default=3000)
        cp.add_argument("--hold", type=float, default=2.0)
        args = cp.parse_args(argv[1:])
        raise_nofile_limit()
        return asyncio.run(_child_main(argv[0], args))
    d = Options()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.storm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=d.agents, help="honest simulated agents")
    ap.add_argument("--interval", type=float, default=d.interval, help="their sample interval (s)")
    ap.add_argument("--warmup", type=float, default=d.warmup, help="seconds after enrollment, unmeasured")
    ap.add_argument("--before", type=float, default=d.before, help="calm seconds measured before the flood")
    ap.add_argument("--flood-seconds", type=float, default=d.flood_seconds)
    ap.add_argument("--flood-batch", type=int, default=d.flood_batch, help="samples per flooded frame")
    ap.add_argument("--storm-at", type=float, default=d.storm_at, help="seconds into the flood")
    ap.add_argument("--sockets", type=int, default=d.sockets, help="sockets of the storm")
    ap.add_argument("--hold", type=float, default=d.hold, help="seconds before the storm's sockets drop")
    ap.add_argument("--after", type=float, default=d.after, help="seconds measured after the flood")
    ap.add_argument("--core-tree", default=None, help="run the core from this checkout (a before/after)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="instead: only storms, this many one after another against an idle core, RSS after each",
    )
    ap.add_argument("--pause", type=float, default=3.0, help="seconds between repeated storms")
    ap.add_argument(
        "--quiet-pct", type=float, default=10.0, help="machine busy %% to wait for before starting"
    )
    ap.add_argument("--quiet-wait", type=float, default=60.0, help="longest wait for a quiet machine (s)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--out", default=None, help="default benchmarks/results/storm.json (storm-repeat.json)")
    args = ap.parse_args(argv)
    if not 0 <= args.storm_at < args.flood_seconds:
        ap.error("--storm-at must fall within the flood")
    opts = Options(
        agents=args.agents, interval=args.interval, warmup=args.warmup, before=args.before,
        flood_seconds=args.flood_seconds, flood_batch=args.flood_batch, storm_at=args.storm_at,
        sockets=args.sockets, hold=args.hold, after=args.after,
        core_tree=str(Path(args.core_tree).resolve()) if args.core_tree else None,
    )  # fmt: skip
    nofile = raise_nofile_limit()
    workdir = Path(tempfile.mkdtemp(prefix="sm-storm-", dir=args.workdir))
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.storm", *argv]),
        "machine": machine_info(),
        "client_nofile_soft": nofile,
        "baseline_from_issue_12": BASELINE,
        "loadavg_before": loadavg(),
    }
    ok = False
    try:
        report["quiet"] = asyncio.run(wait_quiet(args.quiet_pct, args.quiet_wait))
        report["loadavg_before"] = loadavg()
        if args.repeat > 0:
            report["results"] = asyncio.run(run_repeated(opts, workdir, args.repeat, args.pause))
        else:
            report["results"] = asyncio.run(run(opts, workdir))
        ok = True
    except (KeyboardInterrupt, asyncio.CancelledError):
        report["error"] = "interrupted"
    except Exception as exc:
        report["error"] = repr(exc)
        log(f"run failed: {exc!r}\n{tail(workdir / 'core.log')}")
    finally:
        report["loadavg_after"] = loadavg()
        report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if ok and not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            report["workdir"] = str(workdir)
            log(f"data and logs kept in {workdir}")
    out = Path(args.out or RESULTS / ("storm-repeat.json" if args.repeat > 0 else "storm.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if ok:
        print(markdown_repeated(report) if args.repeat > 0 else markdown(report))
    log(f"report written to {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
