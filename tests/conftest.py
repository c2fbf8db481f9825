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
