"""The `servermanager` command line itself: its version, and a mistake reported in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from servermanager.cli import main
from servermanager.common import __version__
from tests.helpers.procs import cli


def test_version_is_printed_by_the_script_and_by_python_m() -> None:
    r = cli("--version")  # python -m servermanager
    assert (r.returncode, r.stdout.strip()) == (0, f"servermanager {__version__}")
    script = Path(sys.executable).with_name("servermanager")  # the console script beside it
    r2 = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert (r2.returncode, r2.stdout) == (0, r.stdout)


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "core.toml"
    cfg.write_text("retention_raw = 'forever'\n")
    r = cli("core", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2
    assert "retention_raw" in r.stderr and "Traceback" not in r.stderr


def test_an_unknown_subcommand_is_a_usage_error() -> None:
    r = cli("bogus")
    assert r.returncode == 2 and "invalid choice: 'bogus'" in r.stderr and "Traceback" not in r.stderr


def test_the_demo_stays_on_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    # It serves plain HTTP and prints the admin password: a network address is refused, with why.
    assert main(["demo", "--listen", "0.0.0.0:8760", "--no-desktop"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
