"""AgentSettings and its [exec] table: defaults, environment, validation and URL normalisation."""

from __future__ import annotations

from pathlib import Path

import pytest

from servermanager.agent.exec.outbox import DISABLED_MESSAGE
from servermanager.agent.settings import (
    AgentSettings,
    ExecSettings,
    enroll_token_from,
    load_agent_settings,
    normalize_core_url,
)
from servermanager.common.settings import SettingsError


def test_defaults(tmp_path: Path) -> None:
    s = load_agent_settings(environ={})
    assert s.core == "ws://127.0.0.1:8760/ws/agent"
    assert s.interval == 5.0
    assert s.batch_size == 500
    assert s.max_inflight_batches == 4
    assert s.spool_max_samples == 100_000
    assert s.backoff_initial == 1.0 and s.backoff_max == 60.0
    assert s.max_frame_bytes == 1 << 20
    assert Path(s.state_dir).name == "agent" and "servermanager" in s.state_dir


def test_interval_below_one_second_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"interval must be at least 1 second \(got 0.5s\)"):
        load_agent_settings(environ={"SM_AGENT_INTERVAL": "500ms"})
    with pytest.raises(SettingsError, match="interval must be at least 1 second"):
        load_agent_settings(environ={}, overrides={"interval": "0.2"})


def test_environment_is_picked_up() -> None:
    s = load_agent_settings(
        environ={
            "SM_AGENT_INTERVAL": "2",
            "SM_AGENT_CORE": "https://mon.example.com",
            "SM_AGENT_BATCH_SIZE": "50",
        }
    )
    assert s.interval == 2.0
    assert s.core == "wss://mon.example.com/ws/agent"
    assert s.batch_size == 50


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('interval = "30s"\nbackoff_max = "2m"\nstate_dir = "/tmp/x"\n')
    s = load_agent_settings(
        config_file=cfg, environ={"SM_AGENT_INTERVAL": "10s"}, overrides={"state_dir": "/tmp/y"}
    )
    assert s.interval == 10.0
    assert s.backoff_max == 120.0
    assert s.state_dir == "/tmp/y"


def test_enroll_token_is_not_a_settings_field(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('enroll_token = "abc"\n')
    with pytest.raises(SettingsError, match="unknown setting 'enroll_token'"):
        load_agent_settings(config_file=cfg, environ={})
    # The variable is read separately, and the flag wins over it.
    assert enroll_token_from(None, {"SM_AGENT_ENROLL_TOKEN": "from-env"}) == "from-env"
    assert enroll_token_from("from-flag", {"SM_AGENT_ENROLL_TOKEN": "from-env"}) == "from-flag"
    assert enroll_token_from(None, {}) is None
    assert enroll_token_from("  ", {}) is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("ws://127.0.0.1:8760", "ws://127.0.0.1:8760/ws/agent"),
        ("ws://127.0.0.1:8760/", "ws://127.0.0.1:8760/ws/agent"),
        ("http://10.0.0.1:8760", "ws://10.0.0.1:8760/ws/agent"),
        ("https://mon.example.com", "wss://mon.example.com/ws/agent"),
        ("HTTPS://mon.example.com/sm/", "wss://mon.example.com/sm/ws/agent"),
        ("wss://mon.example.com/ws/agent", "wss://mon.example.com/ws/agent"),
        ("127.0.0.1:8760", "ws://127.0.0.1:8760/ws/agent"),
        ("localhost:8760", "ws://localhost:8760/ws/agent"),
        ("ws://[::1]:8760", "ws://[::1]:8760/ws/agent"),
    ],
)
def test_url_normalisation(given: str, expected: str) -> None:
    assert normalize_core_url(given) == expected
    assert normalize_core_url(expected) == expected  # idempotent


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("ftp://h", "unsupported scheme"),
        ("ws://", "no host"),
        ("ws://h:99999", "bad port"),
        ("ws://h/?token=x", "query string"),
        ("", "empty"),
        ("wss://bob:pw@h", "no user:password"),
    ],
)
def test_bad_urls_are_refused(bad: str, why: str) -> None:
    with pytest.raises(SettingsError, match=why):
        normalize_core_url(bad)


def test_other_validation() -> None:
    for field, value in [("batch_size", "0"), ("max_inflight_batches", "0"), ("log_level", "LOUD")]:
        with pytest.raises(SettingsError, match=field):
            load_agent_settings(environ={f"SM_AGENT_{field.upper()}": value})
    with pytest.raises(SettingsError, match="backoff_max must be at least backoff_initial"):
        load_agent_settings(environ={"SM_AGENT_BACKOFF_MAX": "1s", "SM_AGENT_BACKOFF_INITIAL": "5s"})


def test_doc_fields_cover_every_field() -> None:
    assert set(AgentSettings.__doc_fields__) == set(AgentSettings.__struct_fields__)


# ---------------------------------------------------------------- the [exec] table


