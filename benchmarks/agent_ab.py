"""Two agents side by side, this checkout's and an earlier commit's, beside node_exporter, in one window.

On a machine others are using, two runs of the agent benchmark (benchmarks/parts/agent.py) minutes
apart differ by more than a change is worth: node_exporter's own CPU per scrape moved from 7.9 to
10.5 ms between runs here. This runs both agents at once, against one core, each with its own state
dir and the same settings (`--env KEY=VALUE`, for example SM_AGENT_PROCESSES_INTERVAL=0), next to
prometheus-node-exporter scraped every second, and reads each process's CPU time from the kernel's
per-thread schedstat (nanoseconds, where psutil's cpu_times counts 10 ms ticks). It prints CPU per
sample of each agent, per thread, and both against node_exporter's CPU per scrape.

Reproduce: .venv/bin/python -m benchmarks.agent_ab --before 41e6ede --seconds 120 --env SM_AGENT_PROCESSES_INTERVAL=0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.harness import NODE_EXPORTER, REPO, CoreProc, free_port, log, spawned


def export_tree(rev: str, dest: Path) -> Path:
    """The source of commit `rev` of this checkout, unpacked into `dest` (git archive)."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dest, filter="tar")
    return dest


def thread_cpu(pid: int) -> dict[str, float]:
    """Seconds on the CPU of each thread of `pid` ("tid:name"), from /proc/PID/task/TID/schedstat."""
    out: dict[str, float] = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"{base}/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"{base}/{tid}/schedstat") as f:
                out[f"{tid}:{name}"] = int(f.read().split()[0]) / 1e9
    return out


async def run(before: str, seconds: float, warmup: float, env: dict[str, str]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="sm-agent-ab-"))
    trees = {"before": export_tree(before, work / "before"), "after": REPO}
    async with contextlib.AsyncExitStack() as stack:
        core = await stack.enter_async_context(CoreProc(work))
        agents = {}
        for label, tree in trees.items():
            state = work / f"state-{label}"
            state.mkdir(mode=0o700)
            agent_env = {
                **os.environ,
                **env,
                "PYTHONPATH": str(tree),
                "SM_AGENT_ENROLL_TOKEN": await core.enroll_token(1),
            }
            # -P: the tree on PYTHONPATH, not the working directory, is what gets imported.
            cmd = [sys.executable, "-P", "-m", "servermanager", "agent", "--core", core.url]
            cmd += ["--state-dir", str(state), "--interval", "1"]
            agents[label] = await stack.enter_async_context(
                spawned(cmd, work / f"agent-{label}.log", agent_env)
            )
        port = free_port()
        ne = await stack.enter_async_context(
            spawned([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"], work / "node_exporter.log")
        )
        http = await stack.enter_async_context(aiohttp.ClientSession())
        log(f"both agents and node_exporter started; warming up {warmup:g}s")
        await asyncio.sleep(warmup)
        pids = {label: p.pid for label, p in agents.items()} | {"node_exporter": ne.pid}
        start = {label: thread_cpu(pid) for label, pid in pids.items()}
        t0 = time.monotonic()
        scrapes = 0
        log(f"measuring for {seconds:g}s")
        while time.monotonic() - t0 < seconds:
            tick = time.monotonic()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    await r.read()
                    scrapes += 1
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        wall = time.monotonic() - t0
        end = {label: thread_cpu(pid) for label, pid in pids.items()}
        for label, proc in agents.items():
            if proc.returncode is not None:
                raise RuntimeError(f"the {label} agent exited with {proc.returncode}")
    out: dict[str, Any] = {"before_commit": before, "seconds": round(wall, 1), "env": env, "scrapes": scrapes}
    out["load_average_1m"] = round(os.getloadavg()[0], 2)
    for label in pids:
        # A thread that ended within the window is not counted; these processes keep theirs.
        threads = {t: end[label][t] - start[label].get(t, 0.0) for t in end[label]}
        total = sum(threads.values())
        out[label] = {
            "cpu_seconds": round(total, 4),
            "cpu_pct": round(100 * total / wall, 3),
            "cpu_ms_per_second": round(1000 * total / wall, 2),
            "threads_ms_per_second": {t: round(1000 * v / wall, 2) for t, v in threads.items() if v > 0},
        }
    out["node_exporter"]["cpu_ms_per_scrape"] = round(
        1000 * out["node_exporter"]["cpu_seconds"] / max(1, scrapes), 2
    )
    for label in trees:
        out[label]["over_node_exporter"] = round(out[label]["cpu_pct"] / out["node_exporter"]["cpu_pct"], 3)
    out["after_over_before"] = round(out["after"]["cpu_pct"] / out["before"]["cpu_pct"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="the earlier commit (anything git archive takes)")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for both agents' environment")
    args = ap.parse_args()
    env = dict(kv.split("=", 1) for kv in args.env)
    print(json.dumps(asyncio.run(run(args.before, args.seconds, args.warmup, env)), indent=2))


if __name__ == "__main__":
    main()
