"""The connection state machine and streaming, against an in-process fake core."""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from pathlib import Path

import pytest

from servermanager.agent import connection
from servermanager.agent.connection import (
    AuthFailedError,
    ConnState,
    NotEnrolledError,
    ProtocolMismatchError,
    StateWaitError,
    build_samples_frame,
)
from servermanager.agent.credentials import CredentialStore
from servermanager.agent.main import Agent
from servermanager.agent.spool import SPOOL_FILE, Spool
from servermanager.common.metrics import Metrics
from servermanager.common.protocol import AgentToCore, CloseCode, Error, Ping, decode, decoder, encode_str
from tests.agent.fakes import ISSUED_CREDENTIAL, AgentRunner, FakeCore, fast_settings, metrics

TOKEN = "enroll-token-abcdef123456"

# ---------------------------------------------------------------- frame building


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


async def test_enrolls_streams_acks_and_keeps_the_credential(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # even at DEBUG, no secret may be logged
    state = tmp_path / "state"
    agent = Agent(fast_settings(state, fake_core.url), enroll_token=TOKEN)
    assert agent.state is ConnState.IDLE
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.STREAMING)
        await agent.wait_until(lambda: agent.stats.samples_acked >= 3)
    hello = fake_core.hellos[0]
    assert hello.enroll_token == TOKEN and hello.credential is None
    assert hello.host.hostname and hello.spool_dropped == 0
    assert agent.node_id == fake_core.node_id
    store = CredentialStore(state)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    saved = store.load()
    assert saved is not None and saved.node_id == 7 and saved.credential == ISSUED_CREDENTIAL
    assert saved.core == f"{fake_core.url}/ws/agent"
    # Every batch is one contiguous seq range, and acked samples left the spool.
    for seqs in fake_core.batches:
        assert seqs == list(range(seqs[0], seqs[-1] + 1))
    acked = {s for seqs in fake_core.batches[: agent.stats.batches_acked] for s in seqs}
    assert not acked & {s.seq for s in agent.spool.oldest(1000)}
    await runner.stop(agent)
    assert agent.state is ConnState.STOPPED
    assert fake_core.close_codes[-1] == CloseCode.GOING_AWAY
    assert agent.spool.closed

    # A restart authenticates with the stored credential; the token is no longer needed.
    again = Agent(fast_settings(state, fake_core.url))
    runner.start(again)
    async with asyncio.timeout(10):
        await again.wait_state(ConnState.STREAMING)
    assert fake_core.hellos[-1].credential == ISSUED_CREDENTIAL
    assert fake_core.hellos[-1].enroll_token is None
    await runner.stop(again)
    assert ISSUED_CREDENTIAL not in caplog.text
    assert TOKEN not in caplog.text


async def test_unauthorized_close_is_terminal(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    fake_core.refuse_code = CloseCode.UNAUTHORIZED
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url), enroll_token=TOKEN)
    task = runner.start(agent)
    with pytest.raises(AuthFailedError, match="enrollment token"):
        async with asyncio.timeout(10):
            await task
    assert agent.state is ConnState.AUTH_FAILED
    assert fake_core.connections == 1  # no retry storm
    assert not CredentialStore(tmp_path / "state").path.exists()
    with pytest.raises(StateWaitError, match="AUTH_FAILED"):
        await agent.wait_state(ConnState.STREAMING)


async def test_protocol_mismatch_is_terminal(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    fake_core.refuse_code = CloseCode.UNSUPPORTED_PROTOCOL
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url), enroll_token=TOKEN)
    waiter = asyncio.create_task(agent.wait_state(ConnState.STREAMING))
    task = runner.start(agent)
    with pytest.raises(ProtocolMismatchError):
        async with asyncio.timeout(10):
            await task
    assert agent.state is ConnState.INCOMPATIBLE
    with pytest.raises(StateWaitError, match="INCOMPATIBLE"):
        await waiter  # a waiter for another state is woken with an error, not left hanging


