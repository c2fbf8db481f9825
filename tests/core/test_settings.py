"""Settings: TOML < SM_ environment < flags, durations, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from servermanager.common.settings import SettingsError, load_settings, parse_duration
from servermanager.core.settings import CoreSettings, redact_url


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "core.toml"
    cfg.write_text(
        'listen = "0.0.0.0:9000"\nretention_raw = "72h"\nheartbeat_misses = 5\nagent_interval = 10\n'
    )
    env = {"SM_CORE_HEARTBEAT_MISSES": "4", "SM_CORE_AGENT_INTERVAL": "20s"}
    s = load_settings(
        CoreSettings, env_prefix="SM_CORE_", config_file=cfg, environ=env, overrides={"agent_interval": 30.0}
    )
    assert s.listen == "0.0.0.0:9000"  # file only
    assert s.retention_raw == 72 * 3600  # file duration
    assert s.heartbeat_misses == 4  # env beats file
    assert s.agent_interval == 30.0  # flag beats env
    assert (s.host, s.port) == ("0.0.0.0", 9000)


def test_config_file_from_env(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('log_level = "DEBUG"\n')
    s = load_settings(CoreSettings, env_prefix="SM_CORE_", environ={"SM_CORE_CONFIG": str(cfg)})
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("text", "env", "match"),
    [
        ("lisen = 'x'\n", {}, "unknown setting 'lisen'"),
        ("heartbeat_misses = 'lots'\n", {}, "heartbeat_misses"),
        ("", {"SM_CORE_RETENTION_RAW": "forever"}, "retention_raw: not a duration"),
        ("", {"SM_CORE_METRICS_AUTH": "maybe"}, "metrics_auth"),
        ("listen = '8760'\n", {}, "HOST:PORT"),
        ("agent_interval = 0.5\n", {}, "at least 1 second"),
        ("push_gather = '2s'\n", {}, "push_gather must be between 0"),
        ("this is not toml", {}, "config file"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, env: dict[str, str], match: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(SettingsError, match=match):
        load_settings(CoreSettings, env_prefix="SM_CORE_", config_file=cfg, environ=env)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(CoreSettings, env_prefix="SM_CORE_", config_file=tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize(
    ("raw", "secs"),
    [("500ms", 0.5), ("5", 5.0), ("10m", 600.0), ("48h", 172800.0), ("30d", 2592000.0), (7, 7.0)],
)
def test_durations(raw: str | int, secs: float) -> None:
    assert parse_duration(raw) == secs


def test_every_setting_is_described() -> None:
    missing = [f for f in CoreSettings.__struct_fields__ if f not in CoreSettings.__doc_fields__]
    assert missing == []


def test_uvloop_setting_takes_booleans_only() -> None:
    def load(value: str) -> CoreSettings:
        return load_settings(CoreSettings, env_prefix="SM_CORE_", environ={"SM_CORE_UVLOOP": value})

    assert load("false").uvloop is False
    assert load("true").uvloop is True
    with pytest.raises(SettingsError, match="uvloop"):
        load("maybe")


def test_database_is_sqlite_or_a_postgresql_url() -> None:
    def load(value: str) -> CoreSettings:
        return load_settings(CoreSettings, env_prefix="SM_CORE_", environ={"SM_CORE_DATABASE": value})

    assert load_settings(CoreSettings, env_prefix="SM_CORE_", environ={}).database == "sqlite"
    assert load(" SQLite ").database == "sqlite"
    url = "postgresql://sm@db.example:5432/servermanager"
    assert load(url).database == url
    for bad, match in (
        ("mysql://sm:pw@h/db", "expected sqlite or a postgresql://"),
        ("postgresql:///db", "no host"),
        ("postgresql://sm@h:5432", "no database name"),
        ("postgresql://sm@h:port/db", "expected sqlite or a postgresql://"),
    ):
        with pytest.raises(SettingsError, match=match):
            load(bad)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://sm:s3cret-pw@db.example:5432",
        "mysql://sm:s3cret-pw@h/db",
        "postgresql://sm:s3cret-pw@h:port/db",
        "postgres://:s3cret-pw@h/",
    ],
)
def test_a_password_in_the_database_url_is_never_shown(url: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(CoreSettings, env_prefix="SM_CORE_", environ={"SM_CORE_DATABASE": url})
    assert "s3cret-pw" not in str(err.value) and "***" in str(err.value)
    assert redact_url("postgresql://sm:s3cret-pw@h:5432/db") == "postgresql://sm:***@h:5432/db"
    assert redact_url("postgresql://sm@h/db") == "postgresql://sm@h/db"


def test_a_bad_database_url_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "servermanager",
            "core",
            "--data-dir",
            str(tmp_path),
            "--database",
            "pg://u:pw9@h/x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and "database" in proc.stderr and "pw9" not in proc.stderr, (
        proc.stderr
    )


@pytest.mark.parametrize(
    ("bus", "match"),
    [
        ("http://127.0.0.1:6379", "expected local or a redis://"),
        ("redis://", "no host"),
        ("redis://:hunter2@127.0.0.1:port/0", "could not be cast"),
        ("redis://u:hunter2@127.0.0.1:6379/zero", "database number"),
        ("unix://", "socket's path"),
    ],
)
def test_bad_bus_urls_are_named_without_their_password(bus: str, match: str) -> None:
    with pytest.raises(SettingsError, match=match) as err:
        load_settings(CoreSettings, env_prefix="SM_CORE_", environ={"SM_CORE_BUS": bus})
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    "bus",
    [
        "local",
        " local ",
        "redis://127.0.0.1:6379/0",
        "rediss://u:p@redis.example:6380",
        "unix:///run/redis.sock",
    ],
)
def test_bus_urls(bus: str) -> None:
    s = load_settings(CoreSettings, env_prefix="SM_CORE_", environ={"SM_CORE_BUS": bus})
    assert s.bus == bus.strip() and s.clustered == (bus.strip() != "local")


def test_bad_bus_stops_the_core_with_one_line(tmp_path: Path) -> None:
    from tests.helpers.procs import cli

    r = cli("core", "--data-dir", str(tmp_path / "d"), "--bus", "redis://admin:hunter2@127.0.0.1:x/0")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "setting bus" in r.stderr, r.stderr
    assert "hunter2" not in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was made
