"""The one line an admin copies, run for real: it installs the agent from the core and the node enrolls."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devkit.cores import RunningCore
from tests.helpers.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
async def tls_core(tmp_path: Path, agent_wheel: Path) -> AsyncIterator[RunningCore]:
    server = await RunningCore(tmp_path / "core", tls="on", agent_package=str(agent_wheel)).start()
    try:
        yield server
    finally:
        await server.stop()


async def test_the_linux_line_installs_an_agent_that_enrolls(tls_core: RunningCore, tmp_path: Path) -> None:
    admin = await tls_core.admin_token()
    _, cmd = await tls_core.request("POST", "/api/v1/agent/install-command", admin, json={"ttl": 600})
    root = tmp_path / "root"
    # As copied, but into a throwaway root with no service (no root, no systemd here), and with this
    # Python: pip fetches the agent's dependencies from the index as it would on a new server.
    line = (
        cmd["linux"].removesuffix("| sudo sh")
        + f"| sh -s -- --prefix {root} --no-service --python {sys.executable}"
    )
    proc = await asyncio.create_subprocess_shell(line, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()  # the core serves on this loop meanwhile
    assert proc.returncode == 0, err.decode()[-3000:]

    nodes = list(tls_core.core.nodes.nodes.values())
    assert len(nodes) == 1, err.decode()
    assert not await tls_core.core.enroll.usable(cmd["token"])  # spent by that enrollment
    conf = tomllib.loads((root / "etc/servermanager/agent.toml").read_text())
    assert conf == {"core": tls_core.url, "core_fingerprint": tls_core.fingerprint}
    state = root / "var/lib/servermanager-agent"
    assert f'"node_id":{nodes[0].id}' in (state / "credential").read_text()
    assert (state.stat().st_mode & 0o777) == 0o700
    run = out.decode().strip()
    assert (
        run
        == f"{root}/opt/servermanager/agent/bin/servermanager agent --config {root}/etc/servermanager/agent.toml --state-dir {state}"
    )

    # The installed agent runs from its own venv, with the credential and pin the installer left.
    agent = await asyncio.create_subprocess_exec(*run.split(), "--interval", "1", stderr=subprocess.PIPE)
    try:
        await wait_for(
            lambda: nodes[0].online or agent.returncode is not None, 30, "the installed agent online"
        )
        assert nodes[0].online, "the installed agent stopped"
    finally:
        agent.terminate()
        _, log = await agent.communicate()
    assert agent.returncode == 0, log.decode()[-2000:]
    assert "Traceback" not in log.decode()
