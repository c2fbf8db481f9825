"""Signed commands end to end: a real core relaying, real agents with trusted keys, real signatures.

What an operator's client does (resolve, sign per node, POST) and what a stolen core can do (send
unsigned, replay, retarget): only the first runs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from devkit.cores import RunningCore
from servermanager.agent.exec.signing import UNSIGNED
from servermanager.agent.main import Agent
from servermanager.agent.settings import ExecSettings
from servermanager.common.protocol import Command, ServiceRequest
from servermanager.common.signing import new_command_id
from servermanager.core.commands import Run
from tests.agent.fakes import AgentRunner, fake_systemctl, fast_settings
from tests.helpers.signing import Operator
from tests.helpers.wait import wait_for, wait_until

REPLAYED = "replayed nonce: this agent has already received this signed request"


async def enrolled(
    tmp_path: Path, core: RunningCore, runner: AgentRunner, ex: ExecSettings, name: str = "a"
) -> int:
    ex.validate()
    agent = Agent(fast_settings(tmp_path / name, core.url, exec=ex), await core.enroll_token())
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.stats.samples_acked >= 1)
    assert agent.node_id is not None
    await wait_for(
        lambda: (n := core.core.nodes.get(agent.node_id or 0)) is not None and n.online, 5, "online"
    )
    return agent.node_id


def body_for(op: Operator | None, nodes: list[int], argv: list[str], **kw: Any) -> dict[str, Any]:
    """The POST /commands body a client sends: the id it picked, and one signature per node."""
    cid = new_command_id()
    body: dict[str, Any] = {"id": cid, "targets": {"nodes": nodes}, "command": argv, **kw}
    if op is not None:
        frame = Command(command_id=cid, timeout=kw.get("timeout", 60.0), argv=argv, env=kw.get("env", {}))
        body["signatures"] = {str(n): msgspec.to_builtins(op.signature(frame, n)) for n in nodes}
    return body


async def start(core: RunningCore, body: dict[str, Any]) -> dict[str, Any]:
    status, info = await core.request("POST", "/api/v1/commands", await core.admin_token(), json=body)
    assert status == 202, info
    return info


async def finished(core: RunningCore, cid: str) -> dict[int, dict[str, Any]]:
    token = await core.admin_token()
    _, info = await wait_until(
        lambda: core.request("GET", f"/api/v1/commands/{cid}", token),
        lambda r: r[1]["status"] != "running",
        what=f"command {cid} to finish",
    )
    return {r["node_id"]: r for r in info["runs"]}


async def audit(core: RunningCore, action: str, node: int | None = None) -> list[dict[str, Any]]:
    query = f"action={action}" + (f"&node={node}" if node is not None else "")
    status, body = await core.request("GET", f"/api/v1/audit?{query}", await core.admin_token())
    assert status == 200, body
    entries: list[dict[str, Any]] = body["entries"]
    return entries


async def test_signed_commands_run_and_everything_else_is_refused_and_audited(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    alice, mallory = Operator("alice"), Operator("mallory")
    ex = ExecSettings(enabled=True, allow=["*"], trusted_keys=[alice.line])
    web, db = [await enrolled(tmp_path, real_core, runner, ex, n) for n in ("web", "db")]
    marker = tmp_path / "ran"

    # Signed by alice for both nodes: both run, and the audit says who signed.
    info = await start(real_core, body_for(alice, [web, db], ["echo", "hello"]))
    runs = await finished(real_core, info["id"])
    assert [(r["status"], r["stdout"], r["signed_by"]) for r in runs.values()] == [
        ("ok", "hello\n", alice.key_id)
    ] * 2
    # Read back from the database (as after a core restart), the signatures are still on record.
    del real_core.core.commands.live[info["id"]]
    _, stored = await real_core.request(
        "GET", f"/api/v1/commands/{info['id']}", await real_core.admin_token()
    )
    assert [r["signed_by"] for r in stored["runs"]] == [alice.key_id] * 2
    [dispatched] = await audit(real_core, "command.run")
    assert dispatched["detail"]["signed_by"] == [alice.key_id]
    result_rows = await audit(real_core, "command.result", web)
    assert result_rows[0]["detail"]["signed_by"] == alice.key_id

    # What an admin password (or a stolen core) can send: unsigned, or signed by someone untrusted.
    for op, message in ((None, UNSIGNED), (mallory, f"{mallory.key_id} is not one of this agent's")):
        info = await start(real_core, body_for(op, [web], ["touch", str(marker)]))
        run = (await finished(real_core, info["id"]))[web]
        assert run["status"] == "refused" and message in run["message"], run
        row = (await audit(real_core, "command.result", web))[0]
        assert (row["result"], row["detail"]["command_id"]) == ("refused", info["id"])
        assert message in row["detail"]["message"]
    # Signed, then changed by the relay: the argv, the env.
    body = body_for(alice, [web], ["echo", "hi"])
    body["command"] = ["touch", str(marker)]
    run = (await finished(real_core, (await start(real_core, body))["id"]))[web]
    assert run["status"] == "refused" and run["message"].startswith("signature does not match the request")
    body = body_for(alice, [web], ["echo", "hi"])
    body["env"] = {"GREETING": "x"}
    run = (await finished(real_core, (await start(real_core, body))["id"]))[web]
    assert run["message"].startswith("signature does not match the request")
    # Expired.
    cid = new_command_id()
    frame = Command(command_id=cid, timeout=60.0, argv=["touch", str(marker)])
    sig = msgspec.to_builtins(alice.signature(frame, web, expires_at=1_000_000_000))
    body = {"id": cid, "targets": {"nodes": [web]}, "command": frame.argv, "signatures": {str(web): sig}}
    run = (await finished(real_core, (await start(real_core, body))["id"]))[web]
    assert run["status"] == "refused" and run["message"].startswith("signature expired at 2001-09-09")
    assert not marker.exists(), "a refused command ran"


async def test_the_core_checks_the_signatures_fit_the_targets(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    alice = Operator()
    ex = ExecSettings(enabled=True, allow=["*"], trusted_keys=[alice.line])
    web, db = [await enrolled(tmp_path, real_core, runner, ex, n) for n in ("web", "db")]
    token = await real_core.admin_token()

    async def refused(body: dict[str, Any], status: int = 400) -> str:
        got, answer = await real_core.request("POST", "/api/v1/commands", token, json=body)
        assert got == status, answer
        message: str = answer["error"]["message"]
        return message

    body = body_for(alice, [web], ["true"])
    body["targets"] = {"nodes": [web, db]}
    assert f"no signature for node(s) {db}" in await refused(body)
    body = body_for(alice, [web, db], ["true"])
    body["targets"] = {"nodes": [web]}
    assert f"signatures for node(s) the targets do not match: {db}" in await refused(body)
    body = body_for(alice, [web], ["true"])
    body["signatures"] = {str(db): body["signatures"][str(web)]}
    body["targets"] = {"nodes": [db]}
    assert f"the signature given for node {db} was made for node {web}" in await refused(body)
    body = body_for(alice, [web], ["true"])
    del body["id"]
    assert "a signed command needs the id it was signed with" in await refused(body)
    body = body_for(alice, [web], ["true"])
    body["signatures"][str(web)]["sig"] = "short"
    assert "base64 of 64 bytes" in await refused(body)
    body = body_for(alice, [web], ["true"])
    await start(real_core, body)
    assert f"there is already a command with id {body['id']}" in await refused(body, 409)
    # The contract says what the core accepts.
    _, doc = await real_core.request("GET", "/api/v1/openapi.json", token)
    create = doc["components"]["schemas"]["CommandCreate"]["properties"]
    assert {"id", "signatures"} <= create.keys()
    assert "CommandSignature" in doc["components"]["schemas"]


async def test_a_replay_by_the_core_is_refused_and_reported(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    alice = Operator()
    ex = ExecSettings(enabled=True, allow=["*"], trusted_keys=[alice.line])
    web, db = [await enrolled(tmp_path, real_core, runner, ex, n) for n in ("web", "db")]
    counter = tmp_path / "count"
    info = await start(real_core, body_for(alice, [web], ["sh", "-c", f"echo x >> {counter}"]))
    assert (await finished(real_core, info["id"]))[web]["status"] == "ok"

    # A compromised core replays what it relayed: to the same node, and to another one.
    commands = real_core.core.commands
    live = commands.live[info["id"]]
    frame = live.frame_for(web)
    for node in (web, db):
        live.runs[node] = Run(node, "sent")
        live.done.clear()
        link = real_core.core.nodes.get(node).link  # type: ignore[union-attr]
        assert link is not None
        await link.send(frame)
    runs = await finished(real_core, info["id"])
    assert (runs[web]["status"], runs[web]["message"]) == ("refused", REPLAYED)
    assert (runs[db]["status"], runs[db]["message"]) == (
        "refused",
        f"signed for node {web}, this is node {db}",
    )
    assert counter.read_text() == "x\n", "the replayed command ran again"
    row = (await audit(real_core, "command.result", web))[0]
    assert (row["result"], row["detail"]["message"]) == ("refused", REPLAYED)


async def test_signed_service_requests(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    systemctl = fake_systemctl(tmp_path, monkeypatch)
    alice = Operator()
    ex = ExecSettings(enabled=True, allow=["service *"], trusted_keys=[alice.line])
    node = await enrolled(tmp_path, real_core, runner, ex)
    token = await real_core.admin_token()

    def signed_query(request: ServiceRequest, timeout: float = 30.0) -> dict[str, str]:
        cid = new_command_id()
        sig = alice.signature(Command(command_id=cid, timeout=timeout, service=request), node)
        return {
            "timeout": repr(timeout),
            "id": cid,
            "key_id": sig.key_id,
            "nonce": sig.nonce,
            "expires_at": str(sig.expires_at),
            "sig": sig.sig,
        }

    status, body = await real_core.request("GET", f"/api/v1/nodes/{node}/services", token)
    assert (status, body["error"]["message"]) == (403, UNSIGNED)
    status, body = await real_core.request(
        "GET", f"/api/v1/nodes/{node}/services", token, params=signed_query(ServiceRequest("list"))
    )
    assert status == 200, body
    assert [s["name"] for s in body["services"]] == ["nginx"]

    path = f"/api/v1/nodes/{node}/services/nginx/restart"
    status, body = await real_core.request("POST", path, token)
    assert status == 200 and body["runs"][0]["status"] == "refused"
    assert body["runs"][0]["message"] == UNSIGNED
    status, body = await real_core.request(
        "POST", path, token, params=signed_query(ServiceRequest("restart", "nginx"))
    )
    assert status == 200 and body["runs"][0]["status"] == "ok", body
    assert body["runs"][0]["signed_by"] == alice.key_id
    # Signed for restart, relayed as stop: refused.
    status, body = await real_core.request(
        "POST",
        f"/api/v1/nodes/{node}/services/nginx/stop",
        token,
        params=signed_query(ServiceRequest("restart", "nginx")),
    )
    assert body["runs"][0]["message"].startswith("signature does not match the request")
    query = signed_query(ServiceRequest("restart", "nginx"))
    del query["sig"]
    status, body = await real_core.request("POST", path, token, params=query)
    assert (status, body["error"]["message"]) == (
        400,
        "a signed service request needs all of its signature; missing sig",
    )
    actions = [c for c in systemctl.calls if c[0] not in ("list-units", "list-unit-files")]
    assert actions == [["--no-ask-password", "restart", "nginx.service"]]


async def test_an_agent_without_trusted_keys_runs_what_it_allows_signed_or_not(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    alice = Operator()
    node = await enrolled(tmp_path, real_core, runner, ExecSettings(enabled=True, allow=["echo *"]))
    for op in (None, alice):
        info = await start(real_core, body_for(op, [node], ["echo", "hi"]))
        run = (await finished(real_core, info["id"]))[node]
        assert (run["status"], run["stdout"]) == ("ok", "hi\n")
        assert run["signed_by"] == (alice.key_id if op else None)
    # Its policy still decides.
    info = await start(real_core, body_for(alice, [node], ["uptime"]))
    run = (await finished(real_core, info["id"]))[node]
    assert (run["status"], run["message"]) == ("refused", "command not allowed by [exec] allow list")
