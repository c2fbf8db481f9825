"""How `dev.py test` splits the suite over xdist workers: shared costly fixtures stay on one worker."""

from __future__ import annotations

import re
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
