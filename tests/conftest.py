"""Shared fixtures: a real core on loopback with a real SQLite file, or just its database.

With SM_DEVKIT_POSTGRESQL set to a PostgreSQL server's URL (postgresql://postgres@127.0.0.1:5432),
every RunningCore (devkit/cores.py) and the `db` fixture are on a fresh PostgreSQL database of their
own instead, so the tests using them run on the other backend unchanged.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devkit.cores import RunningCore
from servermanager.core.store.db import Database
from tests.helpers.pg import create_database, drop_database


@pytest.fixture(scope="session", autouse=True)
def _drop_postgresql_databases() -> Iterator[None]:
    """The PostgreSQL databases of the session's cores (SM_DEVKIT_POSTGRESQL), dropped at its end."""
    yield
    if os.environ.get("SM_DEVKIT_POSTGRESQL"):
        import asyncio

        from devkit.cores import drop_postgresql_databases

        asyncio.run(drop_postgresql_databases())


@pytest.fixture
async def core_server(tmp_path: Path) -> AsyncIterator[RunningCore]:
    server = await RunningCore(tmp_path / "core").start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def real_core(tmp_path: Path) -> AsyncIterator[RunningCore]:
    """A core for real agents: agent_interval=0 lets each agent keep its own (fast) interval."""
    server = await RunningCore(tmp_path / "core", agent_interval=0.0).start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """The core's database, migrated and open, on a file of its own."""
    if not os.environ.get("SM_DEVKIT_POSTGRESQL"):
        database = Database(tmp_path / "core.db")
        await database.open()
        try:
            yield database
        finally:
            await database.close()
        return
    from servermanager.core.store.pg import PgDatabase

    url = await create_database()
    pg = PgDatabase(url)
    try:
        await pg.open()
        yield pg
    finally:
        await pg.close()
        await drop_database(url)


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
