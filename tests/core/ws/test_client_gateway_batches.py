"""Batched pushes on /ws/client, read frame by frame off a plain aiohttp socket (RawClient unpacks them)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devkit.cores import RunningCore
from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from tests.helpers.core import RawAgent, metrics

_dec = p.decoder(p.CoreToClient)


@dataclass
class Wire:
    """What arrived on the socket: each message as sent, and the frames they carried, in order."""

    messages: list[list[Any]] = field(default_factory=list)  # one entry per websocket message
    batches: list[int] = field(default_factory=list)  # index into messages of each batch frame

    @property
    def frames(self) -> list[Any]:
        return [f for m in self.messages for f in m]

    def samples(self) -> list[p.SampleEvent]:
        return [f for f in self.frames if isinstance(f, p.SampleEvent)]


class PlainClient:
    """A /ws/client peer on a bare aiohttp socket: it sees batch frames exactly as the core sends them."""

    def __init__(self, core: RunningCore) -> None:
        self.core = core
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.wire = Wire()

    async def start(self) -> p.Snapshot:
        assert self.core.http is not None
        self.ws = await self.core.http.ws_connect(self.core.client_ws)
        await self.ws.send_bytes(p.encode(p.Auth(token=await self.core.admin_token())))
        assert isinstance(await self._one(), p.AuthOk)
        await self.ws.send_bytes(p.encode(p.Subscribe(all=True)))
        snapshot = await self._one()
        assert isinstance(snapshot, p.Snapshot), snapshot
        return snapshot

    async def _one(self) -> Any:
        assert self.ws is not None
        msg = await self.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frames = p.decode_all(_dec, msg.data)
        assert len(frames) == 1, frames
        return frames[0]

    async def read_until(self, done: Any, timeout: float = 10.0) -> Wire:
        """Read messages until done(wire) holds; every message is kept, batch or not."""
        assert self.ws is not None
        deadline = time.monotonic() + timeout
        while not done(self.wire):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; got {len(self.wire.frames)} frames so far")
            msg = await self.ws.receive(timeout=left)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            outer = p.decode(_dec, msg.data)
            if isinstance(outer, p.Batch):
                self.wire.batches.append(len(self.wire.messages))
            self.wire.messages.append(p.decode_all(_dec, msg.data))
        return self.wire

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


@pytest.fixture
async def plain(core_server: RunningCore) -> AsyncIterator[PlainClient]:
    client = PlainClient(core_server)
    try:
        yield client
    finally:
        await client.close()


async def _agent(core: RunningCore, name: str) -> RawAgent:
    """An enrolled agent whose node is fully online before any client subscribes.

    The welcome comes before the core marks the node online and publishes that; an ack can only
    come after, so the online news never lands among the events a test is counting. The sample
    is an hour old, so every sample a test sends afterwards is newer: live news, pushed.
    """
    agent = RawAgent(core, name)
    await agent.hello(token=await core.enroll_token())
    await agent.send_samples(agent.make(1, ts=time.time() - 3600))
    return agent


async def test_events_queued_during_one_step_go_out_as_one_batch(
    core_server: RunningCore, plain: PlainClient
) -> None:
    agent = await _agent(core_server, "burst")
    await plain.start()
    # One agent frame with 50 newer samples: the core publishes 50 events before its writer
    # task gets to run, so they are all queued when it wakes.
    samples = agent.make(50, ts=time.time() - 60, step=0.5)
    for i, s in enumerate(samples):
        samples[i] = mt.Sample(seq=s.seq, ts=s.ts, metrics=metrics(cpu=float(i)))
    await agent.send_samples(samples)
    wire = await plain.read_until(lambda w: len(w.samples()) >= 50)
    assert wire.batches == [0]
    [batch] = wire.messages
    assert [type(f) for f in batch] == [p.SampleEvent] * 50
    assert [f.sample for f in batch] == samples  # every one, once, in order, intact
    assert {f.node_id for f in batch} == {agent.node_id}
    await agent.close()


async def test_a_batch_never_exceeds_its_cap_and_keeps_order(
    core_server: RunningCore, plain: PlainClient
) -> None:
    agent = await _agent(core_server, "flood")
    await plain.start()
    samples = agent.make(1200, ts=time.time() - 1200, step=0.5)
    await agent.send_samples(samples)
    wire = await plain.read_until(lambda w: len(w.samples()) >= 1200)
    assert [e.sample.seq for e in wire.samples()] == [s.seq for s in samples]
    assert len(wire.batches) >= 3  # 1,200 queued events do not leave as one huge frame
    assert max(len(m) for m in wire.messages) <= 500
    await agent.close()


async def test_batches_from_many_agents_deliver_each_event_once_in_order_per_node(
    core_server: RunningCore, plain: PlainClient
) -> None:
    agents = [await _agent(core_server, f"node-{i}") for i in range(6)]
    await plain.start()
    rounds, per_frame = 4, 25
    t0 = time.time() - 300

    async def stream(agent: RawAgent) -> list[int]:
        sent = []
        for r in range(rounds):
            batch = agent.make(per_frame, ts=t0 + r * per_frame, step=1.0)
            await agent.send_samples(batch)
            sent += [s.seq for s in batch]
        return sent

    sent = await asyncio.gather(*(stream(a) for a in agents))
    total = len(agents) * rounds * per_frame
    wire = await plain.read_until(lambda w: len(w.samples()) >= total)
    assert wire.batches, "no batch frame arrived"
    events = wire.samples()
    assert len(events) == total
    keys = Counter((e.node_id, e.sample.seq) for e in events)
    assert max(keys.values()) == 1  # nothing twice
    for agent, seqs in zip(agents, sent, strict=True):
        got = [e.sample.seq for e in events if e.node_id == agent.node_id]
        assert got == seqs, agent.name  # nothing missing, nothing reordered within a node
    for a in agents:
        await a.close()


async def test_a_lone_event_is_sent_bare(core_server: RunningCore, plain: PlainClient) -> None:
    agent = await _agent(core_server, "quiet")
    await plain.start()
    await agent.send_samples(agent.make(1, cpu=42.0))
    wire = await plain.read_until(lambda w: len(w.samples()) >= 1)
    assert wire.batches == []
    [[event]] = wire.messages
    assert isinstance(event, p.SampleEvent) and event.sample.metrics.cpu_pct == 42.0
    await agent.close()


@pytest.mark.parametrize(("gather", "messages"), [(0.3, 1), (0.0, 2)])
async def test_events_within_push_gather_of_each_other_leave_together(
    tmp_path: Path, gather: float, messages: int
) -> None:
    # Two agents' samples, each acknowledged before the next is sent: two loop turns apart, so
    # only the gather window puts them in one frame; with push_gather 0 each goes at once.
    core = await RunningCore(tmp_path / "core", push_gather=gather).start()
    client = PlainClient(core)
    try:
        a, b = await _agent(core, "a"), await _agent(core, "b")
        await client.start()
        await a.send_samples(a.make(1, cpu=1.0))
        await b.send_samples(b.make(1, cpu=2.0))
        wire = await client.read_until(lambda w: len(w.samples()) >= 2)
        assert [e.sample.metrics.cpu_pct for e in wire.samples()] == [1.0, 2.0]
        assert len(wire.messages) == messages
        for agent in (a, b):
            await agent.close()
    finally:
        await client.close()
        await core.stop()
