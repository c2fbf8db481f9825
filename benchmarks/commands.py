"""Command fan-out benchmark: time from POST /api/v1/commands to every node's result, for `true` on N agents.

The core runs as its own process; N simulated agents (benchmarks.fleet) run in this one and answer each
command at once, as `true` would. The clock stops when a subscribed /ws/client has seen N command_result
events, which is also when GET /api/v1/commands/{id} reports the command done.

Reproduce: .venv/bin/python -m benchmarks.commands --agents 1000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.fleet import Fleet, raise_nofile_limit
from benchmarks.harness import CoreProc
from servermanager.common import protocol as p


async def run(agents: int, rounds: int) -> list[float]:
    base = Path(tempfile.mkdtemp(prefix="sm-bench-cmd-"))
    try:
        async with CoreProc(base, env={"SM_CORE_COMMANDS_PER_MINUTE": "1000"}) as core:
            assert core.http is not None
            token = core.token
            auth = {"Authorization": f"Bearer {token}"}
            async with Fleet(core.url, await core.enroll_token(agents), agents, interval=5.0) as fleet:
                ws = await core.http.ws_connect(core.url.replace("http", "ws") + p.CLIENT_WS_PATH)
                await ws.send_bytes(p.encode(p.Auth(token=str(token))))
                await ws.receive()
                await ws.send_bytes(p.encode(p.Subscribe(all=True)))
                dec = p.decoder(p.CoreToClient)
                times = []
                for _ in range(rounds):
                    seen = 0
                    t0 = time.perf_counter()
                    body = {"targets": {"all": True}, "command": "true", "timeout": 30}
                    async with core.http.post(core.url + "/api/v1/commands", json=body, headers=auth) as r:
                        assert r.status == 202, await r.text()
                        cid = (await r.json())["id"]
                    while seen < agents:
                        msg = await ws.receive(timeout=60)
                        seen += sum(
                            1
                            for frame in p.decode_all(dec, msg.data)
                            if isinstance(frame, p.CommandResult) and frame.command_id == cid
                        )
                    times.append(time.perf_counter() - t0)
                    info = await core.request("GET", f"/api/v1/commands/{cid}")
                    assert info["status"] == "done", info["status"]
                    assert sum(1 for x in info["runs"] if x["status"] == "ok") == agents
                await ws.close()
                assert fleet.commands_received == agents * rounds
        return times
    finally:
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
