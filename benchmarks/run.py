"""Reproduce every benchmark figure of Server Manager with one command.

    .venv/bin/python -m benchmarks.run                       # everything, about 8-10 minutes
    .venv/bin/python -m benchmarks.run --parts agent         # one part: agent, load, storage, history
    .venv/bin/python -m benchmarks.run --parts load --counts 1000,2500

Parts (each starts its own real core as a subprocess on a throwaway data dir, 127.0.0.1 only):

- agent:   the real `servermanager agent` for ~60 s next to `prometheus-node-exporter` scraped at
           1 Hz, both measured the same way with psutil (RSS, and CPU as a cpu_times delta over
           wall time); figures are reported as ratios against node_exporter.
- load:    1,000 and 5,000 simulated agents at 1 Hz (benchmarks.fleet, in processes of their own),
           the core's CPU and RSS over a window after warm-up, the simulator's achieved send rate,
           and push latency (receipt time minus sample.ts) seen by a client subscribed to all nodes.
- storage: SQLite bytes per stored raw sample (dbstat page counts of samples_raw / rows), taken
           from the database of the last load run (or of a short run of its own).
- history: 30 days x 1440 one-minute rollup rows written straight into a core database, then the
           time to answer GET /api/v1/nodes/{id}/metrics?resolution=1m over ~20 repetitions.

Results go to benchmarks/results/latest.json and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psutil

from benchmarks.fleet import percentiles, raise_nofile_limit
from servermanager.common import metrics as mt
from servermanager.common import protocol as p

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
MB = 1024 * 1024

TARGETS = {
    "agent_rss_mb": 30.0,
    "agent_cpu_vs_node_exporter": 0.5,
    "history_p50_ms": 100.0,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def servermanager_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "servermanager"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "servermanager"]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _pcts_ms(values: list[float], qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float | None]:
    return {k: (v if k == "n" else _ms(v)) for k, v in percentiles(values, qs).items()}


# ---------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ne_version = None
    if Path(NODE_EXPORTER).exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([NODE_EXPORTER, "--version"], capture_output=True, text=True, timeout=10)
            ne_version = (out.stdout + out.stderr).splitlines()[0].strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "aiohttp": aiohttp.__version__,
        "node_exporter": ne_version,
        "nofile_limit": raise_nofile_limit(),
    }


# ---------------------------------------------------------------- process measurement


class ProcWatch:
    """CPU% (cpu_times delta over wall time, 100 = one core) and RSS samples of a process tree."""

    def __init__(self, pid: int, name: str, uss: bool = False, children: bool = True) -> None:
        self.proc = psutil.Process(pid)
        self.name = name
        self.uss = uss
        self.children = children
        self.t0 = 0.0
        self.c0 = 0.0
        self.th0: dict[int, float] = {}
        self.rss: list[int] = []
        self.uss_samples: list[int] = []
        self.result: dict[str, Any] = {}

    def _tree(self) -> list[psutil.Process]:
        if not self.children:
            return [self.proc]
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return [self.proc]

    def _cpu(self) -> float:
        total = 0.0
        for pr in self._tree():
            with contextlib.suppress(psutil.Error):
                t = pr.cpu_times()
                total += t.user + t.system
        return total

    def _threads(self) -> dict[int, float]:
        with contextlib.suppress(psutil.Error):
            return {t.id: t.user_time + t.system_time for t in self.proc.threads()}
        return {}

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = self._cpu()
        self.th0 = self._threads()
        self.rss, self.uss_samples = [], []

    def sample(self) -> None:
        rss = uss = 0
        for pr in self._tree():
            with contextlib.suppress(psutil.Error):
                if self.uss:
                    mi = pr.memory_full_info()
                    uss += mi.uss
                    rss += mi.rss
                else:
                    rss += pr.memory_info().rss
        self.rss.append(rss)
        if self.uss:
            self.uss_samples.append(uss)

    def end(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        cpu = self._cpu() - self.c0
        self.result = {
            "seconds": round(wall, 2),
            "cpu_seconds": round(cpu, 3),
            "cpu_pct": round(100 * cpu / wall, 2) if wall > 0 else None,
            "rss_mb_mean": round(sum(self.rss) / len(self.rss) / MB, 1) if self.rss else None,
            "rss_mb_max": round(max(self.rss) / MB, 1) if self.rss else None,
        }
        th1 = self._threads()
        if wall > 0 and len(th1) > 1:
            # The event loop runs on the main thread (tid == pid); SQLite writes on aiosqlite's threads.
            main = th1.get(self.proc.pid, 0.0) - self.th0.get(self.proc.pid, 0.0)
            self.result["main_thread_cpu_pct"] = round(100 * main / wall, 2)
            self.result["other_threads_cpu_pct"] = round(max(0.0, 100 * (cpu - main) / wall), 2)
        if self.uss_samples:
            self.result["uss_mb_mean"] = round(sum(self.uss_samples) / len(self.uss_samples) / MB, 1)
        return self.result


class SystemCpu:
    """Machine-wide busy share over a window: shows when the 2 cores are saturated."""

    def begin(self) -> None:
        self.t0 = psutil.cpu_times()

    def end(self) -> dict[str, float]:
        t1 = psutil.cpu_times()
        total = sum(t1) - sum(self.t0)
        idle = (t1.idle + getattr(t1, "iowait", 0)) - (self.t0.idle + getattr(self.t0, "iowait", 0))
        busy = 100 * (1 - idle / total) if total > 0 else 0.0
        return {"busy_pct_of_all_cores": round(busy, 1), "cores": os.cpu_count() or 0}


async def wait_quiet(limit_pct: float, max_wait: float) -> dict[str, float]:
    """Machine busy share before a part (other people's jobs skew every figure); waits, bounded, for calm."""
    t0 = time.monotonic()
    busy = 100.0
    for _ in range(int(max_wait / 2) + 1):
        sc = SystemCpu()
        sc.begin()
        await asyncio.sleep(2.0)
        busy = sc.end()["busy_pct_of_all_cores"]
        if busy <= limit_pct or time.monotonic() - t0 >= max_wait:
            break
    waited = round(time.monotonic() - t0, 1)
    if busy > limit_pct:
        log(f"machine still {busy}% busy before this part after {waited}s; figures will be skewed")
    return {"busy_pct_before": busy, "waited_s": waited}


# ---------------------------------------------------------------- subprocesses


async def terminate(proc: asyncio.subprocess.Process, timeout: float = 20.0) -> int | None:
    """SIGTERM, wait, then SIGKILL: never leaves a child behind."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
    return proc.returncode


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM if the benchmark itself dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.asynccontextmanager
async def spawned(
    cmd: list[str], log_file: Path, env: dict[str, str] | None = None, pipes: bool = False
) -> AsyncIterator[asyncio.subprocess.Process]:
    fh = log_file.open("ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdout=asyncio.subprocess.PIPE if pipes else fh,
            stderr=fh,
            stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
            env=env,
            cwd=REPO,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        try:
            yield proc
        finally:
            if pipes and proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            await terminate(proc)
    finally:
        fh.close()


def tail(path: Path, n: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    return ""


class CoreProc:
    """A real `servermanager core` subprocess on 127.0.0.1:<free port> with an admin session."""

    def __init__(
        self, workdir: Path, data_dir: Path | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.data_dir = data_dir or workdir / "core"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "core.log"
        self.env = {**os.environ, "SM_CORE_AGENT_INTERVAL": "1", **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.http: aiohttp.ClientSession | None = None
        self.token: str | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def db_path(self) -> Path:
        return self.data_dir / "servermanager.db"

    async def __aenter__(self) -> CoreProc:
        try:
            cmd = [
                *servermanager_cmd(),
                "core",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                f"127.0.0.1:{self.port}",
            ]
            self.proc = await self._stack.enter_async_context(spawned(cmd, self.log, self.env))
            self.http = await self._stack.enter_async_context(aiohttp.ClientSession())
            await self._wait_health()
            password = (self.data_dir / "initial-admin-password").read_text().strip()
            body = await self.request(
                "POST", "/api/v1/auth/login", json={"username": "admin", "password": password}
            )
            self.token = body["access_token"]
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def stop(self) -> int | None:
        """Stop the core now (clean SIGTERM shutdown checkpoints the WAL); returns its exit code."""
        code = await terminate(self.proc) if self.proc is not None else None
        await self._stack.aclose()
        return code

    async def _wait_health(self, timeout: float = 60.0) -> None:
        assert self.http is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"the core exited during start-up:\n{tail(self.log)}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with self.http.get(self.url + "/api/v1/health") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the core did not answer /api/v1/health within {timeout:g}s")

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(method, self.url + path, headers=headers, **kw) as r:
            body = await r.read()
            if r.status >= 300:
                raise RuntimeError(f"{method} {path} -> {r.status}: {body[:300]!r}")
            return msgspec.json.decode(body) if r.content_type == "application/json" else body

    async def enroll_token(self, uses: int) -> str:
        body = await self.request("POST", "/api/v1/enroll-tokens", json={"uses": uses, "ttl": 3600})
        return str(body["token"])

    async def counters(self) -> dict[str, float]:
        """The core's own counters from GET /metrics (samples written, commits)."""
        text = (await self.request("GET", "/metrics")).decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("sm_core_"):
                name, _, value = line.partition(" ")
                out[name] = float(value)
        return out


class FleetProc:
    """`python -m benchmarks.fleet --control` in a process of its own, driven over stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.events.put({"event": "eof"})
                return
            text = line.decode(errors="replace").strip()
            self.lines = [*self.lines[-20:], text]
            with contextlib.suppress(json.JSONDecodeError):
                await self.events.put(json.loads(text))

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.events.get()
                if ev.get("event") == event:
                    return ev
                if ev.get("event") in ("failed", "eof"):
                    raise RuntimeError(f"fleet {self.name} ended: {ev} / {self.lines[-3:]}")

    async def command(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        await self.proc.stdin.drain()

    def close(self) -> None:
        self._reader.cancel()


class _PushSample(msgspec.Struct):
    ts: float


class _PushEvent(msgspec.Struct):
    type: str
    sample: _PushSample | None = None
    frames: list[msgspec.Raw] | None = None  # a batch


class PushClient:
    """A /ws/client subscriber to every node; records receipt time minus sample.ts.

    The core closes a client that falls too far behind (1001); this one then reconnects (a bounded
    number of times) and counts the drop, so a measurement window survives an overload.
    """

    MAX_RECONNECTS = 200

    def __init__(self, url: str, token: str) -> None:
        self.url = url.replace("http://", "ws://") + p.CLIENT_WS_PATH
        self.token = token
        self.recording = False
        self.latencies: list[float] = []
        self.events = 0
        self.samples_total = 0
        self.drops: list[str] = []  # why and when the core closed us
        self.window_drops = 0
        self._dec = msgspec.json.Decoder(_PushEvent)
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(30):
            await self._connected.wait()

    async def _run(self) -> None:
        assert self._session is not None
        t0 = time.monotonic()
        for _ in range(self.MAX_RECONNECTS):
            try:
                ws = await self._session.ws_connect(self.url, max_msg_size=0)
            except (aiohttp.ClientError, OSError) as exc:
                self.drops.append(f"+{time.monotonic() - t0:.0f}s connect failed: {exc!r}")
                await asyncio.sleep(1.0)
                continue
            try:
                await ws.send_bytes(p.encode(p.Auth(token=self.token)))
                ok = await ws.receive(timeout=30)
                if '"auth_ok"' not in str(ok.data):
                    raise RuntimeError(f"client auth failed: {ok}")
                await ws.send_bytes(p.encode(p.Subscribe(all=True)))
                self._connected.set()
                await self._read(ws)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.drops.append(f"+{time.monotonic() - t0:.0f}s {exc!r}")
            finally:
                await ws.close()
            self.drops.append(f"+{time.monotonic() - t0:.0f}s closed by the core ({ws.close_code})")
            if self.recording:
                self.window_drops += 1
            await asyncio.sleep(0.5)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        dec, now = self._dec, time.time
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            t = now()
            ev = dec.decode(msg.data)
            events = [dec.decode(raw) for raw in ev.frames] if ev.frames is not None else [ev]
            for ev in events:
                if ev.type == "sample" and ev.sample is not None:
                    self.samples_total += 1
                    if self.recording:
                        self.events += 1
                        if len(self.latencies) < 5_000_000:
                            self.latencies.append(t - ev.sample.ts)

    def begin(self) -> None:
        self.latencies, self.events, self.window_drops, self.recording = [], 0, 0, True

    def end(self) -> None:
        self.recording = False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)
        if self._session is not None:
            await self._session.close()


async def _sample_every_second(
    watches: list[ProcWatch], seconds: float, tick: Callable[[], Any] | None = None
) -> None:
    """Bounded measurement loop: one RSS sample (and optional tick) per second for `seconds`."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds) + 2):
        start = time.monotonic()
        if start >= deadline:
            return
        for w in watches:
            w.sample()
        if tick is not None:
            res = tick()
            if asyncio.iscoroutine(res):
                await res
        await asyncio.sleep(max(0.0, min(1.0 - (time.monotonic() - start), deadline - time.monotonic())))


# ---------------------------------------------------------------- part a: agent overhead


def py_compile_tree(folder: Path) -> None:
    """Write the __pycache__ files an installed package has (compileall ignores PYTHONDONTWRITEBYTECODE)."""
    import compileall

    compileall.compile_dir(str(folder), quiet=1)


def install_agent_venv(venv: Path) -> None:
    """A fresh venv holding the agent exactly as installed on a server (wheel build, byte-compiled)."""
    import subprocess
    import venv as venv_module

    venv_module.EnvBuilder(with_pip=True, clear=True).create(venv)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"{REPO}[agent]"],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"pip install of the agent failed:\n{done.stdout}\n{done.stderr}")


