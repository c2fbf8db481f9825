"""`servermanager keys`, `sign` and `run`: scripts sign with a key file, a real core relays, real agents
that trust the key run what it signed and refuse the rest."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from devkit.cores import RunningCore
from servermanager.agent.exec.signing import UNSIGNED
from servermanager.agent.main import Agent
from servermanager.agent.settings import ExecSettings
from servermanager.common.signing import parse_public_key
from tests.agent.fakes import AgentRunner, fake_systemctl, fast_settings
from tests.helpers.procs import CLI, cli
from tests.helpers.signing import Operator
from tests.helpers.wait import wait_for, wait_until


def generate(path: Path, comment: str = "ci@build") -> str:
    r = cli("keys", "generate", "--out", str(path), "--comment", comment)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("ed25519:") and line.endswith(f" {comment}")
    return line


def test_keys_generate_and_public(tmp_path: Path) -> None:
    key = tmp_path / "ops.key"
    line = generate(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    r = cli("keys", "public", str(key), "--comment", "ci@build")
    assert (r.returncode, r.stdout.strip()) == (0, line)
    # Never over an existing key file.
    r = cli("keys", "generate", "--out", str(key))
    assert r.returncode == 2 and "exists; not overwriting" in r.stderr
    assert cli("keys", "public", str(key), "--comment", "ci@build").stdout.strip() == line
    # A key file others can read is refused, as ssh does.
    key.chmod(0o640)
    r = cli("sign", "--key", str(key), "--node", "1", "--", "true")
    assert r.returncode == 2 and f"chmod 600 {key}" in r.stderr and "Traceback" not in r.stderr
    # An OpenSSH private key works too.
    op = Operator()
    ssh = tmp_path / "id_ed25519"
    ssh.write_bytes(
        op.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    ssh.chmod(0o600)
    r = cli("keys", "public", str(ssh))
    assert parse_public_key(r.stdout).key_id == op.key_id


def test_sign_checks_what_it_is_given(tmp_path: Path) -> None:
    key = tmp_path / "k"
    generate(key)
    for args, message in (
        (["--node", "1"], "nothing to run"),
        (["--node", "1", "--shell", "ls", "--", "ls"], "either --shell TEXT or an argv"),
        (["--node", "1", "--service", "restart"], "--service takes ACTION NAME"),
        (["--node", "1", "--node", "2", "--service", "restart", "nginx"], "exactly one --node"),
        (["--node", "1", "--env", "NOEQUALS", "--", "true"], "expected NAME=VALUE"),
        (["--node", "1", "--lifetime", "8d", "--", "true"], "at most 7 days"),
    ):
        r = cli("sign", "--key", str(key), *args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)


# ---------------------------------------------------------------- against a real core


@pytest.fixture
async def runner() -> AsyncIterator[AgentRunner]:
    r = AgentRunner()
    try:
        yield r
    finally:
        await r.close()


async def enrolled(
    tmp_path: Path, core: RunningCore, runner: AgentRunner, name: str, ex: ExecSettings
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


async def run_cli(*args: str, token: str | None = None) -> tuple[int, str, str]:
    """The real command line in a process of its own (this loop keeps serving the core meanwhile)."""
    env = {k: v for k, v in os.environ.items() if k != "SM_TOKEN"}
    if token is not None:
        env["SM_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_sign_prints_a_body_the_core_relays(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    key = tmp_path / "ops.key"
    line = generate(key)
    node = await enrolled(
        tmp_path, real_core, runner, "a", ExecSettings(enabled=True, allow=["*"], trusted_keys=[line])
    )
    code, out, err = await run_cli(
        "sign", "--key", str(key), "--node", str(node), "--env", "WHO=ci", "--", "sh", "-c", "echo hi $WHO"
    )
    assert code == 0, err
    body: dict[str, Any] = json.loads(out)
    token = await real_core.admin_token()
    status, info = await real_core.request("POST", "/api/v1/commands", token, json=body)
    assert status == 202, info
    _, done = await wait_until(
        lambda: real_core.request("GET", f"/api/v1/commands/{info['id']}", token),
        lambda r: r[1]["status"] != "running",
    )
    [run] = done["runs"]
    assert (run["status"], run["stdout"], run["signed_by"]) == (
        "ok",
        "hi ci\n",
        parse_public_key(line).key_id,
    )
    # The same body again is a duplicate id (409), never a second run.
    status, again = await real_core.request("POST", "/api/v1/commands", token, json=body)
    assert status == 409, again


async def test_run_resolves_signs_waits_and_reports(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    systemctl = fake_systemctl(tmp_path, monkeypatch)
    key, stranger = tmp_path / "ops.key", tmp_path / "stranger.key"
    line = generate(key)
    generate(stranger)
    ex = ExecSettings(enabled=True, allow=["echo *", "service *"], trusted_keys=[line])
    web1, web2 = [await enrolled(tmp_path, real_core, runner, n, ex) for n in ("w1", "w2")]
    token = await real_core.admin_token()
    for nid, name in ((web1, "web-1"), (web2, "web-2")):
        status, _ = await real_core.request(
            "PATCH", f"/api/v1/nodes/{nid}", token, json={"name": name, "group": "web"}
        )
        assert status == 200
    core = ["--core", real_core.url]

    code, out, err = await run_cli(
        "run", *core, "--key", str(key), "--group", "web", "--", "echo", "hello", token=token
    )
    assert code == 0, err
    assert (
        f"== web-1 [{web1}] ok (exit 0)\nhello\n" in out and f"== web-2 [{web2}] ok (exit 0)\nhello\n" in out
    )

    # Signed by a key these agents do not trust: refused on each node, exit 1.
    code, out, _ = await run_cli(
        "run", *core, "--key", str(stranger), "--node", str(web1), "--", "echo", "x", token=token
    )
    assert code == 1 and f"== web-1 [{web1}] refused: not signed by a trusted key" in out

    code, out, err = await run_cli(
        "run", *core, "--key", str(key), "--node", str(web1), "--service", "restart", "nginx", token=token
    )
    assert code == 0 and f"== web-1 [{web1}] ok" in out, (out, err)
    code, out, err = await run_cli(
        "run", *core, "--key", str(key), "--node", str(web2), "--service", "list", token=token
    )
    assert (code, out) == (0, "nginx\tactive\tenabled\tnginx web server\n"), (out, err)
    actions = [c for c in systemctl.calls if c[0] not in ("list-units", "list-unit-files")]
    assert actions == [["--no-ask-password", "restart", "nginx.service"]]

    # What goes wrong before anything is sent says so, exit 2.
    code, _, err = await run_cli("run", *core, "--key", str(key), "--all", "--", "echo", "x")
    assert code == 2 and "no API token: set SM_TOKEN" in err
    code, _, err = await run_cli(
        "run", *core, "--key", str(key), "--node", "999", "--", "echo", "x", token=token
    )
    assert code == 2 and "no node with id 999" in err
    code, _, err = await run_cli("run", *core, "--key", str(key), "--all", "--", "echo", "x", token="wrong")
    assert code == 2 and "HTTP 401" in err
    # An unsigned request through the same core, for contrast: the agents refuse it.
    status, info = await real_core.request(
        "POST", "/api/v1/commands", token, json={"targets": {"nodes": [web1]}, "command": ["echo", "x"]}
    )
    _, done = await wait_until(
        lambda: real_core.request("GET", f"/api/v1/commands/{info['id']}", token),
        lambda r: r[1]["status"] != "running",
    )
    assert done["runs"][0]["message"] == UNSIGNED


async def test_run_dry_run_previews_and_runs_nothing(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    key = tmp_path / "ops.key"
    line = generate(key)
    trusting = await enrolled(
        tmp_path, real_core, runner, "w1", ExecSettings(enabled=True, allow=["echo *"], trusted_keys=[line])
    )
    off = await enrolled(tmp_path, real_core, runner, "w2", ExecSettings(enabled=False))
    token = await real_core.admin_token()
    for nid, name in ((trusting, "web-1"), (off, "web-2")):
        status, _ = await real_core.request("PATCH", f"/api/v1/nodes/{nid}", token, json={"name": name})
        assert status == 200
    core = ["--core", real_core.url, "--key", str(key)]

    # Signed for each node, so the trusting agent's "signed only" is no reason to refuse.
    code, out, err = await run_cli("run", *core, "--all", "--dry-run", "--", "echo", "hi", token=token)
    assert code == 1, err
    assert out.splitlines() == [
        f"web-1 [{trusting}]\trun",
        f"web-2 [{off}]\trefused\tremote execution is off on this agent ([exec] enabled = false)",
    ]
    assert "1 would run, 0 queued, 1 refused, 0 unknown (matched as: echo hi)" in err
    code, out, err = await run_cli(
        "run", *core, "--node", str(trusting), "--dry-run", "--service", "restart", "nginx", token=token
    )
    assert code == 1 and out == f"web-1 [{trusting}]\trefused\tcommand not allowed by [exec] allow list\n", (
        err
    )
    code, out, _ = await run_cli(
        "run", *core, "--node", str(trusting), "--dry-run", "--", "echo", "x", token=token
    )
    assert (code, out) == (0, f"web-1 [{trusting}]\trun\n")
    _, commands = await real_core.request("GET", "/api/v1/commands", token)
    assert commands["commands"] == []  # nothing ran
    # The same door as the real run: a viewer may not ask.
    viewer = await real_core.user_token("val", "viewer")
    code, _, err = await run_cli("run", *core, "--all", "--dry-run", "--", "echo", "x", token=viewer)
    assert code == 2 and "HTTP 403" in err and "Traceback" not in err


async def test_run_a_service_action_on_a_group(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    systemctl = fake_systemctl(tmp_path, monkeypatch)
    key = tmp_path / "ops.key"
    line = generate(key)
    ex = ExecSettings(enabled=True, allow=["service *"], trusted_keys=[line])
    web1, web2 = [await enrolled(tmp_path, real_core, runner, n, ex) for n in ("w1", "w2")]
    token = await real_core.admin_token()
    for nid, name in ((web1, "web-1"), (web2, "web-2")):
        status, _ = await real_core.request(
            "PATCH", f"/api/v1/nodes/{nid}", token, json={"name": name, "group": "web"}
        )
        assert status == 200
    core = ["--core", real_core.url, "--key", str(key)]
    code, out, err = await run_cli(
        "run", *core, "--group", "web", "--service", "restart", "nginx", token=token
    )
    assert code == 0, (out, err)
    assert f"== web-1 [{web1}] ok" in out and f"== web-2 [{web2}] ok" in out
    restarts = [c for c in systemctl.calls if "restart" in c]
    assert restarts == [["--no-ask-password", "restart", "nginx.service"]] * 2
    # One POST /services: one command, signed per node, audited once as dispatched.
    _, commands = await real_core.request("GET", "/api/v1/commands", token)
    [only] = commands["commands"]
    assert only["kind"] == "service" and sorted(r["node_id"] for r in only["runs"]) == sorted([web1, web2])
    assert all(r["signed_by"] == parse_public_key(line).key_id for r in only["runs"])
    code, _, err = await run_cli("run", *core, "--group", "web", "--service", "list", token=token)
    assert code == 2 and "a service list is for one node; the targets match 2" in err
