"""The wheel `packaging/build.py --only wheel` makes is built from a copy: the source tree gets nothing."""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.packaging.conftest import BUILD_TIMEOUT, REPO


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_building_the_wheel_writes_nothing_into_the_source_tree(tmp_path: Path) -> None:
    # pip wheel on the tree itself writes build/lib, build/bdist.* and an .egg-info there (another
    # build of the same tree at the same time would read them half-written).
    start = time.time()
    proc = subprocess.run(
        [sys.executable, str(REPO / "packaging" / "build.py"), "--only", "wheel", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheels = list(tmp_path.iterdir())
    assert len(wheels) == 1 and wheels[0].name.startswith("servermanager-") and wheels[0].suffix == ".whl"
    names = zipfile.ZipFile(wheels[0]).namelist()
    # What the copy must carry for a whole wheel: the packages through their links, package data,
    # the agent's unit (a link into packaging/systemd) and the license.
    for needed in (
        "servermanager/core/app.py",
        "servermanager/desktop/resources/themes/dark.qss",
        "servermanager/core/install/servermanager-agent.service",
    ):
        assert needed in names
    assert any(n.endswith("/licenses/LICENSE") or n.endswith("/LICENSE") for n in names), names[-10:]
    build = REPO / "build"
    outputs = [
        *(build / "lib").rglob("*"),
        *build.glob("bdist.*"),
        *REPO.glob("*.egg-info"),
        *REPO.glob("*.egg-info/*"),
    ]
    assert [p for p in outputs if p.stat().st_mtime >= start] == []
