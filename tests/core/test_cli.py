"""The `servermanager` command as an operator uses it: admin actions, SIGTERM, backup and restore."""

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


def test_first_start_admin_and_clean_sigterm(core_proc: CoreProcess) -> None:
    core_proc.start()
    pw_file = core_proc.data_dir / INITIAL_PASSWORD_FILE
    assert pw_file.stat().st_mode & 0o077 == 0
    token = core_proc.admin_token()
    assert core_proc.terminate() == 0
    log = core_proc.log()
    # The log says where the password is, never what it is, and never prints a token.
    assert str(pw_file) in log
    assert pw_file.read_text().strip() not in log
    assert token not in log and "sma_" not in log


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


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "core.toml"
    cfg.write_text("retention_raw = 'forever'\n")
    r = cli("core", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2
    assert "retention_raw" in r.stderr and "Traceback" not in r.stderr


def test_core_event_loop_is_uvloop_unless_switched_off() -> None:
    import asyncio

    import uvloop

    from servermanager.core.runtime import new_event_loop

    fast, plain = new_event_loop(prefer_uvloop=True), new_event_loop(prefer_uvloop=False)
    try:
        assert isinstance(fast, uvloop.Loop)
        assert not isinstance(plain, uvloop.Loop) and isinstance(plain, asyncio.AbstractEventLoop)
    finally:
        fast.close()
        plain.close()


def test_uvloop_setting_takes_booleans_only() -> None:
    from servermanager.common.settings import SettingsError, load_settings
    from servermanager.core.settings import CoreSettings

    def load(value: str) -> CoreSettings:
        return load_settings(CoreSettings, env_prefix="SM_CORE_", environ={"SM_CORE_UVLOOP": value})

    assert load("false").uvloop is False
    assert load("true").uvloop is True
    with pytest.raises(SettingsError, match="uvloop"):
        load("maybe")
