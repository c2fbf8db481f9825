"""What a running agent imports: only what it uses, since every module stays in its RSS.

With [exec] disabled it never imports the code that runs commands (0.3-1.4 MB), and the stdlib
modules its libraries import but never use (importlib.metadata, urllib.request: 2.9 MB) stay
placeholders until something reads them (agent.lazyimports).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from servermanager.agent.exec import make_runner
from servermanager.agent.exec.outbox import DISABLED_MESSAGE, RefusingRunner
from servermanager.agent.exec.runner import CommandRunner
from servermanager.agent.exec.signing import UNSIGNED
from servermanager.agent.settings import ExecSettings
from servermanager.common.protocol import Command, CommandCancel
from tests.agent.fakes import FakeCore
from tests.helpers.signing import Operator

REPO = Path(__file__).resolve().parents[2]
TOKEN = "enroll-token-lazy-exec-12345"
# Remote execution proper: the runner, run-as, process groups, service managers.
EXEC_MODULES = (
    "servermanager.agent.exec.runner",
    "servermanager.agent.exec.runas",
    "servermanager.agent.exec.services",
    "servermanager.agent.exec.subproc",
    "servermanager.agent.exec.tree",
)
# Signature checks: only with trusted keys in [exec] (they bring the cryptography library).
SIGNING_MODULE = "servermanager.agent.exec.signing"

# Loaded for real, each of these means a deferral failed: importlib.metadata's and urllib.request's
# own imports, and the modules only other subcommands of the servermanager CLI need.
UNUSED_STDLIB = ("importlib.metadata", "urllib.request", "email", "http.client", "zipfile", "csv",
                 "getpass", "tempfile")  # fmt: skip

# The real `servermanager agent` entry in a process of its own; at exit it writes down which
# modules it had imported (placeholders excluded), after a whole run: settings, enrollment,
# streaming, a command.
AGENT_ENTRY = """
import atexit, json, sys, types

def report() -> None:
    real = [m for m, mod in sys.modules.items() if type(mod) is types.ModuleType]
    with open(sys.argv[1], "w") as f:
        json.dump(real, f)

atexit.register(report)
from servermanager.cli import main

sys.exit(main(["agent", *sys.argv[2:]]))
"""


@pytest.mark.parametrize(
    ("enabled", "signed"),
    [(False, False), (True, False), (True, True)],
    ids=["exec-disabled", "exec-enabled", "exec-signed"],
)
async def test_exec_code_is_imported_only_when_exec_is_enabled(
    tmp_path: Path, fake_core: FakeCore, enabled: bool, signed: bool
) -> None:
    modules_file = tmp_path / "modules.json"
    # No proxy variables: with one, the agent's proxy lookup rightly imports urllib.request.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SM_") and not k.lower().endswith("_proxy")
    }
    # Enabled with an empty allow list: every command is refused by the policy, nothing runs.
    env.update(SM_AGENT_ENROLL_TOKEN=TOKEN, SM_AGENT_EXEC_ENABLED="true" if enabled else "false")
    if signed:  # with a trusted key: signature checks, and the cryptography library for them
        env.update(SM_AGENT_EXEC_TRUSTED_KEYS=Operator().line)
    args = ["--core", fake_core.url, "--state-dir", str(tmp_path / "state"), "--interval", "1s"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        AGENT_ENTRY,
        str(modules_file),
        *args,
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            await fake_core.wait_until(lambda: fake_core.ws is not None and len(fake_core.batches) >= 1, 30)
            result = await fake_core.run(Command("c1", 10, shell="reboot"))
            proc.send_signal(signal.SIGTERM)
            assert proc.stderr is not None
            log = (await proc.stderr.read()).decode()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, log
    assert result.status == "refused"
    modules = set(json.loads(modules_file.read_text()))
    assert {
        "servermanager.agent.main",
        "servermanager.agent.link.connection",
        "servermanager.agent.link.stream",
        "servermanager.agent.exec",
        "servermanager.agent.exec.outbox",
        "servermanager.common.exec_policy",  # the settings check their patterns with it
        "websockets.asyncio.client",
    } <= modules, modules
    assert not set(UNUSED_STDLIB) & modules, f"imported for real: {set(UNUSED_STDLIB) & modules}"
    # No [[check]] or [[scrape]] entries: the libraries that run them stay out of the agent's RSS.
    check_libs = {m for m in modules if m.partition(".")[0] in ("aiohttp", "icmplib")}
    assert not check_libs, f"imported without checks or scrapes: {sorted(check_libs)[:5]}"
    signing_loaded = {m for m in modules if m == SIGNING_MODULE or m.partition(".")[0] == "cryptography"}
    if signed:
        assert result.message == UNSIGNED
        assert SIGNING_MODULE in modules and "cryptography" in modules
    else:
        assert not signing_loaded, f"imported without trusted keys: {signing_loaded}"
    if enabled and not signed:
        assert result.message == "command not allowed: the [exec] allow list is empty, so nothing may run"
    if enabled:
        assert set(EXEC_MODULES) <= modules
    else:
        assert result.message == DISABLED_MESSAGE
        assert "command c1 reboot: refused: remote execution is disabled" in log
        assert not set(EXEC_MODULES) & modules, (
            f"imported with [exec] disabled: {set(EXEC_MODULES) & modules}"
        )


async def test_make_runner_picks_the_refusing_runner_when_disabled() -> None:
    assert isinstance(make_runner(ExecSettings(enabled=True)), CommandRunner)
    runner = make_runner(ExecSettings())
    assert isinstance(runner, RefusingRunner)
    runner.handle(Command("c1", 10, argv=["uptime"]))
    runner.handle(Command("c2", 10))  # malformed (nothing to run): refused all the same
    runner.handle(CommandCancel("c1"))  # nothing runs, so nothing to cancel
    assert (runner.received, runner.refused, runner.finished, runner.running) == (2, 2, 0, [])
    runner.outbox.set_online(True)
    results = [await runner.outbox.get() for _ in range(2)]
    assert [(r.command_id, r.status, r.message) for r in results] == [
        ("c1", "refused", DISABLED_MESSAGE),
        ("c2", "refused", DISABLED_MESSAGE),
    ]
    await runner.shutdown()
