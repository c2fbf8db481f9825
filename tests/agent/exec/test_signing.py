"""Signed commands on the agent: a real agent with trusted keys, and a fake core free to misbehave.

The fake core speaks the real protocol but is as hostile as a stolen core would be: it sends
unsigned, tampered, expired and replayed commands, and calls the agent by another node's id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import msgspec
import pytest

from servermanager.agent.credentials import CREDENTIAL_FILE
from servermanager.agent.exec.signing import NONCE_FILE, UNSIGNED, make_verifier
from servermanager.agent.main import Agent
from servermanager.agent.settings import ExecSettings
from servermanager.common.protocol import Command, CommandResult, ServiceRequest
from servermanager.common.settings import SettingsError
from servermanager.common.signing import CLOCK_SKEW, MAX_LIFETIME
from tests.agent.fakes import AgentRunner, FakeCore, fast_settings
from tests.helpers.signing import Operator

TOKEN = "enroll-token-signed-12345"


def exec_settings(*trusted: str, file: str = "", allow: tuple[str, ...] = ("*",)) -> ExecSettings:
    s = ExecSettings(enabled=True, allow=list(allow), trusted_keys=list(trusted), trusted_keys_file=file)
    s.validate()
    return s


async def started(tmp_path: Path, core: FakeCore, runner: AgentRunner, ex: ExecSettings) -> Agent:
    state = tmp_path / "state"
    token = None if (state / CREDENTIAL_FILE).exists() else TOKEN
    agent = Agent(fast_settings(state, core.url, exec=ex), token)
    runner.start(agent)
    await core.wait_until(lambda: core.ws is not None and agent.node_id == core.node_id)
    return agent


def touch(marker: Path, n: int = 0) -> Command:
    """A command whose only effect is a file: whether it ran is plain to see."""
    return Command(command_id=f"cmd-{marker.name}-{n}", timeout=10, argv=["touch", str(marker)])


async def test_only_signed_requests_for_this_node_run(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner, caplog: pytest.LogCaptureFixture
) -> None:
    alice, mallory = Operator("alice"), Operator("mallory")
    await started(tmp_path, fake_core, runner, exec_settings(alice.line))
    node = fake_core.node_id
    ran = tmp_path / "ran"

    good = alice.signed(touch(ran), node)
    result = await fake_core.run(good)
    assert (result.status, result.exit_code) == ("ok", 0)
    assert ran.exists()
    ran.unlink()

    caplog.set_level(logging.INFO, "servermanager.agent")
    now = int(time.time())
    refused: list[tuple[Command, str]] = [
        (touch(ran, 1), UNSIGNED),
        (
            mallory.signed(touch(ran, 2), node),
            f"{mallory.key_id} is not one of this agent's [exec] trusted keys",
        ),
        (alice.signed(touch(ran, 3), node + 1), f"signed for node {node + 1}, this is node {node}"),
        (
            alice.signed(touch(ran, 4), node, expires_at=now - CLOCK_SKEW - 5),
            "signature expired at ",
        ),
        (
            alice.signed(touch(ran, 5), node, expires_at=now + MAX_LIFETIME + CLOCK_SKEW + 60),
            "signature expires too far ahead",
        ),
        # Tampered on the way: the argv, the env, the timeout, the command id.
        (
            msgspec.structs.replace(alice.signed(touch(ran, 6), node), argv=["touch", str(ran), "/tmp/x"]),
            "signature does not match the request",
        ),
        (
            msgspec.structs.replace(alice.signed(touch(ran, 7), node), env={"X": "1"}),
            "signature does not match the request",
        ),
        (
            msgspec.structs.replace(alice.signed(touch(ran, 8), node), timeout=3600),
            "signature does not match the request",
        ),
        (msgspec.structs.replace(good, command_id="cmd-other"), "signature does not match the request"),
        # The very frame that ran, sent again.
        (good, "replayed nonce: this agent has already received this signed request"),
    ]
    for cmd, message in refused:
        fake_core.results.pop(cmd.command_id, None)
        result = await fake_core.run(cmd)
        assert result.status == "refused", (cmd, result)
        assert result.message is not None and message in result.message, (message, result.message)
        # One log line per refusal, naming the command and the reason.
        assert any(cmd.command_id in r.getMessage() and message in r.getMessage() for r in caplog.records), (
            message
        )
    assert not ran.exists(), "a refused command ran"
    # A signature within the clock skew still counts.
    late = alice.signed(touch(ran, 9), node, expires_at=now - CLOCK_SKEW // 2)
    assert (await fake_core.run(late)).status == "ok"


async def test_service_requests_need_a_signature_too(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    alice = Operator()
    await started(tmp_path, fake_core, runner, exec_settings(alice.line))
    cmd = Command(command_id="svc-1", timeout=5, service=ServiceRequest("restart", "nginx"))
    result = await fake_core.run(cmd)
    assert (result.status, result.message) == ("refused", UNSIGNED)
    cmd = msgspec.structs.replace(cmd, command_id="svc-2")
    tampered = msgspec.structs.replace(
        alice.signed(cmd, fake_core.node_id), service=ServiceRequest("stop", "nginx")
    )
    result = await fake_core.run(tampered)
    assert result.status == "refused" and result.message is not None
    assert result.message.startswith("signature does not match the request")


async def test_the_replay_cache_survives_a_restart(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    alice = Operator()
    ex = exec_settings(alice.line)
    agent = await started(tmp_path, fake_core, runner, ex)
    ran = tmp_path / "ran"
    good = alice.signed(touch(ran), fake_core.node_id)
    assert (await fake_core.run(good)).status == "ok"
    ran.unlink()
    await runner.stop(agent)
    # A new agent process on the same state dir: the nonce is still known.
    fake_core.results.clear()
    await started(tmp_path, fake_core, runner, ex)
    result = await fake_core.run(good)
    assert (result.status, result.message) == (
        "refused",
        "replayed nonce: this agent has already received this signed request",
    )
    assert not ran.exists()
    nonces = (tmp_path / "state" / NONCE_FILE).read_text().splitlines()
    assert f"node {fake_core.node_id}" in nonces
    assert f"{good.signature.nonce} {good.signature.expires_at}" in nonces  # type: ignore[union-attr]


async def test_a_core_that_renames_the_agent_cannot_replay_another_nodes_requests(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    alice = Operator()
    agent = await started(tmp_path, fake_core, runner, exec_settings(alice.line))
    assert agent.node_id == 7
    ran = tmp_path / "ran"
    assert (await fake_core.run(alice.signed(touch(ran), 7))).status == "ok"
    # The core now says this agent is node 8, hoping to run what alice signed for node 8 here.
    fake_core.node_id = 8
    assert fake_core.ws is not None
    await fake_core.ws.close()
    await fake_core.wait_until(lambda: fake_core.ws is not None and agent.node_id == 8)
    result = await fake_core.run(alice.signed(touch(ran, 1), 8))
    assert (result.status, result.message) == ("refused", "signed for node 8, this is node 7")
    assert (await fake_core.run(alice.signed(touch(ran, 2), 7))).status == "ok"

    # Enrolled anew (the credential removed on this host): the new node id is the one to sign for.
    await runner.stop(agent)
    (tmp_path / "state" / CREDENTIAL_FILE).unlink()
    fake_core.node_id = 12
    fake_core.results.clear()
    await started(tmp_path, fake_core, runner, exec_settings(alice.line))
    result = await fake_core.run(alice.signed(touch(ran, 3), 7))
    assert (result.status, result.message) == ("refused", "signed for node 7, this is node 12")
    assert (await fake_core.run(alice.signed(touch(ran, 4), 12))).status == "ok"


async def test_without_trusted_keys_signatures_are_advisory(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    alice = Operator()
    agent = await started(tmp_path, fake_core, runner, exec_settings())
    assert agent.commands.verifier is None  # type: ignore[attr-defined]
    ran = tmp_path / "ran"
    assert (await fake_core.run(touch(ran))).status == "ok"
    signed_elsewhere = alice.signed(touch(ran, 1), 99, expires_at=1)
    assert (await fake_core.run(signed_elsewhere)).status == "ok"
    assert not (tmp_path / "state" / NONCE_FILE).exists()


# ---------------------------------------------------------------- trusted keys file


def test_the_trusted_keys_file_is_reread_and_fails_closed(tmp_path: Path) -> None:
    alice, bob = Operator("alice"), Operator("bob")
    keys = tmp_path / "trusted_keys"
    keys.write_text(f"# operators\n{alice.line}\n")
    keys.chmod(0o644)
    state = tmp_path / "state"
    state.mkdir()
    verifier = make_verifier([], str(keys), state, lambda: 3)
    cmd = Command(command_id="c1", timeout=5, argv=["true"])

    assert verifier.check(alice.signed(cmd, 3)) is None
    refusal = verifier.check(bob.signed(cmd, 3))
    assert refusal is not None and "is not one of this agent's [exec] trusted keys" in refusal
    keys.write_text(f"{alice.line}\n{bob.line}\n")
    os.utime(keys, ns=(time.time_ns(), time.time_ns() + 10**9))  # a changed mtime, whatever the clock
    assert verifier.check(bob.signed(cmd, 3)) is None

    # Made writable by others: no key of the file counts until it is fixed.
    keys.chmod(0o666)
    refusal = verifier.check(alice.signed(cmd, 3))
    assert refusal is not None and "is writable by group or others" in refusal
    keys.chmod(0o644)
    assert verifier.check(alice.signed(cmd, 3)) is None
    # Garbled, or gone: still nothing runs (the requirement never switches off).
    keys.write_text("ssh-rsa AAAA\n")
    os.utime(keys, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    refusal = verifier.check(alice.signed(cmd, 3))
    assert refusal is not None and "line 1: " in refusal
    keys.unlink()
    refusal = verifier.check(alice.signed(cmd, 3))
    assert refusal is not None and "cannot read" in refusal


def test_unusable_trusted_keys_stop_the_agent_at_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with pytest.raises(SettingsError, match=r"exec\.trusted_keys: .*not a public key line"):
        ExecSettings(enabled=True, trusted_keys=["ssh-rsa AAAA me"]).validate()
    missing = exec_settings(file=str(tmp_path / "nope"))
    with pytest.raises(SettingsError, match=r"exec\.trusted_keys_file: cannot read"):
        Agent(fast_settings(state, "ws://127.0.0.1:9", exec=missing))
    open_file = tmp_path / "keys"
    open_file.write_text(Operator().line + "\n")
    open_file.chmod(0o664)
    with pytest.raises(SettingsError, match="writable by group or others"):
        Agent(fast_settings(state, "ws://127.0.0.1:9", exec=exec_settings(file=str(open_file))))
    # An empty file is allowed at start: everything is refused until a key is added.
    open_file.write_text("# nobody yet\n")
    open_file.chmod(0o600)
    agent = Agent(fast_settings(state, "ws://127.0.0.1:9", exec=exec_settings(file=str(open_file))))
    try:
        cmd = Command(command_id="c1", timeout=5, argv=["true"])
        verifier = agent.commands.verifier  # type: ignore[attr-defined]
        assert verifier.check(Operator().signed(cmd, 1)) is not None
    finally:
        agent.close()


async def test_a_result_of_refusal_reaches_the_outbox_unrun(tmp_path: Path) -> None:
    # Without any link: the runner answers a refused request at once, from submit().
    from servermanager.agent.exec import make_runner

    state = tmp_path / "state"
    state.mkdir()
    runner = make_runner(exec_settings(Operator().line), state_dir=state, node_id=lambda: 1)
    runner.handle(Command(command_id="c1", timeout=5, argv=["true"]))
    runner.outbox.set_online(True)
    result = await asyncio.wait_for(runner.outbox.get(), 5)
    assert isinstance(result, CommandResult)
    assert (result.status, result.message, runner.refused) == ("refused", UNSIGNED, 1)
