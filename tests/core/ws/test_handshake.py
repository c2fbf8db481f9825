"""The first frame of a gateway socket (ws.handshake): refused with 4401 when it is wrong or never comes."""

from __future__ import annotations

import time

import aiohttp
import pytest

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from tests.helpers.core import RawAgent


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
