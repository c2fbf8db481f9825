"""A SampleStore on its own database file, with nodes 1 and 2."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from servermanager.core.store.db import Database
from servermanager.core.store.samples import SampleStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SampleStore]:
    db = Database(tmp_path / "s.db")
    await db.open()
    await db.execute(
        "INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', x'00', 0), (2, 'm', x'01', 0)"
    )
    yield SampleStore(db, flush_every=0.001)
    await db.close()
