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
from tests.helpers.wait import wait_for


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


async def test_a_node_heard_from_while_the_sweep_runs_is_not_closed(core_server: RunningCore) -> None:
    """Silence is measured again before each close: the sweep waits on the database for every
    node it takes offline, and a frame read meanwhile (a busy core's backlog) shows a node alive."""
    nodes = core_server.core.nodes
    first = await _enrolled(core_server, "first")
    second = await _enrolled(core_server, "second")
    first_st, second_st = _node(core_server, first), _node(core_server, second)
    for st in (first_st, second_st):
        st.last_frame = time.monotonic() - 10  # both silent as the sweep starts
    calls = 0

    def timeout_for(node_interval: float) -> float:
        nonlocal calls
        calls += 1
        if calls == 3:  # the sweep has listed both and is about to close the first
            nodes.seen(second_st)  # ...when the second's frame is read
        return 5.0

    assert await nodes.watchdog(timeout_for) == 1
    await _closed_with(first, p.CloseCode.TIMEOUT)
    assert not first_st.online
    assert second_st.online and second_st.link is not None
    await first.close()
    await second.close()


async def test_a_link_that_ends_after_the_database_closed_goes_offline_without_a_write(
    core_server: RunningCore,
) -> None:
    """Late in a shutdown a socket handler can end after the database is closed: the node still goes
    offline, and the last-seen write is skipped instead of raising "database not open"."""
    agent = await _enrolled(core_server, "late")
    st = _node(core_server, agent)
    link = st.link
    assert link is not None
    await core_server.core.db.close()
    await core_server.core.nodes.detach(st, link, "core shutting down")
    assert not st.online and st.offline_reason == "core shutting down"
    await agent.close()


async def test_a_core_that_fell_behind_does_not_close_the_agents_it_did_not_read(tmp_path: Path) -> None:
    """An overloaded core reads live agents' frames late; its own lateness, which the sweep measures,
    is not their silence (at 5,000 agents it closed 28,000 live sockets in 45 s, whose reconnects
    came on top). An agent truly silent still goes once the core keeps time again."""
    server = await RunningCore(tmp_path / "core", agent_interval=1.0, heartbeat_misses=1).start()
    try:
        assert server.core.heartbeat_timeout(1.0) == 2.0
        nodes = server.core.nodes
        alive = await _enrolled(server, "alive")
        link = _node(server, alive).link
        await alive.send_samples(alive.make(1))
        await nodes.watchdog(server.core.heartbeat_timeout)
        # The core's event loop held up 3 s, as by an overload: no frame read, no sweep run.
        time.sleep(3.0)  # noqa: ASYNC251 (blocking the loop is the point)
        assert await nodes.watchdog(server.core.heartbeat_timeout) == 0
        ack = await alive.send_samples(alive.make(1))  # read now, late
        assert ack.rejected == [] and _node(server, alive).link is link
        # Keeping time again, the core still finds real silence (the grace runs out as it came).
        _node(server, alive).last_frame = time.monotonic() - 10
        await wait_for(lambda: not _node(server, alive).online, timeout=10, what="the silent node's close")
        await _closed_with(alive, p.CloseCode.TIMEOUT)
    finally:
        await server.stop()


async def test_an_agent_whose_frames_the_core_holds_back_is_not_silent(tmp_path: Path) -> None:
    """Its batches wait for a commit (the writer is busy), so the core stops reading its socket: the
    silence is the core's. At 5,000 agents the watchdog closed such agents by the thousand."""
    server = await RunningCore(tmp_path / "core", agent_interval=1.0, ingest_batches_in_flight=1).start()
    try:
        nodes = server.core.nodes
        agent = await _enrolled(server, "held")
        st = _node(server, agent)
        assert agent.ws is not None
        async with server.core.db.transaction():  # the writer, busy: no commit until this ends
            for _ in range(2):  # the first waits for its commit, the second is not read
                await agent.ws.send_bytes(p.encode(p.Samples(samples=agent.make(1))))
            await wait_for(lambda: st.held, what="the core to hold the agent's socket")
            st.last_frame = time.monotonic() - 60  # a minute later, as far as the watchdog can tell
            assert await nodes.watchdog(lambda _interval: 1.0) == 0
            assert st.online
        acks = [await agent.recv_type(p.Ack) for _ in range(2)]
        assert [a.upto_seq for a in acks] == [1, 2]
        assert not st.held and time.monotonic() - st.last_frame < 5  # its silence counts from now
        await agent.close()
    finally:
        await server.stop()
