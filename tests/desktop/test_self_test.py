"""`servermanager desktop --self-test`: the main window opens with no display, core, keyring or user settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from servermanager.common import __version__

REPO = Path(__file__).resolve().parents[2]


def run_self_test(home: Path, code: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The source tree's CLI in a process of its own: no display, the keyring that refuses every
    call, and a home of its own so the user's settings can be neither read nor written."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM") and not k.startswith(("SM_", "XDG_"))
    }
    environ.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        **env,
    )
    argv = ["-m", "servermanager", "desktop", "--self-test"] if code is None else ["-c", code]
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_self_test_opens_the_window_offscreen_without_core_or_keyring(tmp_path: Path) -> None:
    done = run_self_test(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--self-test ok: main window shown" in done.stdout
    # No QT_QPA_PLATFORM and no display: the self-test chose offscreen itself.
    assert "(offscreen, Qt " in done.stdout
    # Throwaway settings: nothing of the app's lands in the user's config folder.
    config = tmp_path / "config"
    assert not config.exists() or not any(config.rglob("*Server*")), sorted(config.rglob("*"))


def test_self_test_takes_an_empty_platform_for_none(tmp_path: Path) -> None:
    # QT_QPA_PLATFORM= (set, but empty) asks for no platform: Qt would try X11 and abort.
    done = run_self_test(tmp_path, QT_QPA_PLATFORM="")
    assert done.returncode == 0, done.stderr
    assert "(offscreen, Qt " in done.stdout


def test_self_test_keeps_the_platform_it_is_given(tmp_path: Path) -> None:
    done = run_self_test(tmp_path, QT_QPA_PLATFORM="minimal")
    assert done.returncode == 0, done.stderr
    assert "(minimal, Qt " in done.stdout


@pytest.mark.parametrize("module", ["PySide6", "qasync"])
def test_self_test_without_the_desktop_libraries_fails_with_one_line(tmp_path: Path, module: str) -> None:
    # As in an install without the [desktop] extra: the import fails, and that is all it says.
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from servermanager.cli import main\n"
        "sys.exit(main(['desktop', '--self-test']))\n"
    )
    done = run_self_test(tmp_path, code)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("the desktop app is not available in this install: ")


def test_the_desktop_command_line_tells_its_version(tmp_path: Path) -> None:
    # The frozen bundle's executable is this command line (packaging/desktop/servermanager_desktop.py).
    done = run_self_test(tmp_path, "from servermanager.desktop.main import cli; cli(['--version'])")
    assert (done.returncode, done.stdout.strip()) == (0, f"servermanager desktop {__version__}")
