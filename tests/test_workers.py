"""How `dev.py test` splits the suite over xdist workers: shared costly fixtures stay on one worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import one_worker_group

ROOT = Path(__file__).resolve().parents[1]
WIDE_SCOPE = re.compile(r"""@pytest\.fixture\([^)]*scope=["'](module|session)["']""")
# Session fixtures that each worker may well set up for itself: the desktop tests' Qt loop (one per
# process by nature) and the agent wheel (a few seconds, each worker in its own temp dir).
PER_WORKER = {"tests/desktop/conftest.py", "tests/conftest.py"}


def test_every_file_with_a_module_or_session_fixture_keeps_its_users_on_one_worker() -> None:
    files = sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "tests").rglob("*.py")
        if WIDE_SCOPE.search(p.read_text(encoding="utf-8"))
    )
    assert "tests/packaging/conftest.py" in files  # the deb packages: built once for several files
    unplaced = [f for f in files if f not in PER_WORKER and one_worker_group(f"{f}::test") is None]
    assert unplaced == [], "add them to tests/conftest.py's _ONE_WORKER"


def test_a_grouped_file_goes_whole_and_others_test_by_test() -> None:
    assert one_worker_group("tests/packaging/test_debs.py::test_control_fields[core]") == "packaging"
    assert one_worker_group("tests/packaging/test_install.py::test_x") == "packaging"
    assert one_worker_group("tests/packaging/test_desktop_bundle.py::test_y") == "desktop-bundle"
    assert one_worker_group("tests/core/test_watchdog.py::test_z") is None


CRASHING_SUITE = """
import os, signal
from pathlib import Path

import pytest


@pytest.mark.parametrize("i", range(10))
def test_x(i: int) -> None:
    flag = Path(__file__).with_name("crashed")
    if i == 7 and not flag.exists():
        flag.touch()
        os.kill(os.getpid(), signal.SIGSEGV)
"""


def test_a_crashed_worker_is_replaced_and_the_run_ends_with_its_test_failed(tmp_path: Path) -> None:
    """xdist 3.8's scope scheduler hung here: the replacement worker was sent finished units."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_xdist_make_scheduler\n")
    (tmp_path / "test_crash.py").write_text(CRASHING_SUITE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": ""}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::DeprecationWarning",
            "-q",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed, 9 passed" in run.stdout, run.stdout
    assert "crashed while running 'test_crash.py::test_x[7]'" in run.stdout, run.stdout
