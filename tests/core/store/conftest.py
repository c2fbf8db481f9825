"""A SampleStore with nodes 1 and 2, on SQLite (a file of its own) and on PostgreSQL (a database of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from servermanager.core.store.db import Database
from servermanager.core.store.samples import SampleStore
from tests.helpers.pg import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An open, migrated Database on each backend."""
    if request.param == "sqlite":
        db = Database(tmp_path / "s.db")
        await db.open()
        try:
            yield db
        finally:
            await db.close()
        return
    from servermanager.core.store.pg import PgDatabase

    async with fresh_database() as url:
        pg = PgDatabase(url)
        await pg.open()
        try:
            yield pg
        finally:
            await pg.close()


@pytest.fixture
async def store(backend_db: Database) -> SampleStore:
    await backend_db.execute(
        "INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', ?, 0), (2, 'm', ?, 0)",
        (b"\x00", b"\x01"),
    )
    return SampleStore(backend_db, flush_every=0.001)
