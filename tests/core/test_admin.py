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
    # Both CLI actions are in the (restored) audit trail, by the CLI's user.
    status, audit = core_proc.api("GET", "/api/v1/audit?action=admin.restore", token)
    assert [e["actor"].startswith("cli") for e in audit["entries"]] == [True]
    status, audit = core_proc.api("GET", "/api/v1/audit?action=admin.backup", token)
    assert [e["actor"].startswith("cli") for e in audit["entries"]] == [True]

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    r = cli("admin", "restore", str(junk), "--data-dir", str(tmp_path / "other"))
    assert r.returncode == 1 and "not a usable backup" in r.stderr


def test_account_lifecycle_from_the_cli_reaches_a_running_core(core_proc: CoreProcess) -> None:
    """The CLI works on the data dir while the core runs; the core sees each change at once."""
    data = str(core_proc.data_dir)
    assert (
        cli(
            "admin", "create-user", "bob", "--role", "operator", "--data-dir", data, stdin="bobs-password\n"
        ).returncode
        == 0
    )
    assert (
        cli(
            "admin", "create-user", "root2", "--role", "admin", "--data-dir", data, stdin="root2-password\n"
        ).returncode
        == 0
    )
    core_proc.start()
    status, pair = core_proc.api(
        "POST", "/api/v1/auth/login", body={"username": "bob", "password": "bobs-password"}
    )
    assert status == 200
    token = pair["access_token"]

    r = cli("admin", "users", "--data-dir", data)
    assert r.returncode == 0 and "bob" in r.stdout and "operator" in r.stdout
    r = cli("admin", "tokens", "--user", "bob", "--data-dir", data)
    assert r.returncode == 0 and token not in r.stdout and "access" in r.stdout
    access_id = next(line.split()[0] for line in r.stdout.splitlines() if " access " in line)

    r = cli("admin", "set-role", "bob", "viewer", "--data-dir", data)
    assert r.returncode == 0, r.stderr
    assert core_proc.api("GET", "/api/v1/auth/me", token)[1]["role"] == "viewer"
    r = cli("admin", "revoke", access_id, "--data-dir", data)
    assert r.returncode == 0 and "revoked" in r.stdout
    assert core_proc.api("GET", "/api/v1/auth/me", token)[0] == 401

    r = cli("admin", "passwd", "bob", "--temporary", "--data-dir", data, stdin="new-bob-pass\n")
    assert r.returncode == 0, r.stderr
    status, pair = core_proc.api(
        "POST", "/api/v1/auth/login", body={"username": "bob", "password": "new-bob-pass"}
    )
    assert status == 200 and pair["must_change_password"] is True
    r = cli("admin", "disable", "bob", "--data-dir", data)
    assert r.returncode == 0
    assert core_proc.api("GET", "/api/v1/auth/me", pair["access_token"])[0] == 401
    assert (
        core_proc.api("POST", "/api/v1/auth/login", body={"username": "bob", "password": "new-bob-pass"})[0]
        == 401
    )
    assert cli("admin", "enable", "bob", "--data-dir", data).returncode == 0
    assert cli("admin", "delete-user", "bob", "--data-dir", data).returncode == 0
    r = cli("admin", "delete-user", "bob", "--data-dir", data)
    assert r.returncode == 1 and "no user 'bob'" in r.stderr and "Traceback" not in r.stderr
    r = cli("admin", "revoke", "zz", "--data-dir", data)
    assert r.returncode == 2 and "16 lowercase hex" in r.stderr
    # Every one of those actions is in the audit trail, by the CLI's user.
    status, pair = core_proc.api(
        "POST", "/api/v1/auth/login", body={"username": "root2", "password": "root2-password"}
    )
    status, audit = core_proc.api("GET", "/api/v1/audit?limit=100", pair["access_token"])
    actions = [(e["action"], e["actor"].startswith("cli")) for e in audit["entries"]]
    for action in ("user.create", "user.update", "token.revoke", "user.password_reset", "user.delete"):
        assert (action, True) in actions, (action, actions)
