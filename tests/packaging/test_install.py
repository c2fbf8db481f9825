"""The .debs installed with `dpkg --root`: users, dirs, units, a working packaged core and agent, upgrade, purge."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from servermanager.common import __version__
from tests.helpers.procs import AgentProcess, CoreProcess
from tests.helpers.wait import wait_sync
from tests.packaging.conftest import BUILD_TIMEOUT, REPO, Debs, Root, need

pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT)]

RULE = "/etc/polkit-1/rules.d/50-servermanager-agent.rules"
# Runs argv[1:] with the kernel's memory-deny-write-execute (Linux 6.3+), which the units ask for
# with MemoryDenyWriteExecute=yes: a daemon that needed W+X memory would crash here first.
MDWE_EXEC = (
    "import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); "
    "libc.prctl(65, 1, 0, 0, 0); os.execv(sys.argv[1], sys.argv[1:])"
)


def packaged(root: Root, name: str) -> tuple[str, ...]:
    """The package's own `servermanager`: its venv's python (-I: nothing of this checkout on the path)."""
    return (
        sys.executable,
        "-I",
        "-c",
        MDWE_EXEC,
        str(root / f"opt/servermanager/{name}/bin/python"),
        "-I",
        "-m",
        "servermanager",
    )


def test_users_and_private_data_dirs(installed: Root) -> None:
    users = installed.passwd()
    for user, home in (
        ("servermanager", "/var/lib/servermanager"),
        ("servermanager-agent", "/var/lib/servermanager-agent"),
    ):
        _, uid, gid, _gecos, user_home, shell = users[user]
        assert (user_home, shell) == (home, "/usr/sbin/nologin")
        assert int(uid) < 1000  # a system user
        st = (installed / home).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (int(uid), int(gid), 0o700)


def test_units_installed_and_enabled(installed: Root) -> None:
    for name in ("servermanager-core", "servermanager-agent"):
        unit = installed / f"lib/systemd/system/{name}.service"
        assert unit.read_text() == (REPO / "packaging/systemd" / f"{name}.service").read_text()
        link = installed / f"etc/systemd/system/multi-user.target.wants/{name}.service"
        assert link.is_symlink() and str(link.readlink()) == f"/lib/systemd/system/{name}.service"
    assert (installed / "etc/servermanager/core.toml").read_text() == (
        REPO / "packaging/core.toml.example"
    ).read_text()
    assert (installed / "etc/servermanager/agent.toml").read_text() == (
        REPO / "packaging/agent.toml.example"
    ).read_text()


def test_packaged_commands_run(installed: Root) -> None:
    for name in ("core", "agent"):
        script = installed / f"opt/servermanager/{name}/bin/servermanager"
        assert script.read_text().splitlines()[0] == f"#!/opt/servermanager/{name}/bin/python"
        r = subprocess.run(
            [*packaged(installed, name), "--version"], capture_output=True, text=True, timeout=60
        )
        assert (r.returncode, r.stdout.strip()) == (0, f"servermanager {__version__}"), r.stderr
    # The agent's env holds the agent's libraries (aiohttp for its HTTP checks), not the core's.
    py = str(installed / "opt/servermanager/agent/bin/python")
    mods = ("psutil", "websockets", "aiohttp", "aiosqlite", "PySide6")
    probe = f"import importlib.util as u; print(*(bool(u.find_spec(m)) for m in {mods!r}))"
    r = subprocess.run([py, "-I", "-c", probe], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["True", "True", "True", "False", "False"], r.stderr


def test_systemd_analyze_verify_in_the_root(installed: Root) -> None:
    analyze = need("systemd-analyze", "systemd")
    # verify resolves the units' dependencies (sysinit.target ...) inside --root: give it the targets.
    units = installed / "lib/systemd/system"
    for f in [*Path("/lib/systemd/system").glob("*.target"), *Path("/lib/systemd/system").glob("*.slice")]:
        if not f.is_symlink():
            shutil.copyfile(f, units / f.name)
    names = [
        "/lib/systemd/system/servermanager-core.service",
        "/lib/systemd/system/servermanager-agent.service",
    ]
    r = subprocess.run(
        [analyze, "verify", f"--root={installed.path}", *names], capture_output=True, text=True, timeout=60
    )
    assert (r.returncode, r.stderr) == (0, "")
    # It does check inside the root: without the ExecStart program the same call fails.
    (installed / "opt/servermanager/agent/bin/servermanager").rename(
        installed / "opt/servermanager/agent/bin/x"
    )
    try:
        r = subprocess.run(
            [analyze, "verify", f"--root={installed.path}", names[1]], capture_output=True, text=True
        )
        assert r.returncode != 0 and "servermanager is not executable" in r.stderr
    finally:
        (installed / "opt/servermanager/agent/bin/x").rename(
            installed / "opt/servermanager/agent/bin/servermanager"
        )


def test_packaged_core_and_agent_work_together(installed: Root, tmp_path: Path) -> None:
    """The core and agent from the packages (not this checkout) enroll and report, under MDWE."""
    core = CoreProcess(tmp_path / "core", command=packaged(installed, "core")).start()
    agent = None
    try:
        r = subprocess.run(
            [*packaged(installed, "core"), "admin", "enroll-token", "--data-dir", str(core.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        token = r.stdout.strip()
        state = tmp_path / "agent"
        agent = AgentProcess(core.url, state, token=token, command=packaged(installed, "agent")).start()
        admin = core.admin_token()

        def reporting() -> bool:
            assert agent is not None and agent.proc is not None
            assert agent.proc.poll() is None, agent.log()
            status, body = core.api("GET", "/api/v1/nodes", admin)
            assert status == 200, body
            return any(n["online"] and n["latest"] for n in body["nodes"])  # a sample came through

        wait_sync(reporting, timeout=60, what=f"the packaged agent reporting\n{core.log()}")
        assert agent.terminate() == 0
        assert core.terminate() == 0
    finally:
        if agent is not None:
            agent.stop()
        core.stop()


def test_upgrade_keeps_config_and_data_purge_removes_them(debs: Debs, tmp_path: Path) -> None:
    root = Root(tmp_path / "root")
    root.dpkg("-i", *map(str, debs.both))
    users = root.passwd()
    (root / "etc/servermanager/core.toml").write_text('listen = "127.0.0.1:9999"\n')
    (root / "var/lib/servermanager/core.db").write_text("data")
    (root / "etc/servermanager/agent.env").write_text("SM_AGENT_ENROLL_TOKEN=x\n")

    root.dpkg("-i", *map(str, debs.both))  # the upgrade path: postinst configure <old version>
    assert (root / "etc/servermanager/core.toml").read_text() == 'listen = "127.0.0.1:9999"\n'
    assert (root / "var/lib/servermanager/core.db").read_text() == "data"
    assert root.passwd() == users  # same users, same ids

    (root / RULE).parent.mkdir(parents=True)
    (root / RULE).write_text("// as servermanager polkit-rule writes it")
    root.dpkg("--remove", "servermanager-agent")
    assert not (root / RULE).exists()  # the rule goes with the agent
    assert (root / "etc/servermanager/agent.env").exists()  # remove keeps config; purge does not

    root.dpkg("--purge", "servermanager-core", "servermanager-agent")
    for gone in (
        "opt/servermanager",
        "var/lib/servermanager",
        "var/lib/servermanager-agent",
        "etc/servermanager",
    ):
        assert not (root / gone).exists(), gone
    assert not list((root / "etc/systemd/system").rglob("servermanager-*"))
    assert {"servermanager", "servermanager-agent"} <= set(root.passwd())  # users stay (Debian policy)
