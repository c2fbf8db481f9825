"""Several cores on PostgreSQL and Redis: how many agents they hold, what the bus costs, a core killed under load.

    .venv/bin/python -m benchmarks.cluster --parts scale,failover --steps 500,1000,1500,2000
    .venv/bin/python -m benchmarks.cluster --agents 500 --parts failover --out /tmp/cluster.json

- scale:    in one run, the same simulated fleet sizes (`--steps`) against one core on SQLite, one core
            on PostgreSQL, and two cores on one PostgreSQL database and one Redis (the fleet split
            evenly over them, as a balancer would; the push client on the first core sees all nodes,
            half of them through Redis). Size by size, each configuration in turn, each stepping up
            until push p99 passes 100 ms or the simulator falls behind (under 95 % of the target
            rate): the largest size held is its figure. With `--repeats N` each size runs N times and
            is held when more than half of them hold (one 20 s window at the knee decides by chance);
            the median run by push p99 stands for the size, and the paper figures take every run.
            Per run: every core's CPU and RSS, the PostgreSQL backends of its database (CPU, USS),
            redis-server's CPU (shared with whatever else uses it), rows written per second, and how
            busy the machine was; then history query times on SQLite and on PostgreSQL
            (benchmarks.postgresql's: two cores read the same database, so the same figures).
            On paper, two ways (`paper`): a line per core through CPU against fleet size, taken to
            one CPU (`two_over_one`), and the pair against one core at equal CPU of the busiest core
            (`iso_cpu`, see its docstring for why both).

- bus:      one core with the local bus, then one core with `bus = redis://...`, each under the same
            simulated fleet (benchmarks.parts.load: simulator processes, a client subscribed to all
            nodes, the core's CPU and RSS over a window after warm-up); the Redis run is reported
            as ratios of the local run, measured in the same invocation.
- failover: cores B and A (`servermanager core` subprocesses) on one PostgreSQL database and one
            Redis; the simulated fleet dials a loopback load balancer (devkit.tcpproxy, B first, then
            A) and streams through B. B is killed with SIGKILL; a client on A counts, per node, the
            first sample stamped after the kill: the time from the kill until the first, the median,
            the 99th percentile and the last node streams again through A. The simulated agents keep
            what was not acknowledged and send it again (benchmarks.fleet), so the database is then
            checked per node: every seq an agent had acknowledged or still held must be stored once
            (samples lost: must be 0).

Redis: the machine's, 127.0.0.1:6379 (`--redis`), under a key prefix of this run's own; PostgreSQL:
the machine's (`--pg`), a fresh database per run, dropped afterwards. The cores
run this checkout's code (`python -m servermanager` from the working directory), not whatever the
venv's `servermanager` script was installed from.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks.fleet import Fleet, percentiles, raise_nofile_limit
from benchmarks.harness import RESULTS, CoreProc, ProcWatch, log, machine_info
from benchmarks.parts.load import LoadOptions, add_profile_argument, bench_load
from benchmarks.postgresql import PgBackends, _fresh, _history
from devkit.tcpproxy import TcpProxy
from servermanager.common import protocol as p
from servermanager.core.datadir import INITIAL_PASSWORD_FILE

# This checkout's code, run from its top folder: the venv's console script may be another checkout's.
CORE_CMD = [sys.executable, "-m", "servermanager"]
FAILOVER_TTL = 2.0  # s: how soon a killed core's nodes are free to take over


def _bus_env(redis: str, prefix: str, core_id: str, ttl: float | None = None) -> dict[str, str]:
    """A core's bus settings; `ttl` short only where a takeover is timed (the failover part): each
    core renews its keys every ttl/4, a cost the throughput parts must see at the default."""
    env = {"SM_CORE_BUS": redis, "SM_CORE_BUS_PREFIX": prefix, "SM_CORE_CORE_ID": core_id}
    if ttl is not None:
        env["SM_CORE_BUS_TTL"] = f"{ttl:g}"
    return env


async def bench_bus(opts: LoadOptions, count: int, workdir: Path, redis: str) -> dict[str, Any]:
    runs = {}
    for name, env in (("local", None), ("redis", _bus_env(redis, f"smbench-{uuid.uuid4().hex[:8]}", "one"))):
        folder = workdir / f"bus-{name}"
        folder.mkdir()
        log(f"bus={name}: one core, {count} agents")
        runs[name] = await bench_load(opts, count, folder, core_env=env, core_cmd=CORE_CMD)
    local, red = runs["local"], runs["redis"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    return {
        "agents": count,
        "local": _summary(local),
        "redis": _summary(red),
        "redis_over_local": {
            "core_cpu": ratio(red["core"]["cpu_pct"], local["core"]["cpu_pct"]),
            "core_rss": ratio(red["core"]["rss_mb_max"], local["core"]["rss_mb_max"]),
            "push_p99": ratio(red["push"]["latency_ms"]["p99"], local["push"]["latency_ms"]["p99"]),
        },
    }


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "core_cpu_pct": run["core"]["cpu_pct"],
        "core_rss_mb_max": run["core"]["rss_mb_max"],
        "samples_written_per_s": run["core"]["samples_written_per_s"],
        "push_latency_ms": run["push"]["latency_ms"],
        "achieved_send_rate": run["simulator"]["achieved_send_rate"],
        "machine_busy_pct": run["machine_cpu"]["busy_pct_of_all_cores"],
    }


class _Watcher:
    """A /ws/client subscriber to every node on one core: when each node's first sample stamped
    after `since` arrived."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.replace("http://", "ws://") + p.CLIENT_WS_PATH
        self.token = token
        self.since = float("inf")
        self.back: dict[int, float] = {}
        self.expected = 0
        self.all_back = asyncio.Event()
        self._dec = p.decoder(p.CoreToClient)
        self._task: asyncio.Task[None] | None = None
        self._session = aiohttp.ClientSession()

    async def start(self) -> None:
        ws = await self._session.ws_connect(self.url, max_msg_size=0)
        await ws.send_bytes(p.encode(p.Auth(token=self.token)))
        await ws.send_bytes(p.encode(p.Subscribe(all=True)))
        self._task = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            now = time.time()
            for frame in p.decode_all(self._dec, msg.data):
                if isinstance(frame, p.SampleEvent) and frame.sample.ts > self.since:
                    self.back.setdefault(frame.node_id, now)
                    if len(self.back) >= self.expected:
                        self.all_back.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._session.close()


