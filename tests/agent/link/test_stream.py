"""Streaming over one welcomed socket: frame splicing, backlog and live batches, acks, heartbeat."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from servermanager.agent.exec.outbox import Outbox
from servermanager.agent.link import stream
from servermanager.agent.link.connection import ConnState
from servermanager.agent.link.stream import Stream, StreamContext, build_samples_frame
from servermanager.agent.main import Agent
from servermanager.agent.spool import SPOOL_FILE, Spool
from servermanager.agent.stats import Stats
from servermanager.common.metrics import Metrics
from servermanager.common.protocol import (
    Ack,
    AgentToCore,
    Command,
    CommandResult,
    Samples,
    decode,
    decoder,
)
from tests.agent.fakes import AgentRunner, FakeCore, fast_settings, metrics
from tests.helpers.wait import wait_for

TOKEN = "enroll-token-abcdef123456"

# ---------------------------------------------------------------- frame splicing


def test_samples_frame_is_what_the_core_decodes(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        expected = [spool.append(float(i), metrics(float(i))) for i in range(5)]
        rows = spool.read_raw(10)
    frame, used, oversize = build_samples_frame(rows, 1 << 20)
    assert used == 5 and oversize == []
    assert decode(decoder(AgentToCore), frame).samples == expected


def test_samples_frame_respects_the_byte_limit(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        for i in range(10):
            spool.append(float(i), metrics())
        rows = spool.read_raw(10)
    one = len(rows[0][1])
    limit = 40 + 3 * one + 2  # room for three samples and their commas, not four
    frame, used, oversize = build_samples_frame(rows, limit)
    assert used == 3 and oversize == []
    assert len(frame) <= limit
    # A sample that can never fit is reported (to be discarded) only at the head of a batch.
    frame, used, oversize = build_samples_frame(rows, 50)
    assert frame == b"" and oversize == [seq for seq, _ in rows] and used == 10


# ---------------------------------------------------------------- against a fake core


async def test_backlog_goes_oldest_first_interleaved_with_live(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with Spool(state / SPOOL_FILE) as spool:
        for i in range(50):
            spool.append(1000.0 + i, metrics())
    agent = Agent(
        fast_settings(state, fake_core.url, batch_size=5, max_inflight_batches=1), enroll_token=TOKEN
    )

    async def hold_first_ack_until_live(n: int) -> None:
        # The first backlog batch is acknowledged only once a live sample exists, so the
        # sender has a real choice to make on its next turn.
        if n == 1:
            await agent.wait_until(lambda: agent.stats.samples_spooled >= 1)

    fake_core.ack_gate = hold_first_ack_until_live
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.stats.samples_acked >= 50 + 3)
    batches = fake_core.batches
    assert batches[0] == [1, 2, 3, 4, 5]
    assert all(s > 50 for s in batches[1])  # the live sample jumped the remaining backlog
    backlog = [s for b in batches if b[0] <= 50 for s in b]
    assert backlog == list(range(1, 51))  # oldest first, each exactly once
    assert all(len(b) <= 5 for b in batches)


async def test_rejected_samples_are_dropped_and_counted(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner, caplog: pytest.LogCaptureFixture
) -> None:
    fake_core.reject = lambda seqs: [s for s in seqs if s % 2 == 0]
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url), enroll_token=TOKEN)
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.stats.samples_rejected >= 2)
    remaining = {s.seq for s in agent.spool.oldest(1000)}
    rejected = {s for b in fake_core.batches[: agent.stats.batches_acked] for s in b if s % 2 == 0}
    assert rejected and not rejected & remaining
    assert "core rejected" in caplog.text


class SwitchableCollector:
    """Real-looking readings until switched off; then every tick fails, so no sample is spooled."""

    def __init__(self) -> None:
        self.on = True

    def collect(self) -> Metrics:
        if not self.on:
            raise RuntimeError("collector switched off by the test")
        return metrics()


async def test_pings_only_when_no_samples_flow(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    collector = SwitchableCollector()
    settings = fast_settings(tmp_path / "state", fake_core.url, interval=0.2)
    agent = Agent(settings, enroll_token=TOKEN, collector=collector)
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.stats.samples_acked >= 1)
    # Streaming: a batch every interval tells the core this agent lives; a ping would be waste.
    pings, batches = fake_core.pings, len(fake_core.batches)
    async with asyncio.timeout(10):
        await fake_core.wait_until(lambda: len(fake_core.batches) >= batches + 12)
    assert fake_core.pings == pings, "pinged while a batch went out every interval"
    # Samples stop: nothing else is sent, so pings keep the link alive, and the core answers them.
    collector.on = False
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.stats.pongs_received >= 3)
    assert fake_core.pings >= 3
    assert agent.stats.sample_errors >= 1
    assert agent.state is ConnState.STREAMING and fake_core.connections == 1


async def test_silent_core_is_declared_dead_and_redialled(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "HEARTBEAT_SLACK", 0.2)  # dead after 3 * 0.05 + 0.2 s
    fake_core.silent_after_welcome = True
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url), enroll_token=TOKEN)
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.STREAMING)
        await agent.wait_state(ConnState.BACKOFF)
        await fake_core.wait_until(lambda: fake_core.connections >= 2)
    assert agent.stats.samples_acked == 0
    assert agent.spool.count() >= 1  # unacked samples are kept for the next connection


async def test_a_core_that_answers_but_never_acks_is_given_up_and_redialled(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "MIN_ACK_TIMEOUT", 0.5)
    monkeypatch.setattr(stream, "HEARTBEAT_SLACK", 0.3)  # an ack is overdue after 0.5 s
    fake_core.withhold_acks = True
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url), enroll_token=TOKEN)
    runner.start(agent)
    async with asyncio.timeout(10):
        await fake_core.wait_until(lambda: fake_core.connections >= 2)
    # The core answered every ping, so the socket was never silent: the overdue ack ended it.
    assert fake_core.pings >= 1
    assert agent.stats.samples_acked == 0 and agent.spool.count() >= 1


# ---------------------------------------------------------------- on its context alone


class ScriptedSocket:
    """The socket side of a stream without a network: frames sent are kept, frames to receive queued."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.incoming: asyncio.Queue[Any] = asyncio.Queue()
        self.last_sent = time.monotonic()  # the hello just went out

    async def send(self, data: bytes) -> None:
        self.sent.append(decode(decoder(AgentToCore), data))
        self.last_sent = time.monotonic()

    async def recv(self) -> Any:
        return await self.incoming.get()