def test_exec_defaults_are_secure() -> None:
    s = load_agent_settings(environ={})
    assert s.exec.enabled is False
    assert s.exec.allow == [] and s.exec.deny == []
    assert s.exec.user == ""
    assert s.exec.max_runtime == 3600.0
    assert s.exec.max_output == 1 << 20
    assert s.exec.max_concurrent == 8
    assert "disabled" in DISABLED_MESSAGE and "[exec] enabled = false" in DISABLED_MESSAGE


def test_exec_from_toml_table_and_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        '[exec]\nenabled = true\nallow = ["uptime", "service restart *"]\ndeny = ["rm *"]\n'
        'max_runtime = "10m"\nmax_output = 4096\n'
    )
    s = load_agent_settings(
        config_file=cfg, environ={"SM_AGENT_EXEC_DENY": "reboot*, shutdown*", "SM_AGENT_EXEC_USER": "nobody"}
    )
    assert s.exec.enabled is True
    assert s.exec.allow == ["uptime", "service restart *"]
    assert s.exec.deny == ["reboot*", "shutdown*"]  # env beats file
    assert s.exec.max_runtime == 600.0
    assert s.exec.max_output == 4096
    assert s.exec.user == "nobody"
    env_only = load_agent_settings(environ={"SM_AGENT_EXEC_ENABLED": "yes", "SM_AGENT_EXEC_ALLOW": "df -h"})
    assert env_only.exec.enabled and env_only.exec.allow == ["df -h"]


@pytest.mark.parametrize(
    ("toml", "why"),
    [
        ("[exec]\nmax_runtime = 0\n", "exec.max_runtime must be above 0"),
        ("[exec]\nmax_concurrent = 0\n", "exec.max_concurrent must be at least 1"),
        ("[exec]\nmax_output = -1\n", "exec.max_output must be 0 or more"),
        ('[exec]\nallow = [" "]\n', "exec.allow: empty pattern"),
        ('[exec]\ndeny = ["[z-a]"]\n', "exec.deny: bad pattern"),
        ("[exec]\nsudo = true\n", "unknown setting exec.'sudo'"),
    ],
)
def test_exec_validation(tmp_path: Path, toml: str, why: str) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(toml)
    with pytest.raises(SettingsError, match=why.replace("(", r"\(").replace("[", r"\[")):
        load_agent_settings(config_file=cfg, environ={})


def test_exec_doc_fields_cover_every_field() -> None:
    assert set(ExecSettings.__doc_fields__) == set(ExecSettings.__struct_fields__)
    assert "exec" in AgentSettings.__doc_fields__


def test_core_fingerprint_is_normalised_and_needs_a_tls_url(tmp_path: Path) -> None:
    pin = "sha256:" + "0a" * 32
    # As `openssl x509 -fingerprint -sha256` prints it: upper case, colons, no prefix.
    pasted = ":".join(["0A"] * 32)
    s = load_agent_settings(
        environ={"SM_AGENT_CORE": "https://hub:8760", "SM_AGENT_CORE_FINGERPRINT": pasted}
    )
    assert s.core_fingerprint == pin
    with pytest.raises(SettingsError, match="core_fingerprint: not a certificate fingerprint"):
        load_agent_settings(
            environ={"SM_AGENT_CORE": "wss://hub", "SM_AGENT_CORE_FINGERPRINT": "sha256:beef"}
        )
    with pytest.raises(SettingsError, match=r"core_fingerprint is for a TLS core, but core is ws://hub"):
        load_agent_settings(environ={"SM_AGENT_CORE": "http://hub", "SM_AGENT_CORE_FINGERPRINT": pin})


def test_ca_file_must_be_readable_and_needs_a_tls_url(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    with pytest.raises(SettingsError, match=f"ca_file: {ca} is not a readable file"):
        load_agent_settings(environ={"SM_AGENT_CORE": "wss://hub"}, overrides={"ca_file": str(ca)})
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = load_agent_settings(environ={"SM_AGENT_CORE": "wss://hub"}, overrides={"ca_file": str(ca)})
    assert s.ca_file == str(ca)
    with pytest.raises(SettingsError, match="ca_file is for a TLS core"):
        load_agent_settings(environ={"SM_AGENT_CORE": "ws://hub"}, overrides={"ca_file": str(ca)})


def test_host_root_must_hold_a_host_procfs(tmp_path: Path) -> None:
    with pytest.raises(
        SettingsError, match=r"host_root: .*/proc/1/mounts is not readable; mount the host's /"
    ):
        load_agent_settings(environ={"SM_AGENT_HOST_ROOT": str(tmp_path)})
    (tmp_path / "proc" / "1").mkdir(parents=True)
    (tmp_path / "proc" / "1" / "mounts").write_text("")
    assert load_agent_settings(environ={"SM_AGENT_HOST_ROOT": f" {tmp_path}/ "}).host_root == str(tmp_path)
