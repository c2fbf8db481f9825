"""Settings: TOML < SM_ environment < flags, durations, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from servermanager.common.settings import SettingsError, load_settings, parse_duration
from servermanager.core.settings import CoreSettings


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
