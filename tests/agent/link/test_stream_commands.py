"""Command frames over the stream: dispatched to the runner, its outbox drained between batches."""

from __future__ import annotations

import asyncio
import itertools
import signal
from pathlib import Path
from typing import Any

import pytest

from servermanager.agent.link.connection import ConnState
from servermanager.agent.main import Agent
from servermanager.agent.settings import ExecSettings
from servermanager.common.protocol import Command, ServiceInfo, ServiceRequest
from tests.agent.fakes import AgentRunner, FakeCore, fake_systemctl, fast_settings, pid_gone
from tests.helpers.wait import wait_for

TOKEN = "enroll-token-abcdef123456"


async def streaming_agent(
    tmp_path: Path,
    fake_core: FakeCore,
    runner: AgentRunner,
    exec_settings: ExecSettings | None = None,
    **kw: Any,
) -> Agent:
    settings = fast_settings(
        tmp_path / "state", fake_core.url, exec=exec_settings or ExecSettings(enabled=True, allow=["*"]), **kw
    )
    agent = Agent(settings, enroll_token=TOKEN)
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.STREAMING)
        await fake_core.wait_until(lambda: fake_core.ws is not None)
    return agent


def command_frames(fake_core: FakeCore, cid: str) -> list[str]:
    return [kind for _, kind, c in fake_core.frame_log if c == cid]


async def test_echo_round_trip(tmp_path: Path, fake_core: FakeCore, runner: AgentRunner) -> None:
    await streaming_agent(tmp_path, fake_core, runner)
    r = await fake_core.run(Command("c1", 10, argv=["echo", "hello"]))
    assert (r.status, r.exit_code, r.stdout_bytes) == ("ok", 0, 6)
    assert fake_core.output("c1") == "hello\n"
    r = await fake_core.run(Command("c2", 10, shell="echo out; echo err >&2"))
    assert r.status == "ok"
    assert fake_core.output("c2", "stdout") == "out\n" and fake_core.output("c2", "stderr") == "err\n"
    assert command_frames(fake_core, "c2")[-1] == "result"
    assert all(o.node_id == 0 for o in fake_core.outputs)  # the core fills it in for clients


