"""Command dispatch in the core: targets, relay of output to clients, results, queueing, cancel, audit, limits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from tests.helpers.core import RawAgent, RawClient
from tests.helpers.wait import wait_until


async def _agents(server: RunningCore, names: list[str]) -> list[RawAgent]:
    out = []
    for name in names:
        a = RawAgent(server, name)
        await a.hello(token=await server.enroll_token())
        out.append(a)
    return out


async def _answer(agent: RawAgent, stdout: str = "", stderr: str = "", code: int = 0) -> p.Command:
    """Play the agent's part for one command: output chunks, then the result."""
    cmd: p.Command = await agent.recv_type(p.Command)
    assert agent.ws is not None
    if stdout:
        await agent.ws.send_bytes(
            p.encode(p.CommandOutput(command_id=cmd.command_id, stream="stdout", data=stdout))
        )
    if stderr:
        await agent.ws.send_bytes(
            p.encode(p.CommandOutput(command_id=cmd.command_id, stream="stderr", data=stderr))
        )
    status = "ok" if code == 0 else "failed"
    await agent.ws.send_bytes(
        p.encode(
            p.CommandResult(
                command_id=cmd.command_id,
                status=status,
                exit_code=code,
                duration=0.01,
                stdout_bytes=len(stdout),
                stderr_bytes=len(stderr),
            )
        )
    )
    return cmd


async def _wait_done(server: RunningCore, token: str, cid: str) -> dict[str, Any]:
    _, info = await wait_until(
        lambda: server.request("GET", f"/api/v1/commands/{cid}", token),
        lambda r: r[1]["status"] != "running",
        what="command to finish",
    )
    return info  # type: ignore[no-any-return]


async def test_fan_out_by_group_with_output_and_audit(core_server: RunningCore) -> None:
    web1, web2, db = await _agents(core_server, ["web1", "web2", "db"])
    admin = await core_server.admin_token()
    for a in (web1, web2):
        status, _ = await core_server.request(
            "PATCH", f"/api/v1/nodes/{a.node_id}", admin, json={"group": "web"}
        )
        assert status == 200
    operator = await core_server.user_token("ops", "operator")
    client = RawClient(core_server)
    await client.connect(operator)
    await client.subscribe()

    status, info = await core_server.request(
        "POST",
        "/api/v1/commands",
        operator,
        json={"targets": {"group": "web"}, "command": ["uptime"], "timeout": 5},
    )
    assert status == 202, info
    assert sorted(r["node_id"] for r in info["runs"]) == sorted([web1.node_id, web2.node_id])
    cmd1, _ = await asyncio.gather(_answer(web1, stdout="up 1 day\n"), _answer(web2, stderr="oops\n", code=3))
    assert cmd1.argv == ["uptime"] and cmd1.shell is None and cmd1.timeout == 5
    out = await client.recv_type(p.CommandOutput)
    assert out.node_id in (web1.node_id, web2.node_id)
    await client.recv_type(p.CommandResult)

    info = await _wait_done(core_server, operator, info["id"])
    runs = {r["node_id"]: r for r in info["runs"]}
    assert (runs[web1.node_id]["status"], runs[web1.node_id]["stdout"], runs[web1.node_id]["exit_code"]) == (
        "ok",
        "up 1 day\n",
        0,
    )
    assert (runs[web2.node_id]["status"], runs[web2.node_id]["stderr"], runs[web2.node_id]["exit_code"]) == (
        "failed",
        "oops\n",
        3,
    )
    # The db node was never asked.
    assert db.ws is not None
    await db.ws.send_bytes(p.encode(p.Ping(ts=1.0)))
    assert isinstance(await db.recv_type(p.Pong), p.Pong)

    _, audit = await core_server.request("GET", "/api/v1/audit?action=command.run", operator)
    [row] = audit["entries"]
    assert (row["actor"], row["target"], row["detail"]["command"]) == ("ops", "group:web", "uptime")
    _, audit = await core_server.request(
        "GET", f"/api/v1/audit?node={web2.node_id}&action=command.result", operator
    )
    [row] = audit["entries"]
    assert row["result"] == "failed (exit 3)"


