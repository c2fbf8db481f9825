"""The desktop app's packaging folder and a check of freedesktop.org .desktop files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DESKTOP = Path(__file__).resolve().parents[2] / "packaging" / "desktop"


def validate(desktop_file: Path) -> None:
    """desktop-file-validate finds no error, warning or hint (.ci/run installs desktop-file-utils)."""
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.skip("desktop-file-validate is not installed (Debian: desktop-file-utils)")
    done = subprocess.run([tool, desktop_file], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr
