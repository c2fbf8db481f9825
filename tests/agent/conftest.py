"""Fixtures for agent tests: a fake core on a loopback port and agents that always get stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import serve

from tests.agent.fakes import AgentRunner, FakeCore


@pytest.fixture
async def fake_core() -> AsyncIterator[FakeCore]:
    core = FakeCore()
    async with serve(core.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        core.url = f"ws://127.0.0.1:{port}"
        yield core


@pytest.fixture
async def runner() -> AsyncIterator[AgentRunner]:
    r = AgentRunner()
    try:
        yield r
    finally:
        await r.close()