async def test_shell_string_env_and_cwd_reach_the_agent(core_server: RunningCore) -> None:
    [agent] = await _agents(core_server, ["n"])
    token = await core_server.admin_token()
    status, info = await core_server.request(
        "POST",
        "/api/v1/commands",
        token,
        json={
            "targets": {"nodes": [agent.node_id]},
            "command": "echo $X",
            "env": {"X": "secret-value"},
            "cwd": "/tmp",
        },
    )
    assert status == 202
    cmd = await _answer(agent, stdout="secret-value\n")
    assert (cmd.shell, cmd.argv, cmd.env, cmd.cwd) == ("echo $X", None, {"X": "secret-value"}, "/tmp")
    await _wait_done(core_server, token, info["id"])
    _, audit = await core_server.request("GET", "/api/v1/audit?action=command.run", token)
    # The audit names the variables, never their values.
    assert audit["entries"][0]["detail"]["env_keys"] == ["X"]
    assert "secret-value" not in str(audit)


async def test_offline_targets_reported_or_queued(core_server: RunningCore) -> None:
    [agent] = await _agents(core_server, ["sleepy"])
    token = await core_server.admin_token()
    await agent.close()
    await wait_until(
        lambda: core_server.request("GET", f"/api/v1/nodes/{agent.node_id}", token),
        lambda r: r[1]["online"] is False,
    )
    _, info = await core_server.request(
        "POST", "/api/v1/commands", token, json={"targets": {"all": True}, "command": "true"}
    )
    assert [r["status"] for r in info["runs"]] == ["offline"]
    assert info["status"] == "done"

    _, queued = await core_server.request(
        "POST",
        "/api/v1/commands",
        token,
        json={"targets": {"all": True}, "command": "true", "queue_offline": True},
    )
    assert [r["status"] for r in queued["runs"]] == ["queued"]
    back = RawAgent(core_server, "sleepy")
    await back.hello(credential=agent.credential)
    cmd = await _answer(back)
    assert cmd.command_id == queued["id"]
    info = await _wait_done(core_server, token, queued["id"])
    assert info["runs"][0]["status"] == "ok"


async def test_queued_command_expires(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "c").start()
    try:
        [agent] = await _agents(server, ["gone"])
        await agent.close()
        token = await server.admin_token()
        await wait_until(
            lambda: server.request("GET", "/api/v1/nodes/1", token), lambda r: not r[1]["online"]
        )
        _, info = await server.request(
            "POST",
            "/api/v1/commands",
            token,
            json={"targets": {"nodes": [1]}, "command": "true", "queue_offline": True, "expires_in": 0.2},
        )
        info = await _wait_done(server, token, info["id"])
        assert info["runs"][0]["status"] == "expired"
    finally:
        await server.stop()


async def test_cancel_reaches_the_agent(core_server: RunningCore) -> None:
    [agent] = await _agents(core_server, ["n"])
    token = await core_server.admin_token()
    _, info = await core_server.request(
        "POST",
        "/api/v1/commands",
        token,
        json={"targets": {"all": True}, "command": "sleep 100", "timeout": 200},
    )
    cmd = await agent.recv_type(p.Command)
    status, _ = await core_server.request("POST", f"/api/v1/commands/{info['id']}/cancel", token)
    assert status == 200
    cancel = await agent.recv_type(p.CommandCancel)
    assert cancel.command_id == cmd.command_id
    assert agent.ws is not None
    await agent.ws.send_bytes(
        p.encode(p.CommandResult(command_id=cmd.command_id, status="cancelled", signal=15))
    )
    info = await _wait_done(core_server, token, info["id"])
    assert info["status"] == "cancelled"
    assert info["runs"][0]["signal"] == 15
    _, audit = await core_server.request("GET", "/api/v1/audit?action=command.cancel", token)
    assert len(audit["entries"]) == 1


