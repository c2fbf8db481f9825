"""The command preview: real agents with different [exec] settings tell the core what they allow in
their hello, and POST /commands/preview and /services/preview say per node what would happen, which
the real run then confirms."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from devkit.cores import RunningCore
from servermanager.agent.main import Agent
from servermanager.agent.settings import ExecSettings
from tests.agent.fakes import AgentRunner, fake_systemctl, fast_settings
from tests.helpers.core import RawAgent
from tests.helpers.signing import Operator
from tests.helpers.wait import wait_for, wait_until


async def start(
    tmp_path: Path, core: RunningCore, runner: AgentRunner, name: str, ex: ExecSettings
) -> tuple[Agent, int]:
    ex.validate()
    agent = Agent(fast_settings(tmp_path / name, core.url, exec=ex), await core.enroll_token())
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.stats.samples_acked >= 1)
    assert agent.node_id is not None
    await wait_for(
        lambda: (n := core.core.nodes.get(agent.node_id or 0)) is not None and n.online, 5, "online"
    )
    status, _ = await core.request(
        "PATCH", f"/api/v1/nodes/{agent.node_id}", await core.admin_token(), json={"name": name}
    )
    assert status == 200
    return agent, agent.node_id


def by_name(preview: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {r["name"]: (r["verdict"], r["reason"]) for r in preview["runs"]}


async def test_the_preview_names_who_runs_and_who_refuses_and_the_run_agrees(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    await start(tmp_path, real_core, runner, "open", ExecSettings(enabled=True, allow=["echo *"]))
    await start(tmp_path, real_core, runner, "off", ExecSettings(enabled=False))
    await start(
        tmp_path, real_core, runner, "strict", ExecSettings(enabled=True, allow=["uptime"], deny=["echo no*"])
    )
    await start(
        tmp_path,
        real_core,
        runner,
        "signed",
        ExecSettings(enabled=True, allow=["echo *"], trusted_keys=[Operator().line]),
    )
    gone, gone_id = await start(tmp_path, real_core, runner, "gone", ExecSettings(enabled=True, allow=["*"]))
    await runner.stop(gone)
    await wait_for(lambda: not real_core.core.nodes.nodes[gone_id].online, 5, "gone offline")
    token = await real_core.user_token("ops", "operator")
    body = {"targets": {"all": True}, "command": ["echo", "hi"], "timeout": 10}

    status, preview = await real_core.request("POST", "/api/v1/commands/preview", token, json=body)
    assert status == 200, preview
    verdicts = by_name(preview)
    assert preview["line"] == "echo hi"
    assert verdicts["open"] == ("run", None)
    assert verdicts["off"] == ("refused", "remote execution is off on this agent ([exec] enabled = false)")
    assert verdicts["strict"] == ("refused", "command not allowed by [exec] allow list")
    assert verdicts["signed"][0] == "refused" and "only signed requests" in (verdicts["signed"][1] or "")
    assert verdicts["gone"][0] == "refused" and (verdicts["gone"][1] or "").startswith(
        "offline (agent stopped"
    )
    assert (preview["run"], preview["queue"], preview["refused"], preview["unknown"]) == (1, 0, 4, 0)

    # A deny pattern, and an offline node that the command would wait for.
    _, denied = await real_core.request(
        "POST",
        "/api/v1/commands/preview",
        token,
        json={**body, "command": "echo nope", "queue_offline": True},
    )
    assert by_name(denied)["strict"] == ("refused", "command matches [exec] deny pattern 'echo no*'")
    assert by_name(denied)["gone"][0] == "queue"

    # Nothing ran, nothing was audited: the preview is a read.
    admin = await real_core.admin_token()
    _, commands = await real_core.request("GET", "/api/v1/commands", admin)
    assert commands["commands"] == []

    # The real run refuses exactly where the preview said it would.
    status, info = await real_core.request("POST", "/api/v1/commands", admin, json=body)
    assert status == 202, info
    _, done = await wait_until(
        lambda: real_core.request("GET", f"/api/v1/commands/{info['id']}", admin),
        lambda r: r[1]["status"] != "running",
        what="the command to finish",
    )
    names = {r["node_id"]: r["name"] for r in preview["runs"]}
    outcome = {names[r["node_id"]]: r["status"] for r in done["runs"]}
    assert outcome == {
        "open": "ok",
        "off": "refused",
        "strict": "refused",
        "signed": "refused",
        "gone": "offline",
    }


async def test_service_preview_knows_the_last_service_list(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_systemctl(tmp_path, monkeypatch)
    _, svc = await start(
        tmp_path,
        real_core,
        runner,
        "svc",
        ExecSettings(enabled=True, allow=["service list", "service * nginx"]),
    )
    await start(tmp_path, real_core, runner, "echo", ExecSettings(enabled=True, allow=["echo *"]))
    admin = await real_core.admin_token()
    restart = {"targets": {"all": True}, "action": "restart", "name": "nosuch"}

    # Before any service list the core cannot know the name is wrong: only the allow lists speak.
    _, before = await real_core.request("POST", "/api/v1/services/preview", admin, json=restart)
    assert by_name(before)["svc"] == ("refused", "command not allowed by [exec] allow list")
    _, nginx = await real_core.request(
        "POST", "/api/v1/services/preview", admin, json={**restart, "name": "nginx"}
    )
    assert by_name(nginx) == {
        "svc": ("run", None),
        "echo": ("refused", "command not allowed by [exec] allow list"),
    }
    assert nginx["line"] == "service restart nginx"

    # The batch itself: one service action on many nodes, like POST /commands.
    status, info = await real_core.request(
        "POST", "/api/v1/services", admin, json={**restart, "name": "nginx", "timeout": 10}
    )
    assert status == 202, info
    _, done = await wait_until(
        lambda: real_core.request("GET", f"/api/v1/commands/{info['id']}", admin),
        lambda r: r[1]["status"] != "running",
        what="the service action to finish",
    )
    assert {r["node_id"]: r["status"] for r in done["runs"]}[svc] == "ok"


async def test_unknown_service_by_the_last_list(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_systemctl(tmp_path, monkeypatch)
    _, svc = await start(tmp_path, real_core, runner, "svc", ExecSettings(enabled=True, allow=["service *"]))
    admin = await real_core.admin_token()
    body = {"targets": {"nodes": [svc]}, "action": "restart", "name": "nosuch"}
    _, before = await real_core.request("POST", "/api/v1/services/preview", admin, json=body)
    assert by_name(before)["svc"] == ("run", None)
    status, _ = await real_core.request("GET", f"/api/v1/nodes/{svc}/services", admin)
    assert status == 200
    _, after = await real_core.request("POST", "/api/v1/services/preview", admin, json=body)
    assert by_name(after)["svc"] == (
        "refused",
        "service unknown: 'nosuch' is not in the node's last service list",
    )


async def test_preview_doors(tmp_path: Path, real_core: RunningCore, runner: AgentRunner) -> None:
    _, nid = await start(tmp_path, real_core, runner, "open", ExecSettings(enabled=True, allow=["echo *"]))
    viewer = await real_core.user_token("val", "viewer")
    admin = await real_core.admin_token()
    body = {"targets": {"nodes": [nid]}, "command": "echo hi"}
    status, err = await real_core.request("POST", "/api/v1/commands/preview", viewer, json=body)
    assert status == 403 and err["error"]["code"] == "forbidden"
    status, err = await real_core.request(
        "POST", "/api/v1/services/preview", viewer, json={"targets": {"all": True}, "action": "list"}
    )
    assert status == 403
    status, err = await real_core.request(
        "POST", "/api/v1/services/preview", admin, json={"targets": {"all": True}, "action": "start"}
    )
    assert status == 400 and err["error"] == {
        "code": "invalid_body",
        "message": "service start needs the service's name",
    }
    status, err = await real_core.request(
        "POST", "/api/v1/commands/preview", admin, json={**body, "targets": {"tag": "nope"}}
    )
    assert status == 400 and err["error"]["code"] == "invalid_targets"
    status, doc = await real_core.request("GET", "/api/v1/openapi.json", admin)
    assert "/api/v1/commands/preview" in doc["paths"] and "/api/v1/services/preview" in doc["paths"]
    assert "/api/v1/services" in doc["paths"]


async def test_an_agent_that_does_not_say_is_unknown(real_core: RunningCore) -> None:
    """An older agent sends no exec_policy in its hello: the preview cannot judge, and says so."""
    old = RawAgent(real_core, "old")
    await old.hello(token=await real_core.enroll_token())
    try:
        admin = await real_core.admin_token()
        status, preview = await real_core.request(
            "POST",
            "/api/v1/commands/preview",
            admin,
            json={"targets": {"nodes": [old.node_id]}, "command": "uptime"},
        )
        assert status == 200, preview
        [one] = preview["runs"]
        assert one["verdict"] == "unknown" and "older agent" in one["reason"]
        assert (preview["run"], preview["unknown"]) == (0, 1)
    finally:
        await old.close()
