"""Admin actions on a core's data dir through the CLI: users, tokens, backup and restore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servermanager.core.datadir import INITIAL_PASSWORD_FILE
from tests.helpers.procs import CoreProcess, cli

pytestmark = pytest.mark.slow


@pytest.fixture
def core_proc(tmp_path: Path) -> Iterator[CoreProcess]:
    proc = CoreProcess(tmp_path / "data")
    try:
        yield proc
    finally:
        proc.stop()


def test_admin_commands_then_core(core_proc: CoreProcess) -> None:
    data = str(core_proc.data_dir)
    r = cli("admin", "create-user", "bob", "--role", "operator", "--data-dir", data, stdin="bobs-password\n")
    assert r.returncode == 0, r.stderr
    r = cli("admin", "create-user", "bob", "--role", "operator", "--data-dir", data, stdin="bobs-password\n")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = cli("admin", "enroll-token", "--ttl", "10m", "--uses", "3", "--data-dir", data)
    assert r.returncode == 0 and r.stdout.strip().startswith("sme_")
    r = cli("admin", "api-token", "ci-bot", "--role", "viewer", "--data-dir", data)
    assert r.returncode == 0, r.stderr
    api_token = r.stdout.strip()
    assert api_token.startswith("smt_")

    core_proc.start()
    status, body = core_proc.api(
        "POST", "/api/v1/auth/login", body={"username": "bob", "password": "bobs-password"}
    )
    assert status == 200 and body["role"] == "operator"
    status, me = core_proc.api("GET", "/api/v1/auth/me", api_token)
    assert (status, me["name"], me["role"]) == (200, "ci-bot", "viewer")
    # No admin is created when users already exist, so no password file appears.
    assert not (core_proc.data_dir / INITIAL_PASSWORD_FILE).exists()


def test_backup_and_restore(core_proc: CoreProcess, tmp_path: Path) -> None:
    core_proc.start()
    token = core_proc.admin_token()
    status, _ = core_proc.api(
        "POST", "/api/v1/users", token, {"name": "kept", "password": "kept-password", "role": "viewer"}
    )
    assert status == 201
    backup = tmp_path / "backup.db"
    r = cli("admin", "backup", str(backup), "--data-dir", str(core_proc.data_dir))  # online, core running
    assert r.returncode == 0, r.stderr
    status, _ = core_proc.api(
        "POST", "/api/v1/users", token, {"name": "lost", "password": "lost-password", "role": "viewer"}
    )
    assert status == 201
    assert core_proc.terminate() == 0

    r = cli("admin", "restore", str(backup), "--data-dir", str(core_proc.data_dir))
    assert r.returncode == 0, r.stderr
    core_proc.start()
    token = core_proc.admin_token()
    status, body = core_proc.api("GET", "/api/v1/users", token)
    names = {u["name"] for u in body["users"]}
    assert "kept" in names and "lost" not in names

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    r = cli("admin", "restore", str(junk), "--data-dir", str(tmp_path / "other"))
    assert r.returncode == 1 and "not a usable backup" in r.stderr
