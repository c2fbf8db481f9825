"""Command fan-out benchmark: time from POST /api/v1/commands to every node's result, for `true` on N agents.

The core runs as its own process; N simulated agents (benchmarks.fleet) run in this one and answer each
command at once, as `true` would. The clock stops when a subscribed /ws/client has seen N command_result
events, which is also when GET /api/v1/commands/{id} reports the command done.

Reproduce: .venv/bin/python -m benchmarks.commands --agents 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.fleet import Fleet, raise_nofile_limit
from core import protocol as p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_health(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit("the core exited during start-up")
            try:
                async with http.get(url + "/api/v1/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the core did not come up")


async def run(agents: int, rounds: int) -> list[float]:
    base = Path(tempfile.mkdtemp(prefix="sm-bench-cmd-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SM_CORE_COMMANDS_PER_MINUTE": "1000"}
    log = (base / "core.log").open("wb")
    core = subprocess.Popen(  # noqa: ASYNC220 - start-up, before anything is timed
        [
            sys.executable,
            "-m",
            "core.cli",
            "core",
            "--data-dir",
            str(base / "core"),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        await _wait_health(url, core)
        password = (base / "core" / "initial-admin-password").read_text().strip()
        async with aiohttp.ClientSession() as http:
            async with http.post(
                url + "/api/v1/auth/login", json={"username": "admin", "password": password}
            ) as r:
                token = (await r.json())["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            async with http.post(
                url + "/api/v1/enroll-tokens", json={"uses": agents, "ttl": 3600}, headers=auth
            ) as r:
                enroll = (await r.json())["token"]
            async with Fleet(url, enroll, agents, interval=5.0) as fleet:
                ws = await http.ws_connect(url.replace("http", "ws") + p.CLIENT_WS_PATH)
                await ws.send_bytes(p.encode(p.Auth(token=token)))
                await ws.receive()
                await ws.send_bytes(p.encode(p.Subscribe(all=True)))
                dec = p.decoder(p.CoreToClient)
                times = []
                for _ in range(rounds):
                    seen = 0
                    t0 = time.perf_counter()
                    body = {"targets": {"all": True}, "command": "true", "timeout": 30}
                    async with http.post(url + "/api/v1/commands", json=body, headers=auth) as r:
                        assert r.status == 202, await r.text()
                        cid = (await r.json())["id"]
                    while seen < agents:
                        msg = await ws.receive(timeout=60)
                        frame = p.decode(dec, msg.data)
                        if isinstance(frame, p.CommandResult) and frame.command_id == cid:
                            seen += 1
                    times.append(time.perf_counter() - t0)
                    async with http.get(f"{url}/api/v1/commands/{cid}", headers=auth) as r:
                        info = await r.json()
                        assert info["status"] == "done", info["status"]
                        assert sum(1 for x in info["runs"] if x["status"] == "ok") == agents
                await ws.close()
                assert fleet.commands_received == agents * rounds
        return times
    finally:
        core.terminate()
        core.wait(timeout=30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    raise_nofile_limit()
    times = asyncio.run(run(args.agents, args.rounds))
    ms = sorted(t * 1000 for t in times)
    print("| agents | rounds | p50 ms | max ms | target |\n| --- | --- | --- | --- | --- |")
    print(
        f"| {args.agents} | {args.rounds} | {statistics.median(ms):.0f} | {ms[-1]:.0f} | "
        f"{'met' if statistics.median(ms) < 2000 else 'missed'} (< 2000 ms) |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
