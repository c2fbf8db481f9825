"""The first frame of a gateway socket (ws.handshake): refused with 4401 when it is wrong or never comes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from tests.helpers.core import RawAgent, RawClient
from tests.helpers.wait import wait_until


@pytest.mark.parametrize(
    "first",
    [
        b'{"type":"ping","ts":1}',
        b"not json",
        b'{"type":"hello","protocol":1,"host":{"hostname":"x"}}',
    ],
)
async def test_bad_first_frame_closes_4401(core_server: RunningCore, first: bytes) -> None:
    agent = RawAgent(core_server)
    ws = await agent.connect()
    await ws.send_bytes(first)
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == p.CloseCode.UNAUTHORIZED


async def test_silent_socket_closed_after_hello_timeout(core_server: RunningCore) -> None:
    ws = await RawAgent(core_server).connect()
    started = time.monotonic()
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == p.CloseCode.UNAUTHORIZED
    assert time.monotonic() - started >= core_server.settings.hello_timeout * 0.9


async def test_silent_sockets_past_the_cap_are_shed_with_1013(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = await RunningCore(tmp_path / "c", max_unauthenticated=3).start()
    assert server.http is not None
    silent = []
    try:
        for url in (server.agent_ws, server.client_ws, server.agent_ws):
            silent.append(await server.http.ws_connect(url))
        await wait_until(
            lambda: asyncio.sleep(0, server.core.handshakes.open), lambda n: n == 3, what="3 silent sockets"
        )
        extra = await server.http.ws_connect(server.client_ws)
        msg = await extra.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, p.CloseCode.TRY_AGAIN_LATER)
        assert "shedding new sockets" in caplog.text
        # Authenticated work goes on: REST answers, and once a silent one leaves, a client gets in.
        status, _ = await server.request("GET", "/api/v1/health")
        assert status == 200
        await silent.pop().close()
        await wait_until(
            lambda: asyncio.sleep(0, server.core.handshakes.open), lambda n: n == 2, what="one slot free"
        )
        client = RawClient(server)
        ok = await client.connect(await server.admin_token())
        assert ok.user == "admin"
        status, text = await server.request("GET", "/metrics", await server.admin_token())
        assert b"sm_core_sockets_shed_total 1" in text
    finally:
        for ws in silent:
            await ws.close()
        await server.stop()
