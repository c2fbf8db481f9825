"""packaging/agent.toml.example: every setting is there, commented out, and the file loads as written and uncommented."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from servermanager.agent.containers import ContainersSettings
from servermanager.agent.hardware import HardwareSettings
from servermanager.agent.logread.config import LogsSettings
from servermanager.agent.plugins.config import CheckSettings, CustomSettings, ScrapeSettings
from servermanager.agent.settings import (
    AgentSettings,
    ExecSettings,
    IncidentSettings,
    ProcessesSettings,
    load_agent_settings,
)
from tests.packaging.conftest import REPO

EXAMPLE = REPO / "packaging" / "agent.toml.example"
# Placeholders that name files which do not exist here; the rest of the example loads as written.
PLACEHOLDERS = ("core_fingerprint", "ca_file", "trusted_keys_file")


def sections() -> dict[str, set[str]]:
    """table ('' for the top) -> the keys the example shows, commented out."""
    found: dict[str, set[str]] = {"": set()}
    table = ""
    for line in EXAMPLE.read_text().splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line) or re.fullmatch(r"# \[\[(\w+)\]\]", line):
            table = m.group(1)
            found[table] = set()
        elif m := re.fullmatch(r"# (\w+) = .+", line):
            found[table].add(m.group(1))
    return found


def test_every_setting_is_shown() -> None:
    shown = sections()
    tables = {"exec", "incident", "logs", "processes", "containers", "hardware", "custom", "scrape", "check"}
    top = {f for f in AgentSettings.__struct_fields__ if f not in tables}
    assert shown[""] == top
    assert shown["exec"] == set(ExecSettings.__struct_fields__)
    assert shown["incident"] == set(IncidentSettings.__struct_fields__)
    assert shown["logs"] == set(LogsSettings.__struct_fields__)
    assert shown["processes"] == set(ProcessesSettings.__struct_fields__)
    assert shown["containers"] == set(ContainersSettings.__struct_fields__)
    assert shown["hardware"] == set(HardwareSettings.__struct_fields__)
    assert shown["custom"] == set(CustomSettings.__struct_fields__)
    assert shown["scrape"] == set(ScrapeSettings.__struct_fields__)
    assert shown["check"] == set(CheckSettings.__struct_fields__)


def test_as_shipped_it_changes_nothing() -> None:
    assert load_agent_settings(config_file=EXAMPLE, environ={}) == load_agent_settings(environ={})


def test_uncommented_it_loads(tmp_path: Path) -> None:
    text = re.sub(r"(?m)^# (\w+ = .+|\[\[\w+\]\])$", r"\1", EXAMPLE.read_text())
    text = re.sub(rf"(?m)^({'|'.join(PLACEHOLDERS)}) = .+$", "", text)
    config = tmp_path / "agent.toml"
    config.write_text(text)
    settings = load_agent_settings(config_file=config, environ={})
    # The shown values are the defaults, but for the examples of allow and deny.
    defaults = load_agent_settings(environ={})
    assert settings.exec.allow and settings.exec.deny
    settings.exec.allow, settings.exec.deny = [], []
    # One example entry of each array of tables, all valid as written.
    assert [len(settings.custom), len(settings.scrape), len(settings.check)] == [1, 1, 1]
    settings.custom, settings.scrape, settings.check = [], [], []
    settings.state_dir = defaults.state_dir
    assert msgspec.to_builtins(settings) == msgspec.to_builtins(defaults)
