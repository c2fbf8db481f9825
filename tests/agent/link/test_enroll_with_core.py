"""A real agent enrolling at a real core that answers too late: it keeps one node and one token use."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devkit.cores import RunningCore
from servermanager.agent.credentials import ENROLL_ID_FILE, CredentialStore
from servermanager.agent.link.connection import ConnState
from servermanager.agent.main import Agent
from tests.agent.fakes import AgentRunner, fast_settings
from tests.helpers.wait import wait_for


async def test_an_agent_whose_welcome_came_too_late_keeps_one_node(
    core_server: RunningCore, tmp_path: Path, runner: AgentRunner
) -> None:
    """The core is busy (its write lock held), so the agent gives up waiting for its welcome and
    dials again while its first hello still waits. Every attempt carries the same enroll id: once the core can write, the
    retries get the node the first hello made, not one node each, and the single-use token is
    enough (each retry would otherwise be refused as "used up", which ends an agent for good)."""
    core = core_server.core
    token = await core_server.enroll_token(uses=1)
    agent = Agent(fast_settings(tmp_path / "state", core_server.url, connect_timeout=0.3), enroll_token=token)
    async with core.db.transaction():  # what a long rollup or a commit of thousands of batches does
        runner.start(agent)
        await wait_for(lambda: agent.stats.connects >= 2, what="a retry after a welcome that did not come")
    async with asyncio.timeout(20):
        await agent.wait_state(ConnState.STREAMING)
    assert agent.node_id is not None
    assert list(core.nodes.nodes) == [agent.node_id]
    await runner.stop(agent)


async def test_an_agent_stopped_before_its_welcome_gets_its_node_when_started_again(
    core_server: RunningCore, tmp_path: Path, runner: AgentRunner
) -> None:
    """The agent is stopped (SIGTERM, a restart) after its hello and before its welcome, and the
    core then enrolls it, spending the single-use token. Started again on the same state dir, the
    agent sends the enroll id it kept there and gets that node, with a new credential; a new id
    would be refused as "used up", which ends an agent for good."""
    core = core_server.core
    token = await core_server.enroll_token(uses=1)
    state = tmp_path / "state"
    first = Agent(fast_settings(state, core_server.url, connect_timeout=0.3), enroll_token=token)
    async with core.db.transaction():
        runner.start(first)
        await wait_for(lambda: first.stats.connects >= 2, what="a hello that waits for the core")
        await runner.stop(first)
    await wait_for(lambda: len(core.nodes.nodes) == 1, what="the node the first hello made")
    (made,) = core.nodes.nodes
    assert CredentialStore(state).load() is None
    assert (state / ENROLL_ID_FILE).is_file()

    again = Agent(fast_settings(state, core_server.url), enroll_token=token)
    runner.start(again)
    async with asyncio.timeout(20):
        await again.wait_state(ConnState.STREAMING)
    assert again.node_id == made
    assert list(core.nodes.nodes) == [made]
    stored = CredentialStore(state).load()
    assert stored is not None and stored.node_id == made
    assert not (state / ENROLL_ID_FILE).exists()  # enrolled: the next enrollment starts afresh
    await runner.stop(again)