async def test_not_enrolled_fails_fast(tmp_path: Path, fake_core: FakeCore, runner: AgentRunner) -> None:
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url))
    with pytest.raises(NotEnrolledError, match="SM_AGENT_ENROLL_TOKEN"):
        async with asyncio.timeout(10):
            await runner.start(agent)
    assert agent.state is ConnState.AUTH_FAILED
    assert fake_core.connections == 0


async def test_unacked_batch_is_resent_after_reconnect(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    fake_core.drop_first_batch = True
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url), enroll_token=TOKEN)
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.BACKOFF)
        await agent.wait_state(ConnState.STREAMING)
        await agent.wait_until(lambda: agent.stats.samples_acked >= 2)
    first = fake_core.batches[0]
    second_conn = [
        s for seqs, c in zip(fake_core.batches, fake_core.batch_conn, strict=True) if c == 2 for s in seqs
    ]
    assert set(first) <= set(second_conn)  # nothing is lost: the unacked batch went again
    assert fake_core.connections == 2
    assert fake_core.hellos[1].credential == ISSUED_CREDENTIAL  # enrolled on the first connection
    assert agent.stats.connects == 2 and agent.stats.welcomes == 2


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


async def test_core_interval_last_seq_and_pings(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    fake_core.welcome_interval = 1.0
    fake_core.welcome_last_seq = 1000
    fake_core.after_welcome = [encode_str(Ping(ts=123.5))]
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url), enroll_token=TOKEN)
    runner.start(agent)
    async with asyncio.timeout(10):
        await fake_core.wait_until(lambda: 123.5 in fake_core.pongs)  # we answered its ping
        await agent.wait_state(ConnState.STREAMING)
    assert agent.interval == 1.0
    assert agent.spool.last_seq >= 1000
    async with asyncio.timeout(10):
        await fake_core.wait_until(lambda: len(fake_core.batches) >= 1)
    assert fake_core.batches[0][0] > 1000  # seq continues above what the core already holds


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


async def test_too_small_core_interval_is_ignored(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    fake_core.welcome_interval = 0.5
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url, interval=2.0), enroll_token=TOKEN)
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.STREAMING)
    assert agent.interval == 2.0


async def test_invalid_frames_and_errors_do_not_break_streaming(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner, caplog: pytest.LogCaptureFixture
) -> None:
    fake_core.after_welcome = [
        "this is not json",
        json.dumps({"type": "launch_missiles", "now": True}),
        json.dumps({"type": "ack", "upto_seq": "not-a-number"}),
        encode_str(Error(code="slow_down", message="too many samples")),
    ]
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url), enroll_token=TOKEN)
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.stats.samples_acked >= 2)
    assert agent.stats.invalid_frames == 3
    assert agent.stats.core_errors == 1
    assert agent.state is ConnState.STREAMING
    assert fake_core.connections == 1
    assert "slow_down" in caplog.text and "too many samples" in caplog.text


async def test_silent_core_is_declared_dead_and_redialled(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "HEARTBEAT_SLACK", 0.2)  # dead after 3 * 0.05 + 0.2 s
    fake_core.silent_after_welcome = True
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url), enroll_token=TOKEN)
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.STREAMING)
        await agent.wait_state(ConnState.BACKOFF)
        await fake_core.wait_until(lambda: fake_core.connections >= 2)
    assert agent.stats.samples_acked == 0
    assert agent.spool.count() >= 1  # unacked samples are kept for the next connection


async def test_spools_while_the_core_is_down(tmp_path: Path, runner: AgentRunner) -> None:
    agent = Agent(fast_settings(tmp_path / "state", "ws://127.0.0.1:9"), enroll_token=TOKEN)
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.BACKOFF)
        await agent.wait_until(lambda: agent.stats.samples_spooled >= 3)
    assert agent.spool.count() >= 3
    assert agent.stats.connects == 0
    seqs = [s.seq for s in agent.spool.oldest(100)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    await runner.stop(agent)
    assert agent.state is ConnState.STOPPED
