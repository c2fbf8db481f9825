"""The [logs] table: precise errors at start for bad entries, and the allowlist's refusals on real paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from servermanager.agent.logread.config import Allowlist, LogRefused, LogsSettings
from servermanager.agent.settings import load_agent_settings
from servermanager.common.settings import SettingsError


def settings(tmp_path: Path, body: str) -> LogsSettings:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "state"}"\n[logs]\n{body}\n')
    return load_agent_settings(config_file=cfg, environ={}).logs


def test_defaults_and_a_good_config(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("x\n")
    s = settings(tmp_path, f'files = ["{tmp_path}/a.log", "{tmp_path}/*.log"]\nmax_follows = 2')
    assert s.journal is True and s.max_follows == 2
    assert s.files == [f"{tmp_path}/a.log", f"{tmp_path}/*.log"]
    assert LogsSettings().files == []  # nothing is allowed unless listed


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("var/log/syslog", "is a relative path; use an absolute one"),
        ("{tmp}/missing.log", "the file does not exist or cannot be read"),
        ("{tmp}/nodir/*.log", "its directory {tmp}/nodir does not exist"),
        ("{tmp}/../etc/passwd", "is not a normalised path"),
        ("{tmp}", "is not a regular file"),
        ("", "empty entry"),
    ],
)
def test_bad_entries_are_precise_errors_at_start(tmp_path: Path, entry: str, words: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings(tmp_path, f'files = ["{entry.format(tmp=tmp_path)}"]')
    assert words.format(tmp=tmp_path) in str(err.value)
    assert str(err.value).startswith("setting logs.files:")


def test_a_glob_that_matches_nothing_yet_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(tmp_path, f'files = ["{tmp_path}/*.log"]')
    assert s.files == [f"{tmp_path}/*.log"]
    assert "matches no file yet" in caplog.text


def test_bad_limits(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"logs\.max_lines_per_request must be 1 to 10000"):
        settings(tmp_path, "max_lines_per_request = 0")
    with pytest.raises(SettingsError, match=r"logs\.journal_directory"):
        settings(tmp_path, 'journal_directory = "/nonexistent/journal"')


def test_allowlist_refuses_what_it_does_not_name(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    (logs / "sub").mkdir(parents=True)
    (logs / "app.log").write_text("ok\n")
    (logs / "sub" / "deep.log").write_text("deep\n")
    secret = tmp_path / "secret"
    secret.write_text("s\n")
    os.symlink(secret, logs / "evil.log")
    os.symlink(logs / "app.log", logs / "alias.log")  # a symlink inside the allowlist is fine
    allow = Allowlist([f"{logs}/*.log"])
    assert allow.resolve(f"{logs}/app.log") == f"{logs}/app.log"
    assert allow.resolve(f"{logs}/alias.log") == f"{logs}/app.log"
    refusals = {
        f"{logs}/sub/deep.log": "not in this agent's [logs] files allowlist",  # * does not cross '/'
        str(secret): "not in this agent's [logs] files allowlist",
        f"{logs}/../secret": "absolute, normalised",
        "secret": "absolute, normalised",
        f"{logs}/evil.log": "outside the [logs] files allowlist",
        f"{logs}/gone.log": "No such file",
    }
    for path, words in refusals.items():
        with pytest.raises(LogRefused) as err:
            allow.resolve(path)
        assert words in str(err.value), path
    assert allow.files() == [f"{logs}/alias.log", f"{logs}/app.log"]
    with pytest.raises(LogRefused, match="files list is empty"):
        Allowlist([]).resolve(f"{logs}/app.log")


def test_allowlisted_directory_behind_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "data"
    real.mkdir()
    (real / "app.log").write_text("x\n")
    os.symlink(real, tmp_path / "varlog")
    allow = Allowlist([f"{tmp_path}/varlog/*.log"])
    assert allow.resolve(f"{tmp_path}/varlog/app.log") == f"{real}/app.log"