async def bench_failover(count: int, workdir: Path, redis: str, pg: str, timeout: float) -> dict[str, Any]:
    prefix = f"smbench-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {"agents": count, "bus_ttl_s": FAILOVER_TTL, "agent_backoff_s": [0.2, 1.0]}
    async with contextlib.AsyncExitStack() as stack:
        url, _name = await stack.enter_async_context(_fresh(pg))
        (workdir / "b").mkdir()
        b = await stack.enter_async_context(
            CoreProc(
                workdir / "b",
                env={**_bus_env(redis, prefix, "b", FAILOVER_TTL), "SM_CORE_DATABASE": url},
                cmd=CORE_CMD,
            )
        )
        assert b.proc is not None and b.token is not None
        # Core A on the same database: the admin B made signs in there too.
        a_dir = workdir / "a" / "core"
        a_dir.mkdir(parents=True, mode=0o700)
        shutil.copy(b.data_dir / INITIAL_PASSWORD_FILE, a_dir / INITIAL_PASSWORD_FILE)
        a = await stack.enter_async_context(
            CoreProc(
                workdir / "a",
                data_dir=a_dir,
                env={**_bus_env(redis, prefix, "a", FAILOVER_TTL), "SM_CORE_DATABASE": url},
                cmd=CORE_CMD,
            )
        )
        assert a.token is not None
        lb = await TcpProxy([("127.0.0.1", b.port), ("127.0.0.1", a.port)]).start()
        stack.push_async_callback(lb.stop)
        token = await b.enroll_token(count + 100)
        fleet = Fleet(
            f"http://127.0.0.1:{lb.port}", token, count, interval=1.0, backoff_initial=0.2, backoff_max=1.0
        )
        log(f"failover: {count} agents enrolling through the balancer (core B first)")
        await fleet.start()
        stack.push_async_callback(fleet.stop)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            nodes = await a.request("GET", "/api/v1/nodes")
            if sum(1 for n in nodes["nodes"] if n["online"]) >= count:
                break
            await asyncio.sleep(0.5)
        log(f"failover: core A sees {sum(1 for n in nodes['nodes'] if n['online'])} nodes online")
        watcher = _Watcher(a.url, a.token)
        await watcher.start()
        stack.push_async_callback(watcher.stop)
        await asyncio.sleep(3)  # steady streaming through B, seen live on A

        log("failover: SIGKILL to core B")
        killed_at = time.time()
        watcher.since, watcher.expected = killed_at, count
        os.kill(b.proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await watcher.all_back.wait()
        delays = sorted(t - killed_at for t in watcher.back.values())
        out["nodes_back"] = len(delays)
        out["seconds_after_kill"] = {
            "first": round(delays[0], 2) if delays else None,
            **{k: round(v, 2) if v is not None else None for k, v in percentiles(delays, (50, 99)).items()},
            "last": round(delays[-1], 2) if delays else None,
        }
        out["fleet_reconnects"] = fleet.reconnects
        log(f"failover: {len(delays)}/{count} agents streaming through A; {out['seconds_after_kill']}")
        # Let the resent backlog be acknowledged, then stop sending and count in the database.
        for _ in range(60):
            if not any(len(x.unacked) > 2 for x in fleet.agents):
                break
            await asyncio.sleep(0.5)
        await fleet.stop()
        out["samples_resent"] = fleet.samples_resent
        out["samples_evicted"] = fleet.samples_evicted
        out["samples_lost"], out["samples_checked"] = await _lost(url, fleet)
        log(f"failover: {out['samples_lost']} of {out['samples_checked']} samples lost")
    return out


async def _lost(url: str, fleet: Fleet) -> tuple[int, int]:
    """Seqs each simulated agent sent that the database does not hold, besides those still unacknowledged
    when the fleet stopped (never promised); and how many were checked."""
    import asyncpg

    con = await asyncpg.connect(url)
    try:
        rows = await con.fetch(
            "SELECT node_id, array_agg(DISTINCT seq) AS seqs FROM "
            "(SELECT node_id, seq FROM samples_head UNION ALL SELECT node_id, seq FROM samples_raw) s GROUP BY node_id"
        )
    finally:
        await con.close()
    stored = {r["node_id"]: set(r["seqs"]) for r in rows}
    lost = checked = 0
    for agent in fleet.agents:
        if agent.node_id is None:
            continue
        want = set(range(1, agent.seq + 1)) - set(agent.unacked)
        checked += len(want)
        lost += len(want - stored.get(agent.node_id, set()))
    return lost, checked


CONFIGS = ("sqlite", "postgresql", "postgresql+redis x2")


async def bench_scale(
    opts: LoadOptions,
    steps: list[int],
    workdir: Path,
    redis: str,
    pg: str,
    history_days: int,
    configs: tuple[str, ...] = CONFIGS,
    repeats: int = 1,
) -> dict[str, Any]:
    """Each configuration at each fleet size until push p99 passes 100 ms or the simulator falls behind."""
    out: dict[str, Any] = {"steps": steps, "repeats": repeats, "runs": {c: {} for c in configs}, "held": {}}
    # Size by size, each configuration in turn (not one configuration's every size, then the next's):
    # the VM's speed drifts over a run, and the configurations are compared size for size.
    active = list(configs)
    held = dict.fromkeys(configs, 0)
    for count in steps:
        for config in list(active):
            tries = []
            for attempt in range(repeats):
                tries.append(await _scale_step(opts, config, count, attempt, workdir, redis, pg))
            passed = [_step_held(t) for t in tries]
            ok = sum(passed) * 2 > len(passed)
            tries.sort(key=lambda t: t["push_p99_ms"] if t["push_p99_ms"] is not None else 1e9)
            summary = {**tries[(len(tries) - 1) // 2], "held_runs": f"{sum(passed)} of {len(passed)}"}
            if repeats > 1:
                summary["repeats"] = tries
            out["runs"][config][count] = summary
            log(f"scale: {config} {count}: {'held' if ok else 'NOT held'} ({summary['held_runs']}) {summary}")
            if ok:
                held[config] = count
            else:
                active.remove(config)
    out["held"] = held
    one = out["held"].get("postgresql")
    two = out["held"].get("postgresql+redis x2")
    out["two_over_one_postgresql"] = round(two / one, 2) if one and two is not None else None
    out["paper"] = paper_fit(out["runs"])
    log(
        f"scale: held {held}, two over one {out['two_over_one_postgresql']}; on paper: the line "
        f"{out['paper']['two_over_one']}, at equal CPU {out['paper']['iso_cpu']['median']}"
    )
    if history_days:
        log(f"scale: history, {history_days} day(s) of 1m rollups on SQLite and PostgreSQL")
        (workdir / "history").mkdir()
        out["history"] = await _history(workdir / "history", pg, history_days, 5)
    return out


def _step_held(summary: dict[str, Any]) -> bool:
    return (summary["push_p99_ms"] or 1e9) < 100 and summary["fraction_of_target"] >= 0.95


async def _scale_step(
    opts: LoadOptions, config: str, count: int, attempt: int, workdir: Path, redis: str, pg: str
) -> dict[str, Any]:
    """One run of one configuration at one fleet size, summarized."""
    redis_pid = next((x.pid for x in psutil.process_iter(["name"]) if x.info["name"] == "redis-server"), None)
    folder = workdir / f"{config.replace(' ', '').replace('+', '-')}-{count}-{attempt}"
    folder.mkdir()
    log(f"scale: {config}, {count} agents" + (f" (run {attempt + 1})" if attempt else ""))
    if config == "sqlite":
        run = await bench_load(opts, count, folder, core_cmd=CORE_CMD)
    else:
        async with _fresh(pg) as (url, name):
            env = {"SM_CORE_DATABASE": url}
            cores = 1
            if config != "postgresql":
                env.update(_bus_env(redis, f"smbench-{uuid.uuid4().hex[:8]}", "x"))
                cores = 2
            backends = PgBackends(name)
            extra = [ProcWatch(redis_pid, "redis-server", children=False)] if redis_pid and cores > 1 else []
            async with backends.sampling(opts.warmup):
                run = await bench_load(opts, count, folder, env, CORE_CMD, cores=cores, extra=extra)
            run["postgresql_server"] = backends.end()
    return _scale_summary(run)


# Steps at which the machine was this busy or more are left out of the paper fit: there every process
# gets less CPU than it asks for, so its figure says what the machine gave, not what it costs.
PAPER_BUSY_MAX = 85.0


def _unsaturated(steps: dict[int, dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Every run of a configuration, repeats included, that held on a machine not saturated: what
    both paper figures are read from."""
    return [
        (int(n), each)
        for n, run in steps.items()
        for each in run.get("repeats", [run])
        if _step_held(each) and each["machine_busy_pct"] < PAPER_BUSY_MAX
    ]


def paper_fit(runs: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per core, on paper: a least-squares line through each core's CPU against the fleet size, over
    the steps it held on a machine not saturated, and the fleet at which that line reaches one CPU
    (a core's event loop is one thread). The pair's figure is its busier core's; `two_over_one` sets
    it against one core on PostgreSQL. What this assumes: each core on a CPU of its own, PostgreSQL,
    Redis and the agents elsewhere, and costs that stay linear past the sizes measured."""
    out: dict[str, Any] = {"busy_max_pct": PAPER_BUSY_MAX}
    for config, steps in runs.items():
        pts = [(n, each["cores"]) for n, each in _unsaturated(steps)]
        fits = []
        for i in range(min((len(c) for _, c in pts), default=0)):
            xs = [n for n, _ in pts]
            ys = [c[i]["cpu_pct"] for _, c in pts]
            fits.append(_line(xs, ys))
        ok = [f for f in fits if f is not None]
        full = [(100.0 - f["intercept"]) / f["per_agent"] for f in ok if f["per_agent"] > 0]
        out[config] = {
            "steps": [n for n, _ in pts],
            "cores": fits,
            "agents_at_one_cpu": round(min(full)) if full and len(ok) == len(fits) else None,
        }
    one = out.get("postgresql", {}).get("agents_at_one_cpu")
    two = out.get("postgresql+redis x2", {}).get("agents_at_one_cpu")
    out["two_over_one"] = round(two / one, 2) if one and two else None
    out["iso_cpu"] = iso_cpu(runs)
    return out


def iso_cpu(
    runs: dict[str, dict[int, dict[str, Any]]], one: str = "postgresql", two: str = "postgresql+redis x2"
) -> dict[str, Any]:
    """The pair against one core at equal CPU of the busiest core: for each run of the pair (held,
    machine not saturated), the fleet one core serves at the CPU the pair's busier core used, read
    off one core's measured curve (made non-decreasing, then interpolated; never extrapolated), and
    the pair's fleet over it.

    Why beside the line: a core's CPU can grow more slowly than its fleet (per-agent work shared by
    more agents per loop turn, per commit, per push; the thirteenth scale run in docs/benchmarks.md),
    and then a line through the low steps overstates the slope near a full CPU, the more so for the
    pair, whose cores each hold half the fleet and so sit lower on the curve. Compared at equal CPU,
    each side is read where it was measured. What this assumes: the ratio found at the CPU levels
    measured holds up to a full CPU."""
    curve = _non_decreasing(
        sorted((n, max(c["cpu_pct"] for c in each["cores"])) for n, each in _unsaturated(runs.get(one, {})))
    )
    points: list[dict[str, Any]] = []
    for n, each in _unsaturated(runs.get(two, {})):
        cpu = max(c["cpu_pct"] for c in each["cores"])
        lone = _fleet_at(curve, cpu)
        if lone is not None:
            points.append({"agents": n, "busiest_core_cpu_pct": cpu, "one_core_agents": round(lone),
                           "ratio": round(n / lone, 2)})  # fmt: skip
    ratios = [float(x["ratio"]) for x in points]
    median = round(statistics.median(ratios), 2) if ratios else None
    return {"one_core_curve": curve, "points": points, "median": median}


def _non_decreasing(pts: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Pool adjacent violators: the non-decreasing curve nearest (least squares) to the measured
    CPU by fleet size, several runs of one size pooled first; a noisy step no longer bends it back."""
    blocks: list[list[float]] = []  # [first size, last size, CPU sum, weight]
    for n, cpu in pts:
        blocks.append([n, n, cpu, 1.0])
        while len(blocks) > 1 and (
            blocks[-2][1] == blocks[-1][0] or blocks[-2][2] / blocks[-2][3] > blocks[-1][2] / blocks[-1][3]
        ):
            merged = blocks.pop()
            blocks[-1][1] = merged[1]
            blocks[-1][2] += merged[2]
            blocks[-1][3] += merged[3]
    out: list[tuple[int, float]] = []
    for first, end, total, weight in blocks:
        level = round(total / weight, 2)
        out.extend((n, level) for n in sorted({int(first), int(end)}))
    return out


def _fleet_at(curve: list[tuple[int, float]], cpu: float) -> float | None:
    """The fleet size at which `curve` reaches `cpu`, linearly between its points; None outside it."""
    for (n0, c0), (n1, c1) in itertools.pairwise(curve):
        if c0 <= cpu <= c1:
            return n0 if c1 == c0 else n0 + (n1 - n0) * (cpu - c0) / (c1 - c0)
    return None


def _line(xs: list[int], ys: list[float]) -> dict[str, float] | None:
    """Least squares y = intercept + per_agent * x; None under two distinct sizes."""
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    resid = [y - (my + b * (x - mx)) for x, y in zip(xs, ys, strict=True)]
    return {
        "intercept": round(my - b * mx, 3),
        "per_agent": round(b, 6),
        "max_residual": round(max(abs(r) for r in resid), 2),
    }


def _scale_summary(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "push_p99_ms": run["push"]["latency_ms"]["p99"],
        "push_p50_ms": run["push"]["latency_ms"]["p50"],
        "fraction_of_target": run["simulator"]["achieved_fraction_of_target"],
        "cores": [
            {"cpu_pct": c["cpu_pct"], "rss_mb_max": c["rss_mb_max"]} for c in run.get("cores", [run["core"]])
        ],
        "rows_written_per_s": run["core"]["samples_written_per_s"],
        "simulator_cpu_pct": round(sum(x["cpu_pct"] or 0 for x in run["simulator"]["processes"]), 1),
        "postgresql": run.get("postgresql_server"),
        "redis_cpu_pct": (run.get("extra") or {}).get("redis-server", {}).get("cpu_pct"),
        "machine_busy_pct": run["machine_cpu"]["busy_pct_of_all_cores"],
        "others_pct_of_one_core": run["machine_cpu"]["others_pct_of_one_core"],
        "core_cpu_cap": run.get("core_cpu_cap"),
        **({"profile": run["profile"]} if "profile" in run else {}),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile_limit()
    results: dict[str, Any] = {"machine": machine_info(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    work = Path(tempfile.mkdtemp(prefix="sm-cluster-bench-"))
    opts = LoadOptions(
        interval=1.0,
        per_process=args.per_process,
        warmup=args.warmup,
        duration=args.duration,
        start_timeout=300.0,
        connect_timeout=10.0,
        ping_interval=0.0,
        profile=args.profile,
        profile_core=args.profile_core,
        core_cpu_pct=args.core_cpu,
        client_core=args.client_core,
    )
    try:
        if "bus" in args.parts:
            results["bus"] = await bench_bus(opts, args.agents, work, args.redis)
        if "scale" in args.parts:
            (work / "scale").mkdir()
            steps = [int(x) for x in args.steps.split(",") if x]
            results["scale"] = await bench_scale(
                opts,
                steps,
                work / "scale",
                args.redis,
                args.pg,
                args.history_days,
                args.configs,
                args.repeats,
            )
        if "failover" in args.parts:
            (work / "failover").mkdir()
            results["failover"] = await bench_failover(
                args.agents, work / "failover", args.redis, args.pg, args.timeout
            )
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--parts", default="bus,failover")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432", help="the PostgreSQL server")
    ap.add_argument("--steps", default="500,1000,1500,2000", help="scale: fleet sizes, stepped up")
    ap.add_argument(
        "--repeats", type=int, default=1, help="scale: runs per size; held when more than half hold"
    )
    ap.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"scale: which configurations ({', '.join(CONFIGS)})"
    )
    ap.add_argument(
        "--core-cpu",
        type=float,
        default=None,
        help="scale: hold each core to this %% of one CPU (a cgroup quota; needs root), so that one core "
        "and each core of the pair get the same CPU while the rest of the machine runs beside them",
    )
    ap.add_argument(
        "--client-core",
        type=int,
        choices=(0, 1),
        default=0,
        help="scale: the pair's core that the push client uses (0 starts first and usually leads)",
    )
    add_profile_argument(ap)
    ap.add_argument(
        "--profile-core",
        type=int,
        choices=(0, 1),
        default=0,
        help="scale: the pair's core that --profile watches",
    )
    ap.add_argument("--history-days", type=int, default=3, help="scale: days of history queried (0: none)")
    ap.add_argument("--per-process", type=int, default=500, help="simulated agents per simulator process")
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, default=60.0, help="longest wait for the fleet after the kill")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (the cores' logs) for a look")
    ap.add_argument("--out", type=Path, default=RESULTS / "cluster.json")
    args = ap.parse_args()
    args.parts = set(args.parts.split(","))
    args.configs = tuple(c for c in args.configs.split(",") if c)
    if unknown := set(args.configs) - set(CONFIGS):
        ap.error(f"--configs: unknown {', '.join(sorted(unknown))}; known: {', '.join(CONFIGS)}")
    results = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