async def test_a_stream_needs_only_its_context_and_a_socket(tmp_path: Path) -> None:
    stats, dispatched = Stats(), []
    changes = 0

    def changed() -> None:
        nonlocal changes
        changes += 1

    with Spool(tmp_path / "s.db") as spool:
        for i in range(3):
            spool.append(1000.0 + i, metrics())
        outbox = Outbox()
        outbox.put_result(CommandResult(command_id="held", status="ok"))  # from a past connection
        ctx = StreamContext(
            spool=spool,
            outbox=outbox,
            dispatch=dispatched.append,
            stats=stats,
            changed=changed,
            wake=asyncio.Event(),
            interval=lambda: 60.0,  # no ping for a minute: every frame below is the stream's own
            batch_size=2,
            max_inflight=1,
            max_frame_bytes=1 << 20,
        )
        sock = ScriptedSocket()
        task = asyncio.create_task(Stream(ctx, sock, spool.last_seq).run())
        try:
            await wait_for(lambda: len(sock.sent) == 2, what="the first batch and the held result")
            assert outbox.online
            batches = [[s.seq for s in f.samples] for f in sock.sent if isinstance(f, Samples)]
            assert batches == [[1, 2]]  # one batch in flight at most: the third sample waits
            assert [f.command_id for f in sock.sent if isinstance(f, CommandResult)] == ["held"]
            sock.incoming.put_nowait(Ack(upto_seq=2, from_seq=1))
            sock.incoming.put_nowait(Command("c1", 10, argv=["uptime"]))
            await wait_for(lambda: stats.batches_sent == 2 and dispatched, what="the ack's freed slot used")
            assert [s.seq for s in sock.sent[-1].samples] == [3]
            assert [s.seq for s in spool.oldest(10)] == [3]  # acked samples left the spool
            assert (stats.batches_acked, stats.samples_acked, stats.last_acked_seq) == (1, 2, 2)
            assert dispatched == [Command("c1", 10, argv=["uptime"])]
            assert changes >= 3
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert not outbox.online  # a gone stream takes the outbox offline
