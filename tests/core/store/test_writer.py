"""The group-commit writer on a real SQLite file: many batches share a commit, each acknowledged after it."""

from __future__ import annotations

import asyncio

from servermanager.core.store.samples import SampleStore
from tests.helpers.store import make_samples


async def test_many_batches_share_one_commit(store: SampleStore) -> None:
    runner = asyncio.create_task(store.run())
    try:
        t0 = 1_700_000_000.0
        await asyncio.gather(
            *(store.store(1, make_samples(t0 + i * 10, 5, 1.0, seq0=i * 5 + 1)) for i in range(20))
        )
    finally:
        runner.cancel()
    assert store.rows_written == 100
    assert store.commits < 20
    assert await store.seqs(1) == list(range(1, 101))