async def test_validation_roles_and_rate_limit(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "c", commands_per_minute=2).start()
    try:
        await _agents(server, ["n"])
        viewer = await server.user_token("viewer", "viewer")
        status, _ = await server.request(
            "POST", "/api/v1/commands", viewer, json={"targets": {"all": True}, "command": "id"}
        )
        assert status == 403
        op = await server.user_token("op", "operator")
        for body, field in (
            ({"targets": {"all": True}, "command": ""}, "$.command"),
            ({"targets": {"all": True}, "command": []}, "$.command"),
            ({"targets": {"all": True}, "command": "id", "timeout": -1}, "$.timeout"),
            ({"targets": {"all": True}, "command": "id", "env": {"BAD-NAME": "x"}}, "$.env"),
            ({"targets": {"everything": True}, "command": "id"}, "$.targets"),
        ):
            status, err = await server.request("POST", "/api/v1/commands", op, json=body)
            assert status == 400, body
            assert field in err["error"]["message"], err
        status, err = await server.request(
            "POST", "/api/v1/commands", op, json={"targets": {"nodes": [99]}, "command": "id"}
        )
        assert (status, err["error"]["code"]) == (400, "invalid_targets")
        status, err = await server.request(
            "POST", "/api/v1/commands", op, json={"targets": {"tag": "none"}, "command": "id"}
        )
        assert status == 400 and "match no node" in err["error"]["message"]
        for _ in range(2):
            status, _ = await server.request(
                "POST", "/api/v1/commands", op, json={"targets": {"all": True}, "command": "id"}
            )
            assert status == 202
        status, err = await server.request(
            "POST", "/api/v1/commands", op, json={"targets": {"all": True}, "command": "id"}
        )
        assert status == 429 and err["error"]["code"] == "rate_limited"
    finally:
        await server.stop()


async def test_service_list_and_action(core_server: RunningCore) -> None:
    [agent] = await _agents(core_server, ["svc"])
    token = await core_server.admin_token()

    async def answer_list() -> None:
        cmd: p.Command = await agent.recv_type(p.Command)
        assert cmd.service == p.ServiceRequest(action="list")
        assert agent.ws is not None
        services = [p.ServiceInfo(name="nginx.service", active="active", enabled="enabled")]
        await agent.ws.send_bytes(
            p.encode(p.CommandResult(command_id=cmd.command_id, status="ok", services=services))
        )

    (status, body), _ = await asyncio.gather(
        core_server.request("GET", f"/api/v1/nodes/{agent.node_id}/services", token), answer_list()
    )
    assert status == 200, body
    assert body["services"] == [
        {"name": "nginx.service", "active": "active", "enabled": "enabled", "description": ""}
    ]

    async def refuse() -> None:
        cmd: p.Command = await agent.recv_type(p.Command)
        assert cmd.service == p.ServiceRequest(action="restart", name="nginx.service")
        assert agent.ws is not None
        await agent.ws.send_bytes(
            p.encode(
                p.CommandResult(
                    command_id=cmd.command_id, status="refused", message="not allowed by [exec] allow"
                )
            )
        )

    (status, body), _ = await asyncio.gather(
        core_server.request("POST", f"/api/v1/nodes/{agent.node_id}/services/nginx.service/restart", token),
        refuse(),
    )
    assert status == 200
    assert body["runs"][0]["status"] == "refused"
    assert "allow" in body["runs"][0]["message"]
    status, _ = await core_server.request(
        "POST", f"/api/v1/nodes/{agent.node_id}/services/nginx;rm/restart", token
    )
    assert status == 400
    status, _ = await core_server.request(
        "POST", f"/api/v1/nodes/{agent.node_id}/services/nginx/explode", token
    )
    assert status == 400
    _, audit = await core_server.request("GET", "/api/v1/audit?action=service.restart", token)
    assert len(audit["entries"]) == 1
