"""The connection state machine: enrollment, credentials, terminal refusals, welcome, reconnects."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path

import pytest

from servermanager.agent.credentials import CredentialStore
from servermanager.agent.link.connection import (
    AuthFailedError,
    ConnState,
    NotEnrolledError,
    ProtocolMismatchError,
    StateWaitError,
    proxy_configured,
)
from servermanager.agent.main import Agent
from servermanager.common.protocol import CloseCode, Ping, encode_str
from tests.agent.fakes import ISSUED_CREDENTIAL, AgentRunner, FakeCore, fast_settings

TOKEN = "enroll-token-abcdef123456"


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


async def test_too_small_core_interval_is_ignored(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    fake_core.welcome_interval = 0.5
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url, interval=2.0), enroll_token=TOKEN)
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.STREAMING)
    assert agent.interval == 2.0


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


@pytest.mark.parametrize(
    ("environ", "platform", "expected"),
    [
        ({}, "linux", False),
        ({"PATH": "/bin", "no_proxy": ""}, "linux", False),
        ({"HTTPS_PROXY": "http://p:3128"}, "linux", True),
        ({"all_proxy": "socks5://p:1080"}, "linux", True),
        ({}, "darwin", True),  # system settings may name one
        ({}, "win32", True),
    ],
)
def test_proxy_lookup_runs_only_when_a_proxy_can_be_configured(
    environ: dict[str, str], platform: str, expected: bool
) -> None:
    assert proxy_configured(environ, platform) is expected
