"""What the Redis bus costs a core per second, and how late other cores see its events, by gather time.

A core's RedisBus gathers the events published while its sender waits (`core/redisbus.py: GATHER`)
into one PUBLISH. Each PUBLISH costs a round trip through redis-py, and every core, the sender
included, receives it back, so the bus's CPU is mostly per message, and a longer gather buys less
CPU with later events on the other cores. This measures both, in one process, against the
machine's Redis: bus "a" forwards `--rate` sample-sized events a second (as a core with that many
agents at 1 Hz does) for `--seconds`, bus "b" (another core) receives them; reported per gather
time: the process's CPU % over the window (both buses, their echoes and the loop included), the
PUBLISH calls a second, and the delay from `forward` on a to the hook on b (p50, p99, max).
An idle pair (rate 0) is measured first: the loop's own cost, to subtract.

Reproduce: .venv/bin/python -m benchmarks.bus_gather --gathers 0.01,0.025,0.04 --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import time
import uuid
from typing import Any

from servermanager.core import redisbus
from servermanager.core.auth import Role
from servermanager.core.redisbus import RedisBus

TICK = 0.005  # s: the forwarding loop's step; events of one step go out together, as a loop turn's do


class CountingBus(RedisBus):
    """A bus that counts the Redis messages it receives: one per PUBLISH of the other."""

    messages = 0

    def _received(self, raw: bytes) -> None:
        self.messages += 1
        super()._received(raw)


async def measure(url: str, gather: float, rate: int, seconds: float) -> dict[str, Any]:
    redisbus.GATHER = gather  # read by the sender on every round
    prefix = f"smbench-gather-{uuid.uuid4().hex[:8]}"
    a, b = RedisBus(url, prefix, "a"), CountingBus(url, prefix, "b")
    delays: list[float] = []
    expected = 0  # how many b must see before the window ends: known once a has sent them all
    all_seen = asyncio.Event()

    def hook(origin: str, node_id: int | None, data: bytes) -> None:
        delays.append(time.perf_counter() - struct.unpack_from("d", data)[0])
        if expected and len(delays) >= expected:
            all_seen.set()

    b.on_remote = hook
    for bus in (a, b):
        await bus.start()
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(a.up.wait(), b.up.wait())
        await asyncio.sleep(0.5)  # the subscriptions settle
        filler = b"x" * 1500  # about a sample event without a process list
        per_tick = round(rate * TICK)
        t0, c0 = time.perf_counter(), time.process_time()
        sent = 0
        while time.perf_counter() - t0 < seconds:
            for i in range(per_tick):
                a.forward(i, struct.pack("d", time.perf_counter()) + filler, Role.VIEWER)
                sent += 1
            await asyncio.sleep(TICK)
        expected = sent
        if len(delays) < sent:
            async with asyncio.timeout(10):
                await all_seen.wait()
        c1, t1 = time.process_time(), time.perf_counter()
    finally:
        for bus in (a, b):
            await bus.stop()
    ms = sorted(d * 1000 for d in delays)
    return {
        "gather_s": gather,
        "events_per_s": round(sent / (t1 - t0), 1),
        "cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 1),
        "publishes_per_s": round(b.messages / (t1 - t0), 1),
        "delay_ms": {
            "p50": round(statistics.median(ms), 1) if ms else None,
            "p99": round(ms[int(0.99 * (len(ms) - 1))], 1) if ms else None,
            "max": round(ms[-1], 1) if ms else None,
        },
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--gathers", default="0.01,0.025,0.04", help="gather times (s) to compare")
    ap.add_argument("--rate", type=int, default=1000, help="events a second forwarded by bus a")
    ap.add_argument("--seconds", type=float, default=10.0, help="each measurement's window")
    ap.add_argument("--rounds", type=int, default=2, help="each gather time this many times, interleaved")
    args = ap.parse_args()
    gathers = [float(g) for g in args.gathers.split(",")]
    idle = await measure(args.redis, gathers[0], 0, args.seconds)
    print(json.dumps({"idle": idle}))
    for _ in range(args.rounds):
        for gather in gathers:
            print(json.dumps(await measure(args.redis, gather, args.rate, args.seconds)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