async def test_disabled_agent_refuses_over_the_wire(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    await streaming_agent(tmp_path, fake_core, runner, ExecSettings())
    r = await fake_core.run(Command("c1", 10, shell="reboot"))
    assert r.status == "refused"
    assert r.message == "remote execution is disabled in this agent's config ([exec] enabled = false)"
    assert command_frames(fake_core, "c1") == ["result"]


async def test_not_allowed_and_denied_over_the_wire(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    await streaming_agent(
        tmp_path, fake_core, runner, ExecSettings(enabled=True, allow=["ls *"], deny=["ls /root*"])
    )
    r = await fake_core.run(Command("c1", 10, argv=["uptime"]))
    assert (r.status, r.message) == ("refused", "command not allowed by [exec] allow list")
    r = await fake_core.run(Command("c2", 10, argv=["ls", "/root"]))
    assert (r.status, r.message) == ("refused", "command matches [exec] deny pattern 'ls /root*'")


async def test_samples_keep_flowing_while_a_command_prints_10mb(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    agent = await streaming_agent(
        tmp_path, fake_core, runner, ExecSettings(enabled=True, allow=["*"], max_output=4 << 20)
    )
    # 10 MB in ten bursts over about a second, so the output is on the wire while samples are due.
    script = "for i in 1 2 3 4 5 6 7 8 9 10; do head -c 1000000 /dev/zero | tr '\\0' x; sleep 0.1; done"
    acked_before = agent.stats.samples_acked
    r = await fake_core.run(Command("big", 30, shell=script), timeout=20)
    assert r.status == "ok"
    assert (r.stdout_bytes, r.truncated) == (10_000_000, True)
    assert fake_core.output("big") == "x" * (4 << 20)
    # Samples went on at their 50 ms cadence meanwhile, and some crossed the socket between
    # the command's output chunks rather than waiting for them.
    assert agent.stats.samples_acked - acked_before >= 5
    outputs = [t for t, kind, cid in fake_core.frame_log if kind == "output" and cid == "big"]
    batches = [t for t, kind, _ in fake_core.frame_log if kind == "samples"]
    assert any(outputs[0] < t < outputs[-1] for t in batches)
    window = [t for t in batches if outputs[0] <= t <= outputs[-1] + 0.5]
    gaps = [b - a for a, b in itertools.pairwise(window)]
    assert max(gaps, default=0) < 0.5, gaps


async def test_cancel_over_the_wire(tmp_path: Path, fake_core: FakeCore, runner: AgentRunner) -> None:
    agent = await streaming_agent(tmp_path, fake_core, runner)
    await fake_core.send(Command("c1", 60, shell="sleep 30 & echo $!; sleep 30"))
    await fake_core.wait_until(lambda: fake_core.output("c1").endswith("\n"))
    assert agent.commands.running == ["c1"]
    child = int(fake_core.output("c1"))
    await fake_core.cancel("c1")
    await fake_core.wait_until(lambda: "c1" in fake_core.results)
    r = fake_core.results["c1"]
    assert (r.status, r.signal) == ("cancelled", signal.SIGTERM)
    await wait_for(lambda: pid_gone(child), 5, "the background child to die")


async def test_result_is_held_across_a_disconnect(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    agent = await streaming_agent(tmp_path, fake_core, runner)
    gate = tmp_path / "gate"
    script = f"echo start; while [ ! -e {gate} ]; do sleep 0.02; done; echo end"
    await fake_core.send(Command("c1", 60, shell=script))
    await fake_core.wait_until(lambda: fake_core.output("c1") == "start\n")
    # The core goes away and refuses reconnects for now; the command goes on regardless.
    fake_core.refuse_code = 1011
    assert fake_core.ws is not None
    await fake_core.ws.close(1011, "core crashed")
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.BACKOFF)
    await asyncio.to_thread(gate.touch)
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.commands.finished == 1)
    assert agent.commands.outbox.held_results == 1
    assert agent.commands.outbox.outputs_dropped >= 1  # "end" was printed while disconnected
    fake_core.refuse_code = None
    await fake_core.wait_until(lambda: "c1" in fake_core.results)
    r = fake_core.results["c1"]
    assert (r.status, r.exit_code, r.stdout_bytes) == ("ok", 0, 10)
    assert r.message == "4 bytes of output were produced while the agent was disconnected and not delivered"
    assert fake_core.output("c1") == "start\n"


async def test_stopping_the_agent_kills_running_commands(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    agent = await streaming_agent(tmp_path, fake_core, runner)
    await fake_core.send(Command("c1", 60, shell="sleep 30 & echo $!; sleep 30"))
    await fake_core.wait_until(lambda: fake_core.output("c1").endswith("\n"))
    child = int(fake_core.output("c1"))
    await runner.stop(agent)
    assert agent.commands.running == []
    await wait_for(lambda: pid_gone(child), 5, "the background child to die")


async def test_service_list_and_refusal_over_the_wire(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    systemctl = fake_systemctl(tmp_path, monkeypatch)
    await streaming_agent(
        tmp_path,
        fake_core,
        runner,
        ExecSettings(enabled=True, allow=["service list", "service restart nginx"]),
    )
    r = await fake_core.run(Command("s1", 10, service=ServiceRequest("list")))
    assert r.status == "ok"
    assert r.services == [ServiceInfo("nginx", "active", "enabled", "nginx web server")]
    r = await fake_core.run(Command("s2", 10, service=ServiceRequest("stop", "nginx")))
    assert (r.status, r.message) == ("refused", "command not allowed by [exec] allow list")
    r = await fake_core.run(Command("s3", 10, service=ServiceRequest("restart", "nginx")))
    assert r.status == "ok"
    assert [c for c in systemctl.calls if "list-units" not in c and "list-unit-files" not in c] == [
        ["--no-ask-password", "restart", "nginx.service"]
    ]
