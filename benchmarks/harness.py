"""The benchmarks' shared harness: machine info, process measurement, child processes, a real core, a push client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psutil

from benchmarks.fleet import percentiles, raise_nofile_limit
from devkit.ports import free_port
from servermanager.common import protocol as p
from servermanager.core.datadir import initial_admin_password

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
MB = 1024 * 1024


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def servermanager_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "servermanager"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "servermanager"]


def to_ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def pcts_ms(values: list[float], qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float | None]:
    return {k: (v if k == "n" else to_ms(v)) for k, v in percentiles(values, qs).items()}


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


async def sample_every_second(
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
            async with asyncio.timeout(timeout):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await proc.wait()
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


# ---------------------------------------------------------------- a real core


class CoreProc:
    """A real `servermanager core` subprocess on 127.0.0.1:<free port> with an admin session."""

    def __init__(
        self,
        workdir: Path,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        cmd: list[str] | None = None,
    ) -> None:
        """cmd: what runs `servermanager` (default: this venv's; another checkout's for a before/after)."""
        self.workdir = workdir
        self.cmd = cmd or servermanager_cmd()
        self.data_dir = data_dir or workdir / "core"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "core.log"
        # A day-long access token: a load window of 15 minutes or more outlived the default one.
        self.env = {
            **os.environ,
            "SM_CORE_AGENT_INTERVAL": "1",
            "SM_CORE_ACCESS_TOKEN_TTL": "86400",
            **(env or {}),
        }
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
                *self.cmd,
                "core",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                f"127.0.0.1:{self.port}",
            ]
            self.proc = await self._stack.enter_async_context(spawned(cmd, self.log, self.env))
            self.http = await self._stack.enter_async_context(aiohttp.ClientSession())
            await self._wait_health()
            password = initial_admin_password(self.data_dir)
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


# ---------------------------------------------------------------- push latency


class _PushSample(msgspec.Struct):
    ts: float


class _PushAlert(msgspec.Struct):
    state: str
    node_id: int = 0
    started_at: float = 0.0
    fired_at: float | None = None


class _PushEvent(msgspec.Struct):
    type: str
    sample: _PushSample | None = None
    alert: _PushAlert | None = None
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
        # The longest wait per whole second of receipt (unix time): when the tail happened, to set
        # beside what the core logged then (a collection, a rollup pass).
        self.worst_by_second: dict[int, float] = {}
        self.events = 0
        self.samples_total = 0
        # Alert events in the window by what happened: pending, firing, resolved, or dropped (a
        # pending alert whose condition stopped before `for`; it is sent as resolved, never fired).
        self.alert_events: dict[str, int] = {}
        # With track_fired: receipt time of each firing alert event, by (node_id, started_at).
        self.track_fired = False
        self.fired: dict[tuple[int, float], float] = {}
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
                            lat = t - ev.sample.ts
                            self.latencies.append(lat)
                            sec = int(t)
                            if lat > self.worst_by_second.get(sec, 0.0):
                                self.worst_by_second[sec] = lat
                elif ev.type == "alert" and ev.alert is not None and self.recording:
                    a = ev.alert
                    kind = "dropped" if a.state == "resolved" and a.fired_at is None else a.state
                    self.alert_events[kind] = self.alert_events.get(kind, 0) + 1
                    if self.track_fired and kind == "firing":
                        self.fired.setdefault((a.node_id, a.started_at), t)

    def begin(self) -> None:
        self.latencies, self.events, self.window_drops, self.recording = [], 0, 0, True
        self.worst_by_second = {}
        self.alert_events = {}

    def end(self) -> None:
        self.recording = False

    def worst_seconds(self, n: int = 8) -> list[tuple[int, float]]:
        """The n seconds of the window with the longest waits: (unix second, ms), worst first."""
        ranked = sorted(self.worst_by_second.items(), key=lambda kv: kv[1], reverse=True)[:n]
        return [(sec, round(lat * 1000, 1)) for sec, lat in ranked]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                async with asyncio.timeout(10):
                    await self._task
        if self._session is not None:
            await self._session.close()
