"""Benchmark part b: a real core under thousands of simulated agents (benchmarks.fleet processes)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.cpucap import CpuCap
from benchmarks.harness import (
    REPO,
    RESULTS,
    CoreProc,
    ProcWatch,
    PushClient,
    SystemCpu,
    log,
    pcts_ms,
    sample_every_second,
    spawned,
    terminate,
)
from servermanager.core.datadir import INITIAL_PASSWORD_FILE


@dataclass(frozen=True)
class LoadOptions:
    """How the simulated fleet behaves and how long the core is watched; benchmarks.run fills it from its flags."""

    interval: float  # simulated agents' sample interval (s)
    per_process: int  # simulated agents per simulator process
    warmup: float  # seconds after enrollment before measuring
    duration: float  # seconds of the core measurement window
    start_timeout: float  # seconds allowed to enroll a fleet
    connect_timeout: float  # simulated agents' handshake timeout
    ping_interval: float  # simulated agents' extra ping period (0: none)
    profile: str | None  # py-spy the core during the window: "all" threads' stacks, or "gil" holders only
    procs_top: int = 0  # processes in every simulated sample's top list (issue 14's core constraint)
    profile_core: int = 0  # which core of a cluster py-spy watches
    # Which core of a cluster the push client uses (a lone core: that one). 0 is the first
    # started, which usually leads the cluster (rollups, retention, alert outbox); 1 is another.
    client_core: int = 0
    # Each core held to this % of one CPU (benchmarks.cpucap); None: as much as it takes.
    core_cpu_pct: float | None = None


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


def fleet_sizes(count: int, per_process: int, cores: int = 1) -> list[int]:
    """`count` simulated agents split evenly over processes of at most `per_process` each.

    Process i dials core i modulo `cores` (start_fleets), so the number of processes is a multiple
    of `cores`: otherwise one core would hold a process more than another (1,500 agents in three
    processes of 500 gave a pair 1,000 and 500, and the pair's busier core was the fuller one).
    """
    nprocs = cores * max(1, math.ceil(count / (per_process * cores)))
    return [count // nprocs + (1 if i < count % nprocs else 0) for i in range(nprocs)]


async def start_fleets(
    stack: contextlib.AsyncExitStack,
    core_url: str | list[str],
    token: str,
    sizes: list[int],
    opts: LoadOptions,
    workdir: Path,
    prefix: str = "sim",
) -> tuple[list[FleetProc], list[dict[str, Any]]]:
    """One `benchmarks.fleet --control` process per size, stopped with the stack; returns once all are enrolled.
    Several core URLs: simulator process i dials core i modulo their number (a balancer's even split)."""
    urls = [core_url] if isinstance(core_url, str) else core_url
    fleets: list[FleetProc] = []
    upper = opts.start_timeout + opts.warmup + opts.duration + 180
    for i, n in enumerate(sizes):
        cmd = [
            sys.executable, "-m", "benchmarks.fleet", "--control",
            "--core", urls[i % len(urls)], "--token", token, "--count", str(n), "--interval", str(opts.interval),
            "--prefix", f"{prefix}{i}", "--duration", str(upper), "--start-timeout", str(opts.start_timeout),
            "--connect-timeout", str(opts.connect_timeout), "--allow-partial",
            "--ping-interval", str(opts.ping_interval),
            "--seed", str(1000 + i), "--procs-top", str(opts.procs_top),
        ]  # fmt: skip
        proc = await stack.enter_async_context(spawned(cmd, workdir / f"fleet{i}.log", pipes=True))
        fleet = FleetProc(proc, f"fleet{i}")
        stack.callback(fleet.close)
        fleets.append(fleet)
    log(f"{sum(sizes)} agents: enrolling in {len(sizes)} simulator process(es)")
    ready = await asyncio.gather(*(f.expect("ready", opts.start_timeout + 30) for f in fleets))
    return fleets, list(ready)


async def bench_load(
    opts: LoadOptions,
    count: int,
    workdir: Path,
    core_env: dict[str, str] | None = None,
    core_cmd: list[str] | None = None,
    cores: int = 1,
    extra: list[ProcWatch] | None = None,
) -> dict[str, Any]:
    """core_env: the core's extra environment (SM_CORE_DATABASE for one on PostgreSQL, SM_CORE_BUS for
    one on the Redis bus); core_cmd: what runs `servermanager` (default: the venv's, see
    harness.servermanager_cmd). cores: that many cores with the same settings (one database and one
    bus: a cluster), the fleet split evenly over them; `core` then sums their CPU and RSS and
    `cores` has each. extra: other processes watched over the same window (PostgreSQL, Redis)."""
    sizes = fleet_sizes(count, opts.per_process, cores)
    nprocs = len(sizes)
    out: dict[str, Any] = {
        "agents": count,
        "interval_s": opts.interval,
        "target_rate": round(count / opts.interval, 1),
        "simulator_processes": nprocs,
        "warmup_s": opts.warmup,
        "window_s": opts.duration,
    }
    async with contextlib.AsyncExitStack() as stack:
        first_env = {**(core_env or {}), "SM_CORE_CORE_ID": "c0"} if cores > 1 else core_env
        core = await stack.enter_async_context(CoreProc(workdir, env=first_env, cmd=core_cmd))
        assert core.proc is not None and core.token is not None
        others = []
        for i in range(1, cores):
            # The same database: the admin made by the first core signs in at every one.
            data_dir = workdir / f"core{i}" / "core"
            data_dir.mkdir(parents=True, mode=0o700)
            shutil.copy(core.data_dir / INITIAL_PASSWORD_FILE, data_dir / INITIAL_PASSWORD_FILE)
            env = {**(core_env or {}), "SM_CORE_CORE_ID": f"c{i}"}
            others.append(
                await stack.enter_async_context(CoreProc(workdir / f"core{i}", data_dir, env, core_cmd))
            )
        # Headroom: an agent whose welcome is lost (handshake timeout under overload) enrolls again
        # and spends another use; the orphaned nodes are counted below.
        token = await core.enroll_token(count + max(100, count // 2))
        # The admin's token from core 0 holds on every core: they share the database.
        client = PushClient([core, *others][min(opts.client_core, len(others))].url, core.token)
        await client.start()
        stack.push_async_callback(client.stop)

        t_enroll = time.monotonic()
        urls = [core.url, *(o.url for o in others)]
        fleets, ready = await start_fleets(stack, urls, token, sizes, opts, workdir)
        out["enroll_seconds"] = round(time.monotonic() - t_enroll, 1)
        out["enrolled"] = sum(r["nodes"] for r in ready)
        out["ping_interval_s"] = opts.ping_interval
        log(f"{count} agents enrolled in {out['enroll_seconds']}s ({[r['enroll_seconds'] for r in ready]}); "
            f"warming up {opts.warmup:g}s")  # fmt: skip
        caps = []
        if opts.core_cpu_pct is not None:
            # Each core in a group of its own, so each gets the same slice (not the pair one between them).
            for i, c in enumerate([core, *others]):
                assert c.proc is not None
                cap = CpuCap(f"smbench-{os.getpid()}-core{i}", opts.core_cpu_pct)
                stack.callback(cap.close)
                cap.add(c.proc.pid)
                caps.append(cap)
            log(f"each core held to {opts.core_cpu_pct:g} % of one CPU")
        await asyncio.sleep(opts.warmup)

        all_cores = [core, *others]
        c0 = [await c.counters() for c in all_cores]
        t0 = [cap.throttled() for cap in caps]
        watches = [ProcWatch(c.proc.pid, f"core{i}") for i, c in enumerate(all_cores) if c.proc is not None]
        watches += [ProcWatch(f.proc.pid, f.name) for f in fleets]
        watches += extra or []
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
        if opts.profile:
            watched = all_cores[opts.profile_core].proc
            assert watched is not None
            profile = await start_profile(
                watched.pid, opts.duration, workdir / f"profile-{count}.txt", gil=opts.profile == "gil"
            )
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

        log(f"measuring the core for {opts.duration:g}s")
        await sample_every_second(watches, opts.duration, probe)
        client.end()
        sys_cpu = system.end()
        res = [w.end() for w in watches]
        observer = me.end()
        for f in fleets:
            await f.command("report")
        reports = await asyncio.gather(*(f.expect("report", 30) for f in fleets))
        c1 = [await c.counters() for c in all_cores]
        if caps:
            # The share of the window's quota periods in which each core used up its slice: near 0, the
            # cap did not bind; high, the core wanted more than its slice.
            out["core_cpu_cap"] = {
                "pct_of_one_cpu": opts.core_cpu_pct,
                "throttled_share": [
                    round(
                        (b["throttled_periods"] - a["throttled_periods"])
                        / max(1.0, b["periods"] - a["periods"]),
                        3,
                    )
                    for a, b in zip(t0, (cap.throttled() for cap in caps), strict=True)
                ],
            }
        if profile is not None:
            out["profile"] = await finish_profile(profile, workdir / f"profile-{count}.txt", count)

        window = res[0]["seconds"]
        sent = sum(r["samples_sent"] for r in reports)
        acked = sum(r["samples_acked"] for r in reports)
        written = sum(
            b.get("sm_core_samples_written_total", 0) - a.get("sm_core_samples_written_total", 0)
            for a, b in zip(c0, c1, strict=True)
        )
        commits = sum(
            b.get("sm_core_commits_total", 0) - a.get("sm_core_commits_total", 0)
            for a, b in zip(c0, c1, strict=True)
        )
        ncores = len(all_cores)
        if ncores == 1:
            out["core"] = res[0]
        else:
            out["cores"] = res[:ncores]
            out["core"] = {
                "seconds": res[0]["seconds"],
                "cpu_pct": round(sum(r["cpu_pct"] or 0 for r in res[:ncores]), 2),
                "rss_mb_max": round(sum(r["rss_mb_max"] or 0 for r in res[:ncores]), 1),
            }
        if extra:
            out["extra"] = {w.name: w.result for w in extra}
        out["core"]["samples_written_per_s"] = round(written / window, 1)
        out["core"]["commits_per_s"] = round(commits / window, 2)
        out["simulator"] = {
            "processes": [
                {
                    **res[i + ncores],
                    **{k: reports[i][k] for k in ("agents", "connected", "send_rate", "ack_rate")},
                }
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
            "ack_latency_ms": merge_pcts([r["ack_latency_ms"] for r in reports]),
            "last_error": next((r["last_error"] for r in reports if r["last_error"]), None),
        }
        out["push"] = {
            "events_per_s": round(client.events / window, 1),
            "latency_ms": pcts_ms(client.latencies),
            "worst_seconds": client.worst_seconds(),
            "client_dropped_in_window": client.window_drops,
            "client_drops": client.drops[:20],
        }
        out["core"]["health_ms"] = pcts_ms(health, (50, 99))
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
                async with asyncio.timeout(40):
                    await f.proc.wait()
        await client.stop()
        for o in others:
            await o.stop()
        out["core_exit_code"] = await core.stop()
    out["core_log"] = core_log_counts(core.log)
    # On PostgreSQL the data dir holds no database file: the caller counts there.
    out["nodes_created"] = _count_rows(core.db_path, "nodes") if core.db_path.exists() else None
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


def merge_pcts(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' percentiles: the worst of each (an upper bound), and the total n."""
    keys = [k for k in items[0] if k != "n"] if items else []
    merged: dict[str, Any] = {k: max((i[k] for i in items if i[k] is not None), default=None) for k in keys}
    merged["n"] = sum(i["n"] for i in items)
    return merged


def add_profile_argument(ap: argparse.ArgumentParser) -> None:
    """--profile [gil], as every script that runs the load part takes it."""
    ap.add_argument(
        "--profile",
        nargs="?",
        const="all",
        choices=["all", "gil"],
        help="py-spy the core during each load window; 'gil': only what holds the GIL (Python's own CPU)",
    )


async def start_profile(
    pid: int, seconds: float, path: Path, gil: bool = False
) -> asyncio.subprocess.Process | None:
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        log("py-spy not installed in the venv; --profile skipped")
        return None
    cmd = [str(spy), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "50",
           "--format", "raw", "--threads", "--nonblocking", "--output", str(path)]  # fmt: skip
    if gil:  # a thread waiting for the GIL shows where it waits, as if it worked there
        cmd.append("--gil")
    return await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def finish_profile(proc: asyncio.subprocess.Process, path: Path, count: int) -> dict[str, Any]:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            await proc.wait()
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
