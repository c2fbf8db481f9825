"""A real agent enrolling at a real core that answers too late: it keeps one node and one token use."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devkit.cores import RunningCore
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