async def bench_agent(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"duration_s": args.agent_duration, "interval_s": 1.0}
    if shutil.which(NODE_EXPORTER) is None:
        out["error"] = f"{NODE_EXPORTER} is missing: apt-get install -y prometheus-node-exporter"
        return out
    async with contextlib.AsyncExitStack() as stack:
        core = await stack.enter_async_context(CoreProc(workdir))
        token = await core.enroll_token(1)
        ne_port = free_port()
        ne = await stack.enter_async_context(
            spawned(
                [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{ne_port}"], workdir / "node_exporter.log"
            )
        )
        state = workdir / "agent-state"
        state.mkdir(mode=0o700)
        os.chmod(state, 0o700)
        agent_env = {**os.environ, "SM_AGENT_ENROLL_TOKEN": token}
        agent_log = workdir / "agent.log"
        if args.agent_from == "venv":
            # Measure the agent as a server gets it: `pip install servermanager[agent]` in a venv of
            # its own. The dev venv's editable install adds an import hook (pathlib, re, urllib.parse
            # at every start), and a source tree run with PYTHONDONTWRITEBYTECODE set would compile
            # every module at each start; neither is what ships.
            venv = workdir / "agent-venv"
            out["installed_with"] = "python -m venv, then pip install '<this checkout>[agent]' (non-editable)"
            await asyncio.to_thread(install_agent_venv, venv)
            exe = [str(venv / "bin" / "servermanager")]
        else:
            for pkg in ("core", "agent"):
                await asyncio.to_thread(py_compile_tree, REPO / pkg)
            exe = servermanager_cmd()
        cmd = [
            *exe,
            "agent",
            "--core",
            core.url,
            "--state-dir",
            str(state),
            "--interval",
            "1",
        ]
        agent = await stack.enter_async_context(spawned(cmd, agent_log, agent_env))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        scrape_url = f"http://127.0.0.1:{ne_port}/metrics"

        node: dict[str, Any] | None = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and node is None:
            if agent.returncode is not None:
                out["error"] = f"the agent exited with {agent.returncode}:\n{tail(agent_log)}"
                return out
            nodes = (await core.request("GET", "/api/v1/nodes"))["nodes"]
            node = next((n for n in nodes if n["online"] and n.get("latest")), None)
            await asyncio.sleep(0.5)
        if node is None:
            out["error"] = f"the agent never delivered a sample within 60s:\n{tail(agent_log)}"
            return out
        log(f"agent online as node {node['id']}; warming up {args.agent_warmup:g}s")

        scrapes: list[float] = []
        scrape_bytes: list[int] = []

        async def scrape() -> None:
            t = time.perf_counter()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(scrape_url, timeout=aiohttp.ClientTimeout(total=5)) as r:
                    body = await r.read()
                    scrape_bytes.append(len(body))
                    scrapes.append(time.perf_counter() - t)

        # The warm-up scrapes node_exporter too, so both are in their steady state at the start.
        warm = [ProcWatch(agent.pid, "agent")]
        await _sample_every_second(warm, args.agent_warmup, scrape)
        scrapes.clear()
        scrape_bytes.clear()
        aw, nw = ProcWatch(agent.pid, "agent", uss=True), ProcWatch(ne.pid, "node_exporter", uss=True)
        t_from = time.time()
        system = SystemCpu()
        system.begin()
        aw.begin()
        nw.begin()
        log(f"measuring agent and node_exporter for {args.agent_duration:g}s")
        await _sample_every_second([aw, nw], args.agent_duration, scrape)
        a, n = aw.end(), nw.end()
        out["machine_cpu"] = system.end()
        t_to = time.time()
        hist = await core.request(
            "GET", f"/api/v1/nodes/{node['id']}/metrics?from={t_from}&to={t_to}&resolution=raw&fields=cpu_pct"
        )
        out["agent"] = a
        out["agent"]["samples_stored_in_window"] = len(hist["ts"])
        out["node_exporter"] = n
        out["node_exporter"]["scrapes"] = len(scrapes)
        out["node_exporter"]["scrape_ms_p50"] = _ms(percentiles(scrapes)["p50"])
        out["node_exporter"]["scrape_bytes_mean"] = round(sum(scrape_bytes) / max(1, len(scrape_bytes)))
        cpu_ratio = a["cpu_pct"] / n["cpu_pct"] if n["cpu_pct"] else None
        rss_ratio = a["rss_mb_mean"] / n["rss_mb_mean"] if n["rss_mb_mean"] else None
        out["ratios"] = {
            "cpu_agent_over_node_exporter": round(cpu_ratio, 3) if cpu_ratio is not None else None,
            "rss_agent_over_node_exporter": round(rss_ratio, 3) if rss_ratio is not None else None,
        }
        out["targets"] = {
            "agent_rss_le_30mb": a["rss_mb_max"] <= TARGETS["agent_rss_mb"],
            "agent_cpu_le_half_node_exporter": cpu_ratio is not None
            and cpu_ratio <= TARGETS["agent_cpu_vs_node_exporter"],
        }
        if agent.returncode is not None:
            out["error"] = f"the agent exited during the run with {agent.returncode}"
    return out


# ---------------------------------------------------------------- part b: core load


async def bench_load(args: argparse.Namespace, count: int, workdir: Path) -> dict[str, Any]:
    nprocs = max(1, math.ceil(count / args.per_process))
    sizes = [count // nprocs + (1 if i < count % nprocs else 0) for i in range(nprocs)]
    out: dict[str, Any] = {
        "agents": count,
        "interval_s": args.interval,
        "target_rate": round(count / args.interval, 1),
        "simulator_processes": nprocs,
        "warmup_s": args.load_warmup,
        "window_s": args.load_duration,
    }
    async with contextlib.AsyncExitStack() as stack:
        core = await stack.enter_async_context(CoreProc(workdir))
        assert core.proc is not None and core.token is not None
        # Headroom: an agent whose welcome is lost (handshake timeout under overload) enrolls again
        # and spends another use; the orphaned nodes are counted below.
        token = await core.enroll_token(count + max(100, count // 2))
        client = PushClient(core.url, core.token)
        await client.start()
        stack.push_async_callback(client.stop)

        fleets: list[FleetProc] = []
        upper = args.start_timeout + args.load_warmup + args.load_duration + 180
        t_enroll = time.monotonic()
        for i, n in enumerate(sizes):
            cmd = [
                sys.executable, "-m", "benchmarks.fleet", "--control",
                "--core", core.url, "--token", token, "--count", str(n), "--interval", str(args.interval),
                "--prefix", f"sim{i}", "--duration", str(upper), "--start-timeout", str(args.start_timeout),
                "--connect-timeout", str(args.connect_timeout), "--allow-partial",
                "--ping-interval", str(args.ping_interval),
                "--seed", str(1000 + i),
            ]  # fmt: skip
            proc = await stack.enter_async_context(spawned(cmd, workdir / f"fleet{i}.log", pipes=True))
            fleet = FleetProc(proc, f"fleet{i}")
            stack.callback(fleet.close)
            fleets.append(fleet)
        log(f"{count} agents: enrolling in {nprocs} simulator process(es)")
        ready = await asyncio.gather(*(f.expect("ready", args.start_timeout + 30) for f in fleets))
        out["enroll_seconds"] = round(time.monotonic() - t_enroll, 1)
        out["enrolled"] = sum(r["nodes"] for r in ready)
        out["ping_interval_s"] = args.ping_interval
        log(f"{count} agents enrolled in {out['enroll_seconds']}s ({[r['enroll_seconds'] for r in ready]}); "
            f"warming up {args.load_warmup:g}s")  # fmt: skip
        await asyncio.sleep(args.load_warmup)

        c0 = await core.counters()
        watches = [ProcWatch(core.proc.pid, "core")] + [ProcWatch(f.proc.pid, f.name) for f in fleets]
        me = ProcWatch(os.getpid(), "observer", children=False)
        system = SystemCpu()
        for f in fleets:
            await f.command("begin")
        await asyncio.gather(*(f.expect("begin", 30) for f in fleets))
        for w in [*watches, me]:
            w.begin()
        system.begin()
        client.begin()
        profile = None
        if args.profile:
            profile = await start_profile(core.proc.pid, args.load_duration, workdir / f"profile-{count}.txt")
        health: list[float] = []

        async def probe() -> None:
            # How long the core takes to answer its cheapest request: its event loop's backlog.
            assert core.http is not None
            t = time.perf_counter()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with core.http.get(
                    core.url + "/api/v1/health", timeout=aiohttp.ClientTimeout(total=10)
                ) as r:
                    await r.read()
                    health.append(time.perf_counter() - t)

        log(f"measuring the core for {args.load_duration:g}s")
        await _sample_every_second(watches, args.load_duration, probe)
        client.end()
        sys_cpu = system.end()
        res = [w.end() for w in watches]
        observer = me.end()
        for f in fleets:
            await f.command("report")
        reports = await asyncio.gather(*(f.expect("report", 30) for f in fleets))
        c1 = await core.counters()
        if profile is not None:
            out["profile"] = await finish_profile(profile, workdir / f"profile-{count}.txt", count)

        window = res[0]["seconds"]
        sent = sum(r["samples_sent"] for r in reports)
        acked = sum(r["samples_acked"] for r in reports)
        written = c1.get("sm_core_samples_written_total", 0) - c0.get("sm_core_samples_written_total", 0)
        commits = c1.get("sm_core_commits_total", 0) - c0.get("sm_core_commits_total", 0)
        out["core"] = res[0]
        out["core"]["samples_written_per_s"] = round(written / window, 1)
        out["core"]["commits_per_s"] = round(commits / window, 2)
        out["simulator"] = {
            "processes": [
                {**res[i + 1], **{k: reports[i][k] for k in ("agents", "connected", "send_rate", "ack_rate")}}
                for i in range(nprocs)
            ],
            "achieved_send_rate": round(sent / window, 1),
            "achieved_ack_rate": round(acked / window, 1),
            "achieved_fraction_of_target": round(sent / window / out["target_rate"], 3),
            "ticks_missed": sum(r["ticks_missed"] for r in reports),
            "reconnects": sum(r["reconnects"] for r in reports),
            "error_frames": sum(r["error_frames"] for r in reports),
            "connected_at_end": sum(r["connected"] for r in reports),
            "send_lag_ms_p99": max((r["send_lag_ms"]["p99"] or 0) for r in reports),
            "ack_latency_ms": _merge_pcts([r["ack_latency_ms"] for r in reports]),
            "last_error": next((r["last_error"] for r in reports if r["last_error"]), None),
        }
        out["push"] = {
            "events_per_s": round(client.events / window, 1),
            "latency_ms": _pcts_ms(client.latencies),
            "client_dropped_in_window": client.window_drops,
            "client_drops": client.drops[:20],
        }
        out["core"]["health_ms"] = _pcts_ms(health, (50, 99))
        ours = sum(r["cpu_pct"] for r in res) + observer["cpu_pct"]
        sys_cpu["others_pct_of_one_core"] = round(
            max(0.0, sys_cpu["busy_pct_of_all_cores"] * sys_cpu["cores"] - ours), 1
        )
        out["machine_cpu"] = sys_cpu
        out["observer"] = observer
        log(
            f"{count} agents: core cpu {res[0]['cpu_pct']}% rss {res[0]['rss_mb_max']} MB, "
            f"sent {out['simulator']['achieved_send_rate']}/s, push p50 {out['push']['latency_ms']['p50']} ms "
            f"p99 {out['push']['latency_ms']['p99']} ms"
        )

        log("stopping the simulator and the core")
        for f in fleets:
            with contextlib.suppress(Exception):
                await f.command("stop")
        for f in fleets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(f.proc.wait(), 40)
        await client.stop()
        out["core_exit_code"] = await core.stop()
    out["core_log"] = core_log_counts(core.log)
    out["nodes_created"] = _count_rows(core.db_path, "nodes")
    out["db_path"] = str(core.db_path)
    return out


def _count_rows(db: Path, table: str) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        con.close()


def core_log_counts(path: Path) -> dict[str, int]:
    """Trouble the core logged during the whole run (enrollment and shutdown included)."""
    marks = {
        "heartbeat_timeouts": "silent for",
        "replaced_connections": "replaces the old one",
        "commit_failures": "sample commit failed",
        "errors": " ERROR ",
    }
    counts = dict.fromkeys(marks, 0)
    with contextlib.suppress(OSError), path.open(errors="replace") as fh:
        for line in fh:
            for key, mark in marks.items():
                if mark in line:
                    counts[key] += 1
    return counts


def _merge_pcts(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' percentiles: the worst of each (an upper bound), and the total n."""
    keys = [k for k in items[0] if k != "n"] if items else []
    merged: dict[str, Any] = {k: max((i[k] for i in items if i[k] is not None), default=None) for k in keys}
    merged["n"] = sum(i["n"] for i in items)
    return merged


async def start_profile(pid: int, seconds: float, path: Path) -> asyncio.subprocess.Process | None:
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        log("py-spy not installed in the venv; --profile skipped")
        return None
    cmd = [str(spy), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "50",
           "--format", "raw", "--threads", "--nonblocking", "--output", str(path)]  # fmt: skip
    return await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def finish_profile(proc: asyncio.subprocess.Process, path: Path, count: int) -> dict[str, Any]:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 60)
    await terminate(proc)
    return _keep_profile(path, count)


def _keep_profile(path: Path, count: int) -> dict[str, Any]:
    if not path.exists():
        return {"error": "py-spy wrote nothing"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    keep = RESULTS / f"profile-core-{count}.txt"
    shutil.copy(path, keep)
    return {"collapsed_stacks": str(keep.relative_to(REPO)), **summarize_profile(path)}


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed ('raw') output."""
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        k = int(n)
        total += k
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]  # fmt: skip
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + k
        for f in set(frames):
            incl_n[f] = incl_n.get(f, 0) + k

    def share(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(f, round(100 * n / total, 1)) for f, n in sorted(d.items(), key=lambda x: -x[1])[:top]]

    return {"samples": total, "self_pct": share(self_n), "inclusive_pct": share(incl_n)}


# ---------------------------------------------------------------- part c: storage


def storage_stats(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = con.execute("SELECT count(*) FROM samples_raw").fetchone()[0]
        page = con.execute("PRAGMA page_size").fetchone()[0]
        pages, pgsize, payload, unused = con.execute(
            "SELECT count(*), sum(pgsize), sum(payload), sum(unused) FROM dbstat WHERE name = 'samples_raw'"
        ).fetchone()
        detail = con.execute("SELECT avg(length(detail)) FROM samples_raw").fetchone()[0]
        nodes = con.execute("SELECT count(DISTINCT node_id) FROM samples_raw").fetchone()[0]
    finally:
        con.close()
    files = {s: os.path.getsize(str(db) + s) for s in ("", "-wal") if os.path.exists(str(db) + s)}
    file_bytes = sum(files.values())
    return {
        "rows": rows,
        "nodes": nodes,
        "page_size": page,
        "pages": pages,
        "bytes_per_row_pages": round(pgsize / rows, 1) if rows else None,
        "bytes_per_row_payload": round(payload / rows, 1) if rows else None,
        "page_fill_pct": round(100 * (pgsize - unused) / pgsize, 1) if pgsize else None,
        "detail_blob_bytes_mean": round(detail, 1) if detail else None,
        "db_file_bytes": file_bytes,
        "bytes_per_row_whole_file": round(file_bytes / rows, 1) if rows else None,
    }


# ---------------------------------------------------------------- part d: history query


def build_history_db(path: Path, days: int, seed: int = 7) -> tuple[int, int, int]:
    """One node with `days` x 1440 one-minute rollups (and the matching 1h rows); returns id, from, to (ms)."""
    from servermanager.core.store.schema import migrate_sync

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    migrate_sync(path)
    rng = random.Random(seed)
    end = int(time.time() // 60 * 60_000)
    start = end - days * 86_400_000
    con = sqlite3.connect(path)
    try:
        cur = con.execute(
            "INSERT INTO nodes (name, cred_hash, host, created_at) VALUES (?, ?, NULL, ?)",
            ("history-bench", secrets.token_bytes(32), start / 1000),
        )
        node_id = int(cur.lastrowid or 0)
        cols = ["node_id", "ts", "cnt"] + [
            f"{f}_{a}" for f in mt.SCALAR_FIELDS for a in ("avg", "min", "max")
        ]
        sql = f"INSERT INTO samples_1m ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        scale = {"mem_used": 4e9, "procs": 200, "uptime": 1e6, "disk_read_bps": 4e5, "disk_write_bps": 9e5,
                 "net_rx_bps": 2.5e5, "net_tx_bps": 1.2e5, "disk_read_iops": 20, "disk_write_iops": 60}  # fmt: skip
        level = {f: scale.get(f, 30.0) for f in mt.SCALAR_FIELDS}
        rows = []
        for i in range(days * 1440):
            ts = start + (i + 1) * 60_000
            vals: list[float] = []
            for f in mt.SCALAR_FIELDS:
                s = scale.get(f, 30.0)
                level[f] = min(max(level[f] + rng.gauss(0, s * 0.02), 0.0), s * 3)
                avg, d = level[f], mt.FIELD_DECIMALS[f]
                # Rounded as the core's rollup stores them.
                vals += [
                    round(avg, d),
                    round(avg * rng.uniform(0.7, 1.0), d),
                    round(avg * rng.uniform(1.0, 1.3), d),
                ]
            rows.append((node_id, ts, 60, *vals))
        con.executemany(sql, rows)
        # One hourly row per hour (values of the hour's last minute): enough for resolution=auto.
        hour = [
            (node_id, start + (h + 1) * 3_600_000, 3600, *rows[h * 60 + 59][3:]) for h in range(days * 24)
        ]
        con.executemany(sql.replace("samples_1m", "samples_1h"), hour)
        con.commit()
    finally:
        con.close()
    return node_id, start, end


async def bench_history(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    data = workdir / "core"
    t = time.monotonic()
    node_id, start, end = build_history_db(data / "servermanager.db", args.history_days)
    out: dict[str, Any] = {"days": args.history_days, "rows_1m": args.history_days * 1440, "node_id": node_id}
    out["build_seconds"] = round(time.monotonic() - t, 1)
    out["storage_1m"] = _table_bytes(data / "servermanager.db", "samples_1m", args.history_days * 1440)
    frm, to = start / 1000, end / 1000
    week = to - 7 * 86400
    variants = {
        # One chart's series (avg, min and max of a field): first, so its first answer is a cold one.
        "1m_cpu_pct": f"resolution=1m&from={frm}&to={to}&fields=cpu_pct",
        "1m_all_fields": f"resolution=1m&from={frm}&to={to}",
        # What a chart asks for: 30 days of 1m rows merged into as many points as it has pixels.
        "1m_cpu_pct_2000_points": f"resolution=1m&from={frm}&to={to}&fields=cpu_pct&points=2000",
        "1m_all_fields_2000_points": f"resolution=1m&from={frm}&to={to}&points=2000",
        "auto_all_fields": f"resolution=auto&from={frm}&to={to}",
        # The longest range for which resolution=auto still picks 1m rollups.
        "7d_auto_all_fields": f"resolution=auto&from={week}&to={to}",
    }
    # Twice: with the history cache off (every answer read and written out by SQLite: what a
    # first look at a node costs) and on, as shipped (past days come ready from memory).
    for key, env in (("queries_no_cache", {"SM_CORE_HISTORY_CACHE_MB": "0"}), ("queries", {})):
        async with CoreProc(workdir, data, env) as core:
            out[key] = await _history_queries(core, node_id, variants, args.history_reps)
    out["sql_only"] = _sql_timing(data / "servermanager.db", node_id, start, end, args.history_reps)
    limit = TARGETS["history_p50_ms"]
    out["targets"] = {
        "p50_lt_100ms_one_field": out["queries"]["1m_cpu_pct"]["p50"] < limit,
        "p50_lt_100ms_one_field_no_cache": out["queries_no_cache"]["1m_cpu_pct"]["p50"] < limit,
        "p50_lt_100ms_all_fields": out["queries"]["1m_all_fields"]["p50"] < limit,
    }
    return out


async def _history_queries(
    core: CoreProc, node_id: int, variants: dict[str, str], reps: int
) -> dict[str, Any]:
    assert core.http is not None
    headers = {"Authorization": f"Bearer {core.token}"}
    results: dict[str, Any] = {}
    for name, query in variants.items():
        url = f"{core.url}/api/v1/nodes/{node_id}/metrics?{query}"
        times: list[float] = []
        first = size = points = None
        resolution = None
        for i in range(reps + 1):
            t0 = time.perf_counter()
            async with core.http.get(url, headers=headers) as r:
                body = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"history query failed {r.status}: {body[:300]!r}")
            dt = time.perf_counter() - t0
            if i == 0:
                first = dt  # the first answer pays for cold caches: reported apart
                doc = msgspec.json.decode(body)
                size, points, resolution = len(body), len(doc["ts"]), doc["resolution"]
            else:
                times.append(dt)
        results[name] = {
            "resolution": resolution,
            "points": points,
            "response_bytes": size,
            "first_ms": _ms(first),
            **_pcts_ms(times, (50, 95)),
        }
        log(f"history {name}: p50 {results[name]['p50']} ms, p95 {results[name]['p95']} ms, {size} bytes")
    return results


def _table_bytes(db: Path, table: str, rows: int) -> dict[str, Any]:
    con = sqlite3.connect(db)
    try:
        pgsize, payload = con.execute(
            "SELECT sum(pgsize), sum(payload) FROM dbstat WHERE name = ?", (table,)
        ).fetchone()
    finally:
        con.close()
    return {"bytes_per_row_pages": round(pgsize / rows, 1), "bytes_per_row_payload": round(payload / rows, 1)}


def _sql_timing(db: Path, node_id: int, start: int, end: int, reps: int) -> dict[str, Any]:
    """The same SELECT the core runs, without HTTP or JSON: how much of the time is SQLite's."""
    out = {}
    con = sqlite3.connect(db)
    try:
        for name, fields in (("1m_all_fields", mt.SCALAR_FIELDS), ("1m_cpu_pct", ("cpu_pct",))):
            exprs = ", ".join(f"{f}_avg, {f}_min, {f}_max" for f in fields)
            sql = f"SELECT ts, {exprs} FROM samples_1m WHERE node_id = ? AND ts >= ? AND ts <= ? ORDER BY ts"
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                con.execute(sql, (node_id, start, end)).fetchall()
                times.append(time.perf_counter() - t0)
            out[name] = _pcts_ms(times, (50, 95))
    finally:
        con.close()
    return out


# ---------------------------------------------------------------- report


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, SQLite {m['sqlite']}",
        "",
    ]
    a = results.get("agent_overhead")
    if a:
        lines += ["### Agent overhead (same run, same measurement)", ""]
        if "agent" in a:
            ag, ne, r = a["agent"], a["node_exporter"], a["ratios"]
            lines += [
                "| | servermanager agent | prometheus-node-exporter | agent / node_exporter | target |",
                "|---|---|---|---|---|",
                f"| CPU (% of one core) | {ag['cpu_pct']} | {ne['cpu_pct']} | "
                f"{r['cpu_agent_over_node_exporter']} | ≤ 0.5 x node_exporter: "
                f"{_ok(a['targets']['agent_cpu_le_half_node_exporter'])} |",
                f"| RSS mean / max (MB) | {ag['rss_mb_mean']} / {ag['rss_mb_max']} | "
                f"{ne['rss_mb_mean']} / {ne['rss_mb_max']} | {r['rss_agent_over_node_exporter']} | "
                f"≤ 30 MB: {_ok(a['targets']['agent_rss_le_30mb'])} |",
                f"| USS mean (MB) | {ag.get('uss_mb_mean')} | {ne.get('uss_mb_mean')} | | |",
                "",
            ]
        if a.get("error"):
            lines += [f"Error: {a['error']}", ""]
    loads = results.get("core_load") or []
    if loads:
        lines += [
            "### Core under simulated agents (1 sample/s each; simulator shares the 2 cores)",
            "",
            "| agents | sim procs | achieved send rate (/s) | core CPU % (loop thread) | core RSS max (MB) | "
            "push p50 / p99 (ms) | ack p99 (ms) | machine busy % (others, % of a core) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for ld in loads:
            if "error" in ld:
                lines.append(f"| {ld['agents']} | | error: {ld['error']} | | | | | |")
                continue
            s, c, pu = ld["simulator"], ld["core"], ld["push"]["latency_ms"]
            lines.append(
                f"| {ld['agents']} | {ld['simulator_processes']} | {s['achieved_send_rate']} of "
                f"{ld['target_rate']} | {c['cpu_pct']} ({c.get('main_thread_cpu_pct')}) | {c['rss_mb_max']} | "
                f"{pu['p50']} / {pu['p99']} | "
                f"{s['ack_latency_ms']['p99']} | {ld['machine_cpu']['busy_pct_of_all_cores']} "
                f"({ld['machine_cpu'].get('others_pct_of_one_core')}) |"
            )
        lines.append("")
    st = results.get("storage")
    if st and "rows" in st:
        lines += [
            "### SQLite bytes per raw sample",
            "",
            "| rows | nodes | bytes/row (samples_raw pages) | payload bytes/row | page fill | whole file bytes/row |",
            "|---|---|---|---|---|---|",
            f"| {st['rows']} | {st['nodes']} | {st['bytes_per_row_pages']} | {st['bytes_per_row_payload']} | "
            f"{st['page_fill_pct']} % | {st['bytes_per_row_whole_file']} |",
            "",
        ]
    h = results.get("history")
    if h and "queries" in h:
        lines += [
            f"### {h['days']}-day history query ({h['rows_1m']} one-minute rollups)",
            "",
            "| query | resolution | points | response bytes | p50 / p95 (ms) | first (ms) | "
            "cache off: p50 / p95 (ms) | SQL rows only p50 (ms) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, q in h["queries"].items():
            sql = h["sql_only"].get(name, {}).get("p50", "")
            off = h.get("queries_no_cache", {}).get(name, {})
            lines.append(
                f"| {name} | {q['resolution']} | {q['points']} | {q['response_bytes']} | {q['p50']} / "
                f"{q['p95']} | {q['first_ms']} | {off.get('p50')} / {off.get('p95')} | {sql} |"
            )
        t = h["targets"]
        lines += [
            "",
            f"Target p50 < 100 ms, one field at 1m: {_ok(t['p50_lt_100ms_one_field'])} "
            f"(cache off: {_ok(t['p50_lt_100ms_one_field_no_cache'])}); "
            f"all 16 fields at 1m: {_ok(t['p50_lt_100ms_all_fields'])}",
            "",
        ]
    return "\n".join(lines)


def _ok(flag: bool) -> str:
    return "met" if flag else "MISSED"


# ---------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = set(args.parts.split(","))
    unknown = parts - {"agent", "load", "storage", "history"}
    if unknown:
        raise SystemExit(f"unknown part(s): {', '.join(sorted(unknown))}")
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    base = Path(tempfile.mkdtemp(prefix="sm-bench-", dir=args.workdir))
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *sys.argv[1:]]),
        "machine": machine_info(),
    }
    try:
        if "agent" in parts:
            log("part a: agent overhead vs prometheus-node-exporter")
            try:
                quiet = await wait_quiet(args.quiet_pct, args.quiet_wait)
                results["agent_overhead"] = await bench_agent(args, _sub(base, "agent"))
                results["agent_overhead"]["before"] = quiet
            except Exception as exc:
                results["agent_overhead"] = {"error": repr(exc)}
        last_db: Path | None = None
        if "load" in parts:
            results["core_load"] = []
            for n in counts:
                log(f"part b: core load with {n} simulated agents")
                try:
                    quiet = await wait_quiet(args.quiet_pct, args.quiet_wait)
                    res = await bench_load(args, n, _sub(base, f"load-{n}"))
                    res["before"] = quiet
                    last_db = Path(res.pop("db_path"))
                    if "storage" in parts:
                        res["storage"] = storage_stats(last_db)
                except Exception as exc:
                    res = {"agents": n, "error": repr(exc)}
                results["core_load"].append(res)
        if "storage" in parts:
            log("part c: bytes per raw sample")
            if last_db is None:
                small = argparse.Namespace(**{**vars(args), "load_warmup": 0.0, "load_duration": 30.0})
                res = await bench_load(small, args.storage_agents, _sub(base, "storage"))
                last_db = Path(res["db_path"])
            results["storage"] = storage_stats(last_db)
        if "history" in parts:
            log(f"part d: {args.history_days}-day history query")
            try:
                quiet = await wait_quiet(args.quiet_pct, args.quiet_wait)
                results["history"] = await bench_history(args, _sub(base, "history"))
                results["history"]["before"] = quiet
            except Exception as exc:
                results["history"] = {"error": repr(exc)}
    finally:
        if args.keep_data:
            log(f"data kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return results


async def _main_cancellable(args: argparse.Namespace) -> dict[str, Any]:
    """SIGTERM and SIGINT cancel the run, so every child is stopped and the data dirs removed."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await run(args)


def _sub(base: Path, name: str) -> Path:
    d = base / name
    d.mkdir(mode=0o700)
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--parts", default="agent,load,storage,history", help="comma list of agent,load,storage,history"
    )
    ap.add_argument("--counts", default="1000,5000", help="simulated agent counts for the load part")
    ap.add_argument("--interval", type=float, default=1.0, help="simulated agents' sample interval (s)")
    ap.add_argument("--per-process", type=int, default=2500, help="simulated agents per simulator process")
    ap.add_argument(
        "--load-warmup", type=float, default=15.0, help="seconds after enrollment before measuring"
    )
    ap.add_argument(
        "--load-duration", type=float, default=45.0, help="seconds of the core measurement window"
    )
    ap.add_argument("--start-timeout", type=float, default=180.0, help="seconds allowed to enroll a fleet")
    ap.add_argument(
        "--ping-interval",
        type=float,
        default=0.0,
        help="simulated agents' extra ping period (default 0: none, as a streaming agent sends none)",
    )
    ap.add_argument("--connect-timeout", type=float, default=10.0, help="simulated agents' handshake timeout")
    ap.add_argument("--storage-agents", type=int, default=1000, help="agents of the storage part's own run")
    ap.add_argument("--agent-duration", type=float, default=60.0, help="seconds of the agent measurement")
    ap.add_argument(
        "--agent-from",
        choices=("venv", "tree"),
        default="venv",
        help="venv: pip-install the agent into a fresh venv, as on a server (default); tree: run this checkout",
    )
    ap.add_argument("--agent-warmup", type=float, default=10.0, help="seconds after the agent's first sample")
    ap.add_argument("--history-days", type=int, default=30)
    ap.add_argument("--history-reps", type=int, default=20)
    ap.add_argument("--quiet-pct", type=float, default=10.0, help="machine busy %% to wait for before a part")
    ap.add_argument("--quiet-wait", type=float, default=60.0, help="longest wait for a quiet machine (s)")
    ap.add_argument("--profile", action="store_true", help="py-spy the core during each load window")
    ap.add_argument(
        "--workdir", default=None, help="parent of the throwaway data dirs (default: system temp)"
    )
    ap.add_argument("--keep-data", action="store_true", help="keep data dirs and logs")
    ap.add_argument("--out", default=str(RESULTS / "latest.json"), help="where the JSON results go")
    args = ap.parse_args(argv)
    for name in ("load_duration", "agent_duration"):
        if not 1 <= getattr(args, name) <= 3600:
            ap.error(f"--{name.replace('_', '-')} must be between 1 and 3600 seconds")
    raise_nofile_limit()
    try:
        results = asyncio.run(_main_cancellable(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        log("interrupted: children stopped, nothing written")
        return 130
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    log(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
