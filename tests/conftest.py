"""Shared fixtures: a real core on loopback with a real SQLite file, or just its database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devkit.cores import RunningCore
from servermanager.core.store.db import Database


@pytest.fixture
async def core_server(tmp_path: Path) -> AsyncIterator[RunningCore]:
    server = await RunningCore(tmp_path / "core").start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """The core's database, migrated and open, on a file of its own."""
    database = Database(tmp_path / "core.db")
    await database.open()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture(scope="session")
def agent_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent package as a core without `agent_package` builds it (pip wheel of this tree), once per
    session; cores in tests get it through the setting, so each does not build its own."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from servermanager.core.install.package import PackageSource

    source = PackageSource("", tmp_path_factory.mktemp("agent-package"))
    # A thread of its own: the desktop tests' loop may count as running in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, source.get()).result().path
