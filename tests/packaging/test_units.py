"""The systemd units: hardening scored by `systemd-analyze security`, the score kept in the docs, and units,
sysusers.d and tmpfiles.d files that agree on users and paths."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.packaging.conftest import REPO, need

UNITS = REPO / "packaging" / "systemd"
DOC = REPO / "docs" / "packaging.md"
NAMES = ["servermanager-core.service", "servermanager-agent.service"]


def unit_settings(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def exposure(name: str) -> float:
    analyze = need("systemd-analyze", "systemd")
    proc = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(UNITS / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout[-2000:] + proc.stderr
    return float(m.group(1))


@pytest.mark.parametrize("name", NAMES)
def test_security_score_is_ok_and_documented(name: str) -> None:
    score = exposure(name)
    assert score <= 4.9, f"{name}: exposure {score}, above systemd's OK band (4.9)"
    # The docs quote the score this systemd gives: a change to the hardening must update them.
    assert f"| `{name}` | {score:.1f} |" in DOC.read_text(), f"docs/packaging.md should say {score:.1f}"


@pytest.mark.parametrize(
    ("name", "user", "data_dir"),
    [
        ("servermanager-core.service", "servermanager", "/var/lib/servermanager"),
        ("servermanager-agent.service", "servermanager-agent", "/var/lib/servermanager-agent"),
    ],
)
def test_units_sysusers_and_tmpfiles_agree(name: str, user: str, data_dir: str) -> None:
    s = unit_settings(name)
    pkg = name.removesuffix(".service")
    assert s["User"] == [user] and s["Group"] == [user]
    # The user the unit runs as is the one sysusers.d creates (status=217/USER otherwise).
    sysusers = (REPO / "packaging/sysusers" / f"{pkg}.conf").read_text()
    assert re.search(
        rf"^u {re.escape(user)} - \".+\" {re.escape(data_dir)} /usr/sbin/nologin$", sysusers, re.M
    )
    tmpfiles = (REPO / "packaging/tmpfiles" / f"{pkg}.conf").read_text()
    assert re.search(rf"^d {re.escape(data_dir)} 0700 {re.escape(user)} {re.escape(user)} -$", tmpfiles, re.M)
    assert s["StateDirectory"] == [data_dir.removeprefix("/var/lib/")]
    assert any(data_dir in cmd for cmd in s["ExecStart"])
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert s["CapabilityBoundingSet"] == [""] and s["MemoryDenyWriteExecute"] == ["yes"]
    assert "RestartSec" in s and s["Restart"] == ["on-failure"]


def test_core_keeps_its_descriptor_limit_and_agent_sees_home() -> None:
    core, agent = unit_settings(NAMES[0]), unit_settings(NAMES[1])
    assert core["LimitNOFILE"] == ["65536"]
    assert core["ProtectHome"] == ["yes"]
    # statvfs() on /home still works read-only, so disk metrics keep /home; "yes" would hide it.
    assert agent["ProtectHome"] == ["read-only"]
    # The agent's polkit rule is written as root before the sandboxed agent starts.
    assert agent["ExecStartPre"] == [
        "-+/opt/servermanager/agent/bin/servermanager polkit-rule --config /etc/servermanager/agent.toml --install"
    ]
