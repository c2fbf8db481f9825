"""The heartbeat watchdog (Nodes.watchdog): silence takes a node offline, a steady stream of frames never does.

The agents here pace their samples like real agents do; that pacing is the behaviour under test, not
a wait for something to happen (those are all conditions).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from servermanager.core.nodes import NodeState
from tests.helpers.core import RawAgent, RawClient


async def _enrolled(core: RunningCore, name: str) -> RawAgent:
    agent = RawAgent(core, name)
    await agent.hello(token=await core.enroll_token())
    return agent


def _node(core: RunningCore, agent: RawAgent) -> NodeState:
    assert agent.node_id is not None
    st = core.core.nodes.get(agent.node_id)
    assert st is not None
    return st


async def _closed_with(agent: RawAgent, code: int) -> None:
    """The close frame the core sent. (ws.close_code would say 1006 here: this agent read it late,
    and by then the core had dropped the connection, so the close reply could not be sent.)"""
    assert agent.ws is not None
    msg = await agent.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    assert (msg.data, msg.extra) == (code, "heartbeat timeout")


async def test_watchdog_sweep_spares_a_talking_node_and_drops_a_silent_one(
    core_server: RunningCore,
) -> None:
    """Sweeps with a short timeout, called directly: 0.2 s between samples against a 0.8 s timeout."""
    nodes = core_server.core.nodes
    chatty = await _enrolled(core_server, "chatty")
    silent = await _enrolled(core_server, "silent")
    chatty_link = _node(core_server, chatty).link
    assert chatty_link is not None
    timeout, interval = 0.8, 0.2
    asked: list[float] = []

    def timeout_for(node_interval: float) -> float:
        asked.append(node_interval)
        return timeout

    dropped = 0
    started = time.monotonic()
    while time.monotonic() - started < 3 * timeout:
        ack = await chatty.send_samples(chatty.make(1))
        assert ack.rejected == []
        # Sweep often until the next sample is due, as the core's watchdog job does.
        due = time.monotonic() + interval
        while time.monotonic() < due:
            dropped += await nodes.watchdog(timeout_for)
            assert _node(core_server, chatty).online, "a node that keeps sending was taken offline"
            await asyncio.sleep(0.02)

    # Three timeouts later the talking node is on its first link still.
    st = _node(core_server, chatty)
    assert st.online and st.link is chatty_link
    assert chatty.ws is not None and not chatty.ws.closed
    # The silent one went (once, by these sweeps), with the timeout close code.
    assert dropped == 1
    assert not _node(core_server, silent).online
    await _closed_with(silent, p.CloseCode.TIMEOUT)
    # The timeout is asked per node, for that node's interval (the core imposes 1 s in these tests).
    assert asked and set(asked) == {1.0}
    # A sweep with nothing silent changes nothing.
    assert await nodes.watchdog(lambda _interval: 60.0) == 0
    assert _node(core_server, chatty).online
    await chatty.close()


@pytest.mark.slow
async def test_agent_sending_faster_than_its_timeout_stays_online_for_several_timeouts(
    tmp_path: Path,
) -> None:
    """The core's own watchdog job, end to end: heartbeat timeout 1 s x 1 miss + 1 s = 2 s."""
    server = await RunningCore(tmp_path / "core", agent_interval=1.0, heartbeat_misses=1).start()
    try:
        timeout = server.core.heartbeat_timeout(1.0)
        assert timeout == 2.0
        client = RawClient(server)
        await client.connect(await server.admin_token())
        await client.subscribe()
        chatty = await _enrolled(server, "chatty")
        silent = await _enrolled(server, "silent")
        chatty_link = _node(server, chatty).link

        started = time.monotonic()
        while time.monotonic() - started < 3 * timeout + 0.5:
            await chatty.send_samples(chatty.make(1))
            assert _node(server, chatty).online, "a node that keeps sending was taken offline"
            await asyncio.sleep(timeout / 4)  # the agent's sample interval

        st = _node(server, chatty)
        assert st.online and st.link is chatty_link
        assert chatty.ws is not None and not chatty.ws.closed
        # The job was running all along: the silent node went, and clients were told.
        assert not _node(server, silent).online
        await _closed_with(silent, p.CloseCode.TIMEOUT)
        offline = await client.recv_type(p.NodeStatus, where=lambda f: not f.online)
        assert offline.node_id == silent.node_id
        # The only offline news is the silent node's: closing the chatty agent brings the next.
        await chatty.close()
        offline = await client.recv_type(p.NodeStatus, where=lambda f: not f.online)
        assert offline.node_id == chatty.node_id
        await client.close()
    finally:
        await server.stop()
