"""The agent's link over TLS against a real core: pinned at enrollment and kept, a changed certificate
refused before anything is sent, a private CA, and the system's CAs by default."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devkit.cores import RunningCore
from servermanager.agent.credentials import CredentialStore
from servermanager.agent.link.connection import ConnState
from servermanager.agent.main import Agent
from servermanager.core.datadir import TLS_CERT_FILE, TLS_KEY_FILE
from tests.agent.fakes import AgentRunner, fast_settings
from tests.helpers.core import RawAgent
from tests.helpers.tls import CA

WRONG_PIN = "sha256:" + "ab" * 32


@pytest.fixture
async def tls_core(tmp_path: Path) -> AsyncIterator[RunningCore]:
    server = await RunningCore(tmp_path / "core", tls="on", agent_interval=0.0).start()
    try:
        yield server
    finally:
        await server.stop()


async def streams(agent: Agent, acked: int = 2) -> None:
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.STREAMING)
        await agent.wait_until(lambda: agent.stats.samples_acked >= acked)


async def refused(agent: Agent, times: int = 2) -> None:
    """The agent refused the core `times` times (it keeps trying, with back-off)."""
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.stats.tls_refusals >= times)


async def test_enrolls_over_wss_with_the_pin_and_keeps_it(
    tmp_path: Path, tls_core: RunningCore, runner: AgentRunner
) -> None:
    state = tmp_path / "agent"
    settings = fast_settings(state, tls_core.url, core_fingerprint=tls_core.fingerprint)
    agent = Agent(settings, await tls_core.enroll_token())
    assert agent.url.startswith("wss://127.0.0.1:")
    runner.start(agent)
    await streams(agent)
    node_id = agent.node_id
    await runner.stop(agent)
    kept = CredentialStore(state).load()
    assert kept is not None and (kept.pin, kept.core) == (tls_core.fingerprint, agent.url)

    # Later runs need neither the token nor the pin setting: the kept pin is checked.
    again = Agent(fast_settings(state, tls_core.url))
    runner.start(again)
    await streams(again)
    assert again.node_id == node_id and again.stats.tls_refusals == 0


async def test_a_rekeyed_core_is_refused_until_the_agent_is_re_pinned(
    tmp_path: Path, tls_core: RunningCore, runner: AgentRunner, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "agent"
    agent = Agent(
        fast_settings(state, tls_core.url, core_fingerprint=tls_core.fingerprint),
        await tls_core.enroll_token(),
    )
    runner.start(agent)
    await streams(agent)
    node_id, old = agent.node_id, tls_core.fingerprint
    await runner.stop(agent)

    # The same core (database, port) with a new certificate, as after its key files were lost.
    await tls_core.stop()
    (tls_core.data_dir / TLS_CERT_FILE).unlink()
    (tls_core.data_dir / TLS_KEY_FILE).unlink()
    rekeyed = await RunningCore(tls_core.data_dir, port=tls_core.port, tls="on", agent_interval=0.0).start()
    try:
        new = rekeyed.fingerprint
        assert new != old
        caplog.set_level(logging.ERROR, logger="servermanager.agent")
        blocked = Agent(fast_settings(state, tls_core.url))
        runner.start(blocked)
        await refused(blocked)
        assert blocked.state != ConnState.STREAMING and blocked.stats.connects == 0
        lines = [r.getMessage() for r in caplog.records if "refusing the core" in r.getMessage()]
        assert len(lines) >= 2  # said on every attempt, once each
        assert f"presented certificate {new}" in lines[0] and f"pinned to {old}" in lines[0]
        assert f"--core-fingerprint {new}" in lines[0]
        node = rekeyed.core.nodes.get(node_id or 0)
        assert node is not None and not node.online
        await runner.stop(blocked)

        # The admin checked the new fingerprint on the core and re-pins deliberately.
        repinned = Agent(fast_settings(state, tls_core.url, core_fingerprint=new))
        runner.start(repinned)
        await streams(repinned)
        assert repinned.node_id == node_id
        await runner.stop(repinned)
        kept = CredentialStore(state).load()
        assert kept is not None and kept.pin == new
    finally:
        await rekeyed.stop()


async def test_a_wrong_pin_sends_nothing_not_even_the_enrollment_token(
    tmp_path: Path, tls_core: RunningCore, runner: AgentRunner
) -> None:
    token = await tls_core.enroll_token(uses=1)
    agent = Agent(fast_settings(tmp_path / "agent", tls_core.url, core_fingerprint=WRONG_PIN), token)
    runner.start(agent)
    await refused(agent, 3)
    assert agent.stats.connects == 0 and agent.node_id is None
    assert CredentialStore(tmp_path / "agent").load() is None
    await runner.stop(agent)
    # The single-use token was never presented: it still enrolls someone else, the only node.
    raw = RawAgent(tls_core, "other-host")
    try:
        welcome = await raw.hello(token=token)
    finally:
        await raw.close()
    status, body = await tls_core.request("GET", "/api/v1/nodes", await tls_core.admin_token())
    assert status == 200 and [n["id"] for n in body["nodes"]] == [welcome.node_id]


async def test_a_self_signed_core_is_refused_without_a_pin(
    tmp_path: Path, tls_core: RunningCore, runner: AgentRunner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="servermanager.agent")
    agent = Agent(fast_settings(tmp_path / "agent", tls_core.url), await tls_core.enroll_token())
    runner.start(agent)
    await refused(agent)
    assert agent.stats.connects == 0
    message = next(r.getMessage() for r in caplog.records if "refusing the core" in r.getMessage())
    assert "not trusted by this system" in message and "--core-fingerprint" in message


async def test_a_private_ca_file_verifies_the_core(tmp_path: Path, runner: AgentRunner) -> None:
    ca = CA.make(tmp_path / "ca")
    cert, key, pin = ca.issue(tmp_path / "server")
    core = await RunningCore(
        tmp_path / "core", tls="on", tls_cert=str(cert), tls_key=str(key), agent_interval=0.0
    ).start()
    try:
        assert core.fingerprint == pin  # the user's certificate is served, none is generated
        assert not (core.data_dir / TLS_CERT_FILE).exists()
        agent = Agent(
            fast_settings(tmp_path / "agent", core.url, ca_file=str(ca.path)), await core.enroll_token()
        )
        runner.start(agent)
        await streams(agent)
        await runner.stop(agent)
        kept = CredentialStore(tmp_path / "agent").load()
        assert kept is not None and kept.pin is None  # a CA, not a pin: re-issuing the certificate is fine

        # Another CA's file does not vouch for this core.
        other = CA.make(tmp_path / "other", "Other CA")
        stranger = Agent(
            fast_settings(tmp_path / "agent2", core.url, ca_file=str(other.path)), await core.enroll_token()
        )
        runner.start(stranger)
        await refused(stranger)
        assert stranger.stats.connects == 0
    finally:
        await core.stop()
