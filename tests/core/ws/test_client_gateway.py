"""The /ws/client gateway: token auth, snapshot, then live status and sample events."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from tests.helpers.core import RawAgent, RawClient


async def test_snapshot_then_live_samples(core_server: RunningCore) -> None:
    agent = RawAgent(core_server, "live-1")
    welcome = await agent.hello(token=await core_server.enroll_token())
    await agent.send_samples(agent.make(1, cpu=5.0))

    client = RawClient(core_server)
    ok = await client.connect(await core_server.admin_token())
    assert (ok.user, ok.role, ok.protocol) == ("admin", "admin", p.PROTOCOL_VERSION)
    snap = await client.subscribe()
    [node] = snap.nodes
    assert (node.id, node.name, node.online) == (welcome.node_id, "live-1", True)
    assert node.latest is not None and node.latest.metrics.cpu_pct == 5.0
    assert node.host is not None and node.host.hostname == "live-1"

    await agent.send_samples(agent.make(1, cpu=77.0))
    event = await client.recv_type(p.SampleEvent)
    assert event.node_id == welcome.node_id and event.sample.metrics.cpu_pct == 77.0

    await agent.close()
    status = await client.recv_type(p.NodeStatus)
    assert (status.node_id, status.online) == (welcome.node_id, False)


async def test_subscription_filters_nodes(core_server: RunningCore) -> None:
    a, b = RawAgent(core_server, "a"), RawAgent(core_server, "b")
    wa = await a.hello(token=await core_server.enroll_token())
    await b.hello(token=await core_server.enroll_token())
    client = RawClient(core_server)
    await client.connect(await core_server.admin_token())
    snap = await client.subscribe(nodes=[wa.node_id])
    assert [n.id for n in snap.nodes] == [wa.node_id]
    await b.send_samples(b.make(1, cpu=1.0))
    await a.send_samples(a.make(1, cpu=2.0))
    event = await client.recv_type(p.SampleEvent)
    assert event.node_id == wa.node_id  # b's sample, sent first, never arrived


async def test_backfill_is_not_pushed_as_live(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    await agent.send_samples(agent.make(1, cpu=50.0))
    client = RawClient(core_server)
    await client.connect(await core_server.admin_token())
    await client.subscribe()
    import time

    old = agent.make(3, ts=time.time() - 600, cpu=1.0)
    await agent.send_samples(old)
    await agent.send_samples(agent.make(1, cpu=99.0))
    event = await client.recv_type(p.SampleEvent)
    assert event.sample.metrics.cpu_pct == 99.0


@pytest.mark.parametrize("frame", [b'{"type":"subscribe"}', b'{"type":"auth","token":"sma_nope"}', b"[]"])
async def test_bad_auth_closes_4401(core_server: RunningCore, frame: bytes) -> None:
    assert core_server.http is not None
    ws = await core_server.http.ws_connect(core_server.client_ws)
    await ws.send_bytes(frame)
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == p.CloseCode.UNAUTHORIZED


async def test_bad_frames_after_auth_get_errors(core_server: RunningCore) -> None:
    client = RawClient(core_server)
    await client.connect(await core_server.admin_token())
    assert client.ws is not None
    await client.ws.send_str('{"type":"subscribe","nodes":"all"}')
    err = await client.recv_type(p.Error)
    assert err.code == "invalid_frame" and "$.nodes" in err.message
    await client.ws.send_str('{"type":"launch"}')
    err = await client.recv_type(p.Error)
    assert err.code == "unknown_type"
    snap = await client.subscribe()
    assert snap.nodes == []


async def test_shutdown_closes_clients_with_going_away(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "c").start()
    client = RawClient(server)
    await client.connect(await server.admin_token())
    await client.subscribe()
    assert client.ws is not None
    # Keep the client session open while the server shuts down.
    server.http, http = None, server.http
    stopping = asyncio.create_task(server.stop())
    msg = await client.ws.receive(timeout=5)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, p.CloseCode.GOING_AWAY)
    await stopping
    assert http is not None
    await http.close()
