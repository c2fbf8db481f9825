"""One agent cannot hurt the others: values storage cannot hold, oversized batches, and floods."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from tests.helpers.core import RawAgent


async def _pair(server: RunningCore) -> tuple[RawAgent, RawAgent]:
    bad, good = RawAgent(server, "bad"), RawAgent(server, "good")
    await bad.hello(token=await server.enroll_token())
    await good.hello(token=await server.enroll_token())
    return bad, good


async def test_values_past_what_storage_holds_are_refused_alone(core_server: RunningCore) -> None:
    bad, good = await _pair(core_server)
    assert bad.ws is not None
    [sample] = bad.make(1)
    raw = msgspec.to_builtins(p.Samples(samples=[sample]))
    for field, value in (("seq", 2**63), ("metrics.mem_total", 2**64 - 1), ("metrics.procs", -1)):
        frame = {**raw, "samples": [msgspec.to_builtins(sample)]}
        target = frame["samples"][0]
        *path, last = field.split(".")
        for key in path:
            target = target[key]
        target[last] = value
        await bad.ws.send_bytes(msgspec.json.encode(frame))
        err = await bad.recv_type(p.Error)
        assert err.code == "invalid_frame" and last in err.message, err
    # The honest agent's samples go on being committed and acknowledged; so do the sender's good ones.
    ack = await good.send_samples(good.make(3))
    assert ack.rejected == [] and ack.upto_seq == 3
    ack = await bad.send_samples(bad.make(1))
    assert ack.rejected == []


async def test_a_batch_past_the_limit_is_an_invalid_frame(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "c", max_frame_bytes=8 << 20).start()  # the count, not the size
    try:
        bad, _ = await _pair(server)
        assert bad.ws is not None
        frame = p.encode(p.Samples(samples=bad.make(p.MAX_SAMPLES_PER_BATCH + 1, step=0.001)))
        await bad.ws.send_bytes(frame)
        err = await bad.recv_type(p.Error, timeout=10)
        assert err.code == "invalid_frame" and str(p.MAX_SAMPLES_PER_BATCH) in err.message
    finally:
        await server.stop()


async def test_a_flooding_agent_is_slowed_and_the_others_are_not(tmp_path: Path) -> None:
    rate = 20.0
    server = await RunningCore(
        tmp_path / "c", ingest_frames_per_second=rate, ingest_batches_in_flight=2
    ).start()
    try:
        flooder, good = await _pair(server)
        assert flooder.ws is not None and flooder.node_id is not None
        writer = server.core.store.writer
        sent = 0
        deepest = 0
        stop = asyncio.Event()

        async def flood() -> None:
            nonlocal sent
            assert flooder.ws is not None
            base = time.time() - 3600
            while not stop.is_set():
                batch = flooder.make(20, ts=base + sent * 20, step=0.05)
                await flooder.ws.send_bytes(p.encode(p.Samples(samples=batch)))
                sent += 1

        async def watch_queue() -> None:
            nonlocal deepest
            while not stop.is_set():
                deepest = max(deepest, len(writer._queue))
                await asyncio.sleep(0)

        tasks = [asyncio.create_task(flood()), asyncio.create_task(watch_queue())]
        started = time.monotonic()
        for _ in range(5):  # the honest agent's samples, one acknowledged batch at a time
            ack = await good.send_samples(good.make(1))
            assert ack.rejected == []
        await asyncio.sleep(0)
        while time.monotonic() - started < 2.0:
            await good.send_samples(good.make(1))
        stop.set()
        elapsed = time.monotonic() - started
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        read = flooder.seq // 20  # frames the flooder built; the core read at most its rate of them
        node = server.core.nodes.nodes[flooder.node_id]
        taken = node.last_seq // 20
        assert taken <= rate * elapsed + 2 * rate + 2, (taken, elapsed)
        assert read > taken  # the flooder was held back, not served
        # Memory stays bounded: never more than each agent's batches in flight waited for a commit.
        assert deepest <= 2 + 1, deepest
    finally:
        await server.stop()
