"""The socket wrapper: invalid frames and the core's error reports are counted, never fatal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from servermanager.agent.link.connection import ConnState
from servermanager.agent.main import Agent
from servermanager.common.protocol import Error, encode_str
from tests.agent.fakes import AgentRunner, FakeCore, fast_settings

TOKEN = "enroll-token-abcdef123456"


async def test_invalid_frames_and_errors_do_not_break_streaming(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner, caplog: pytest.LogCaptureFixture
) -> None:
    fake_core.after_welcome = [
        "this is not json",
        json.dumps({"type": "launch_missiles", "now": True}),
        json.dumps({"type": "ack", "upto_seq": "not-a-number"}),
        encode_str(Error(code="slow_down", message="too many samples")),
    ]
    agent = Agent(fast_settings(tmp_path / "state", fake_core.url), enroll_token=TOKEN)
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.stats.samples_acked >= 2)
    assert agent.stats.invalid_frames == 3
    assert agent.stats.core_errors == 1
    assert agent.state is ConnState.STREAMING
    assert fake_core.connections == 1
    assert "slow_down" in caplog.text and "too many samples" in caplog.text
