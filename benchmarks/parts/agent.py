"""Benchmark part a: the real `servermanager agent` against prometheus-node-exporter, same run, same measurement."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.fleet import percentiles
from benchmarks.harness import (
    NODE_EXPORTER,
    REPO,
    CoreProc,
    ProcWatch,
    SystemCpu,
    free_port,
    log,
    sample_every_second,
    servermanager_cmd,
    spawned,
    tail,
    to_ms,
)

RSS_MB_TARGET = 32.0  # issue 14: with top processes and per-device history on, at 1 s
CPU_VS_NODE_EXPORTER_TARGET = 0.5


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


async def bench_agent(workdir: Path, *, duration: float, warmup: float, source: str) -> dict[str, Any]:
    """`source` is "venv" (pip-install the agent into a fresh venv, as on a server) or "tree" (this checkout)."""
    out: dict[str, Any] = {"duration_s": duration, "interval_s": 1.0}
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
        if source == "venv":
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
        log(f"agent online as node {node['id']}; warming up {warmup:g}s")

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
        await sample_every_second(warm, warmup, scrape)
        scrapes.clear()
        scrape_bytes.clear()
        aw, nw = ProcWatch(agent.pid, "agent", uss=True), ProcWatch(ne.pid, "node_exporter", uss=True)
        t_from = time.time()
        system = SystemCpu()
        system.begin()
        aw.begin()
        nw.begin()
        log(f"measuring agent and node_exporter for {duration:g}s")
        await sample_every_second([aw, nw], duration, scrape)
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
        out["node_exporter"]["scrape_ms_p50"] = to_ms(percentiles(scrapes)["p50"])
        out["node_exporter"]["scrape_bytes_mean"] = round(sum(scrape_bytes) / max(1, len(scrape_bytes)))
        # CPU per unit of work, beside the ratio: what one sample (collected, spooled, sent) and
        # one scrape cost, so a figure taken on a busy machine can be compared with another.
        if out["agent"]["samples_stored_in_window"]:
            out["agent"]["cpu_ms_per_sample"] = round(
                1000 * a["cpu_seconds"] / out["agent"]["samples_stored_in_window"], 2
            )
        if scrapes:
            out["node_exporter"]["cpu_ms_per_scrape"] = round(1000 * n["cpu_seconds"] / len(scrapes), 2)
        cpu_ratio = a["cpu_pct"] / n["cpu_pct"] if n["cpu_pct"] else None
        rss_ratio = a["rss_mb_mean"] / n["rss_mb_mean"] if n["rss_mb_mean"] else None
        out["ratios"] = {
            "cpu_agent_over_node_exporter": round(cpu_ratio, 3) if cpu_ratio is not None else None,
            "rss_agent_over_node_exporter": round(rss_ratio, 3) if rss_ratio is not None else None,
        }
        out["targets"] = {
            "agent_rss_le_32mb": a["rss_mb_max"] <= RSS_MB_TARGET,
            "agent_cpu_le_half_node_exporter": cpu_ratio is not None
            and cpu_ratio <= CPU_VS_NODE_EXPORTER_TARGET,
        }
        if agent.returncode is not None:
            out["error"] = f"the agent exited during the run with {agent.returncode}"
    return out
