"""Remote operations end to end: the real agent and the real in-process core, driven over REST."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from devkit.cores import RunningCore
from servermanager.agent.main import Agent
from servermanager.agent.settings import ExecSettings
from servermanager.common import protocol as p
from tests.agent.exec.test_leftovers import alive_with
from tests.agent.fakes import AgentRunner, fake_systemctl, fast_settings, pid_gone
from tests.helpers.core import RawClient
from tests.helpers.wait import wait_for, wait_until


async def enrolled(
    tmp_path: Path, core: RunningCore, runner: AgentRunner, exec_settings: ExecSettings
) -> int:
    agent = Agent(fast_settings(tmp_path / "agent", core.url, exec=exec_settings), await core.enroll_token())
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.stats.samples_acked >= 1)
    assert agent.node_id is not None
    await wait_for(
        lambda: (n := core.core.nodes.get(agent.node_id or 0)) is not None and n.online, 5, "online"
    )
    return agent.node_id


async def run(core: RunningCore, node_id: int, command: str | list[str], **kw: Any) -> dict[str, Any]:
    token = await core.admin_token()
    status, body = await core.request(
        "POST", "/api/v1/commands", token, json={"targets": {"nodes": [node_id]}, "command": command, **kw}
    )
    assert status == 202, body
    return body


async def finished(core: RunningCore, cid: str) -> dict[str, Any]:
    token = await core.admin_token()
    _, info = await wait_until(
        lambda: core.request("GET", f"/api/v1/commands/{cid}", token),
        lambda r: r[1]["status"] != "running",
        what=f"command {cid} to finish",
    )
    run: dict[str, Any] = info["runs"][0]
    return run


async def test_commands_run_through_the_core(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    node = await enrolled(
        tmp_path, real_core, runner, ExecSettings(enabled=True, allow=["echo *", "sh -c *"])
    )
    client = RawClient(real_core)
    await client.connect(await real_core.admin_token())
    await client.subscribe()
    try:
        cmd = await run(real_core, node, ["echo", "hello"])
        relayed = await client.recv_type(p.CommandOutput, where=lambda f: f.command_id == cmd["id"])
        assert (relayed.node_id, relayed.data) == (node, "hello\n")
        r = await finished(real_core, cmd["id"])
        assert (r["status"], r["exit_code"], r["stdout"], r["stdout_bytes"]) == ("ok", 0, "hello\n", 6)
        cmd = await run(real_core, node, ["sh", "-c", "echo out; echo err >&2; exit 4"])
        r = await finished(real_core, cmd["id"])
        assert (r["status"], r["exit_code"], r["stdout"], r["stderr"]) == ("failed", 4, "out\n", "err\n")
        cmd = await run(real_core, node, "uptime")  # shell mode, not in the allow list
        r = await finished(real_core, cmd["id"])
        assert (r["status"], r["message"]) == ("refused", "command not allowed by [exec] allow list")
    finally:
        await client.close()


async def test_disabled_agent_refusal_reaches_the_operator(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    node = await enrolled(tmp_path, real_core, runner, ExecSettings())
    cmd = await run(real_core, node, "echo hi")
    r = await finished(real_core, cmd["id"])
    assert r["status"] == "refused"
    assert r["message"] == "remote execution is disabled in this agent's config ([exec] enabled = false)"


async def test_cancel_and_timeout_through_the_core(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    node = await enrolled(tmp_path, real_core, runner, ExecSettings(enabled=True, allow=["*"]))
    token = await real_core.admin_token()
    cmd = await run(real_core, node, "sleep 30 & echo $!; sleep 30")
    info = await wait_until(
        lambda: real_core.request("GET", f"/api/v1/commands/{cmd['id']}", token),
        lambda r: r[1]["runs"][0]["stdout"].endswith("\n"),
        what="the command to print its child's pid",
    )
    child = int(info[1]["runs"][0]["stdout"])
    status, _ = await real_core.request("POST", f"/api/v1/commands/{cmd['id']}/cancel", token)
    assert status == 200
    r = await finished(real_core, cmd["id"])
    assert (r["status"], r["signal"]) == ("cancelled", signal.SIGTERM)
    await wait_for(lambda: pid_gone(child), 5, "the background child to die")

    cmd = await run(real_core, node, "sleep 30", timeout=0.5)
    r = await finished(real_core, cmd["id"])
    assert (r["status"], r["signal"], r["message"]) == ("timeout", signal.SIGTERM, "timed out after 0.5s")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a command's tree is tracked on Linux only")
async def test_what_a_command_leaves_running_is_stopped_and_the_operator_told(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    node = await enrolled(tmp_path, real_core, runner, ExecSettings(enabled=True, allow=["*"]))
    tag = f"300.{secrets.randbelow(10**9):09d}"
    try:
        cmd = await run(real_core, node, f"echo started; setsid sleep {tag} >/dev/null 2>&1 &")
        r = await finished(real_core, cmd["id"])
        assert alive_with(tag) == []
        assert (r["status"], r["exit_code"], r["stdout"]) == ("ok", 0, "started\n")
        assert re.fullmatch(r"1 leftover process \(\w+\) was stopped after the command ended", r["message"])
    finally:
        for p in alive_with(tag):
            with contextlib.suppress(psutil.Error):
                p.kill()


async def test_services_through_the_core(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    systemctl = fake_systemctl(tmp_path, monkeypatch)
    node = await enrolled(
        tmp_path,
        real_core,
        runner,
        ExecSettings(enabled=True, allow=["service list", "service restart nginx"]),
    )
    token = await real_core.admin_token()
    status, body = await real_core.request("GET", f"/api/v1/nodes/{node}/services", token)
    assert status == 200, body
    assert body["services"] == [
        {"name": "nginx", "active": "active", "enabled": "enabled", "description": "nginx web server"}
    ]
    status, body = await real_core.request("POST", f"/api/v1/nodes/{node}/services/nginx/restart", token)
    assert status == 200, body
    assert body["runs"][0]["status"] == "ok"
    status, body = await real_core.request("POST", f"/api/v1/nodes/{node}/services/nginx/stop", token)
    assert body["runs"][0]["status"] == "refused"
    assert body["runs"][0]["message"] == "command not allowed by [exec] allow list"
    actions = [c for c in systemctl.calls if c[0] not in ("list-units", "list-unit-files")]
    assert actions == [["--no-ask-password", "restart", "nginx.service"]]
