"""What a running agent imports: only what it uses, since every module stays in its RSS.

With [exec] disabled it never imports the code that runs commands (0.3-1.4 MB), and the stdlib
modules its libraries import but never use (importlib.metadata, urllib.request: 2.9 MB) stay
placeholders until something reads them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from servermanager.agent.commands import DISABLED_MESSAGE, RefusingRunner, make_runner
from servermanager.agent.connection import proxy_configured
from servermanager.agent.execution import CommandRunner
from servermanager.agent.settings import ExecSettings
from servermanager.common.protocol import Command, CommandCancel
from tests.agent.fakes import FakeCore

REPO = Path(__file__).resolve().parents[2]
TOKEN = "enroll-token-lazy-exec-12345"
# Remote execution proper: policy, process groups, run-as, service managers.
EXEC_MODULES = (
    "servermanager.agent.execution",
    "servermanager.agent.services",
    "servermanager.agent.subproc",
)

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


@pytest.mark.parametrize("enabled", [False, True], ids=["exec-disabled", "exec-enabled"])
async def test_exec_code_is_imported_only_when_exec_is_enabled(
    tmp_path: Path, fake_core: FakeCore, enabled: bool
) -> None:
    modules_file = tmp_path / "modules.json"
    # No proxy variables: with one, the agent's proxy lookup rightly imports urllib.request.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SM_") and not k.lower().endswith("_proxy")
    }
    # Enabled with an empty allow list: every command is refused by the policy, nothing runs.
    env.update(SM_AGENT_ENROLL_TOKEN=TOKEN, SM_AGENT_EXEC_ENABLED="true" if enabled else "false")
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
        "servermanager.agent.connection",
        "servermanager.agent.commands",
        "websockets.asyncio.client",
    } <= modules, modules
    assert not set(UNUSED_STDLIB) & modules, f"imported for real: {set(UNUSED_STDLIB) & modules}"
    if enabled:
        assert result.message == "command not allowed: the [exec] allow list is empty, so nothing may run"
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


# Deferral in a fresh interpreter: the test process has long imported everything for real.
DEFERRAL = """
import importlib, json, sys
from servermanager.agent.cli import defer_imports

already = sys.modules["json"]
defer_imports(["importlib.metadata", "urllib.request", "json", "no_such_module_here"])
out = {"json_kept": sys.modules["json"] is already, "unknown_absent": "no_such_module_here" not in sys.modules}
import importlib.metadata          # the import statement alone must not load it
import urllib.request
out["after_import"] = [m in sys.modules for m in ("email", "http.client")]
stub = importlib.metadata
from importlib.metadata import version   # the first attribute read loads it whole
out["version"] = version("msgspec")
out["email_loaded"] = "email" in sys.modules
out["real_in_place"] = type(sys.modules["importlib.metadata"]).__name__ == "module"
out["parent_has_real"] = importlib.metadata is sys.modules["importlib.metadata"]
out["stub_sees_real"] = stub.version is version
out["proxies"] = urllib.request.getproxies()
print(json.dumps(out))
"""


def test_deferred_modules_load_on_first_attribute_read() -> None:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["https_proxy"] = "http://proxy.invalid:3128"
    done = subprocess.run(
        [sys.executable, "-c", DEFERRAL], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    import msgspec

    assert json.loads(done.stdout) == {
        "json_kept": True,
        "unknown_absent": True,
        "after_import": [False, False],
        "version": msgspec.__version__,
        "email_loaded": True,
        "real_in_place": True,
        "parent_has_real": True,
        "stub_sees_real": True,
        "proxies": {"https": "http://proxy.invalid:3128"},
    }


@pytest.mark.parametrize(
    ("environ", "platform", "expected"),
    [
        ({}, "linux", False),
        ({"PATH": "/bin", "no_proxy": ""}, "linux", False),
        ({"HTTPS_PROXY": "http://p:3128"}, "linux", True),
        ({"all_proxy": "socks5://p:1080"}, "linux", True),
        ({}, "darwin", True),  # system settings may name one
        ({}, "win32", True),
    ],
)
def test_proxy_lookup_runs_only_when_a_proxy_can_be_configured(
    environ: dict[str, str], platform: str, expected: bool
) -> None:
    assert proxy_configured(environ, platform) is expected
