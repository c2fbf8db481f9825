"""The agent package: built once from this core's source and kept, or the wheel `agent_package` names."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devkit.cores import RunningCore
from servermanager.core.install.package import PackageError, PackageSource


async def test_a_built_package_is_kept_and_carries_the_scripts_and_the_unit(agent_wheel: Path) -> None:
    names = zipfile.ZipFile(agent_wheel).namelist()
    for name in ("install.sh", "install.ps1", "servermanager-agent.service"):
        assert f"servermanager/core/install/{name}" in names
    unit = zipfile.ZipFile(agent_wheel).read("servermanager/core/install/servermanager-agent.service")
    shipped = Path(__file__).parents[3] / "packaging" / "systemd" / "servermanager-agent.service"
    assert unit == shipped.read_bytes()  # the link's target, not the link
    # The same data dir (the fixture's) on a later start: found in the cache, not built again.
    before = os.stat(agent_wheel).st_mtime_ns
    again = await PackageSource("", agent_wheel.parents[2]).get()
    assert again.path == agent_wheel and os.stat(agent_wheel).st_mtime_ns == before


async def test_an_agent_package_setting_that_is_no_wheel_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"setting agent_package: .*missing.whl is not a wheel file"):
        await PackageSource(str(tmp_path / "missing.whl"), tmp_path).get()


@pytest.fixture
async def misconfigured(tmp_path: Path) -> AsyncIterator[RunningCore]:
    (tmp_path / "agent.tar.gz").write_bytes(b"not a wheel")
    server = await RunningCore(tmp_path / "core", agent_package=str(tmp_path / "agent.tar.gz")).start()
    try:
        yield server
    finally:
        await server.stop()


async def test_without_a_package_the_scripts_say_why(misconfigured: RunningCore) -> None:
    status, body = await misconfigured.request(
        "GET", "/api/v1/agent/install.sh", await misconfigured.enroll_token()
    )
    assert status == 503 and body["error"]["code"] == "agent_package_unavailable"
    assert "agent.tar.gz is not a wheel file" in body["error"]["message"]


async def test_a_wheel_shipped_beside_the_core_is_served_without_a_setting(
    agent_wheel: Path, tmp_path: Path
) -> None:
    from servermanager.common import __version__

    shipped = tmp_path / "venv" / "share" / "servermanager"
    shipped.mkdir(parents=True)
    (shipped / "servermanager-0.0.1-py3-none-any.whl").write_bytes(b"another version: not this one")
    wheel = shipped / f"servermanager-{__version__}-py3-none-any.whl"
    shutil.copyfile(agent_wheel, wheel)
    found = await PackageSource("", tmp_path / "data", prefix=str(tmp_path / "venv")).get()
    assert found.path == wheel
    assert not (tmp_path / "data").exists()  # nothing built
