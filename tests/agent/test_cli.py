"""The agent as a real process: unprivileged user, permission checks, exit codes."""

from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from servermanager.core.datadir import DB_FILENAME
from tests.helpers.procs import CLI, AgentProcess, CoreProcess, cli
from tests.helpers.wait import wait_sync

pytestmark = pytest.mark.slow
NOBODY = 65534


@pytest.fixture
def core(tmp_path: Path) -> Iterator[CoreProcess]:
    proc = CoreProcess(tmp_path / "core").start()
    try:
        yield proc
    finally:
        proc.stop()


def _rows(core: CoreProcess) -> int:
    with sqlite3.connect(f"file:{core.data_dir / DB_FILENAME}?mode=ro", uri=True) as con:
        # Both tiers: the head holds what the core committed since its last settle.
        return int(
            con.execute(
                "SELECT (SELECT count(*) FROM samples_raw) + (SELECT count(*) FROM samples_head)"
            ).fetchone()[0]
        )


@contextlib.contextmanager
def _traversable(*paths: Path) -> Iterator[None]:
    """Let other users traverse the folders above the interpreter and the code, then put modes back.

    CI's Python lives under /root (mode 0700); granting search (x) alone lists nothing and reads nothing.
    """
    changed: list[tuple[Path, int]] = []
    try:
        for path in paths:
            for folder in [path, *path.parents]:
                mode = folder.stat().st_mode
                if folder.is_dir() and not mode & 0o001:
                    changed.append((folder, mode))
                    os.chmod(folder, (mode & 0o7777) | 0o001)
        yield
    finally:
        for folder, mode in reversed(changed):
            os.chmod(folder, mode & 0o7777)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
def test_agent_runs_as_unprivileged_user(core: CoreProcess) -> None:
    status, body = core.api("POST", "/api/v1/enroll-tokens", core.admin_token(), {"uses": 1, "ttl": 600})
    assert status == 201
    base = Path(tempfile.mkdtemp(prefix="sm-nobody-"))
    os.chmod(base, 0o711)
    state = base / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    agent = AgentProcess(core.url, state, body["token"])
    agent.log_path = base / "agent.log"
    code = Path(__file__).resolve().parents[2]
    with _traversable(Path(sys.executable).resolve().parent, Path(sys.prefix), code):
        try:
            agent.start(uid=NOBODY)
            wait_sync(lambda: _rows(core) >= 2, what="samples from the unprivileged agent")
            cred = state / "credential"
            assert cred.stat().st_uid == NOBODY
            assert cred.stat().st_mode & 0o777 == 0o600
            assert agent.terminate() == 0, agent.log()
        finally:
            agent.stop()


def test_agent_refuses_readable_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "open"
    state.mkdir()
    os.chmod(state, 0o755)
    r = cli("agent", "--core", "http://127.0.0.1:9", "--state-dir", str(state), "--enroll-token", "sme_x")
    assert r.returncode == 2
    assert str(state) in r.stderr and "chmod" in r.stderr
    assert "Traceback" not in r.stderr


def test_agent_without_credential_or_token_exits_2(tmp_path: Path) -> None:
    state = tmp_path / "fresh"
    r = cli("agent", "--core", "http://127.0.0.1:9", "--state-dir", str(state))
    assert r.returncode == 2
    assert "enroll" in r.stderr.lower()


def test_interval_below_one_second_is_refused(tmp_path: Path) -> None:
    r = cli("agent", "--core", "http://127.0.0.1:9", "--state-dir", str(tmp_path / "s"), "--interval", "0.5")
    assert r.returncode == 2
    assert "interval" in r.stderr


def test_the_enrollment_command_the_admin_copies_works_over_tls(tmp_path: Path) -> None:
    core = CoreProcess(tmp_path / "core", host="0.0.0.0", tls=True)  # beyond loopback: TLS by itself
    try:
        core.start()
        config = tmp_path / "core.toml"
        config.write_text(f'listen = "0.0.0.0:{core.port}"\n')
        r = cli(
            "admin", "enroll-token", "--config", str(config), "--data-dir", str(core.data_dir),
            "--core-host", "127.0.0.1",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        line = next(ln.strip() for ln in r.stderr.splitlines() if "servermanager agent" in ln)
        words = shlex.split(line)
        assignment, program, args = words[0], words[1:3], words[3:]
        assert program == ["servermanager", "agent"] and assignment.startswith("SM_AGENT_ENROLL_TOKEN=")
        assert "--core-fingerprint" in args and args[args.index("--core") + 1].startswith("wss://")
        state = tmp_path / "state"
        agent = AgentProcess(core.url, state)
        agent.args = [*CLI, "agent", *args, "--state-dir", str(state), "--interval", "1"]  # as copied
        agent.env["SM_AGENT_ENROLL_TOKEN"] = assignment.partition("=")[2]
        try:
            agent.start()
            wait_sync(lambda: _rows(core) >= 2, what="samples from the agent enrolled over TLS")
            assert agent.terminate() == 0, agent.log()
        finally:
            agent.stop()
        assert "pinned sha256:" in agent.log()
        # The pin went into the credential file: the next run needs neither the token nor the flag.
        assert '"pin":"sha256:' in (state / "credential").read_text()
    finally:
        core.stop()
