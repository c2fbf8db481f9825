"""The alert engine's writer under steady churn: sync() waits for the changes made before it, not
for every change that keeps arriving while it waits (an API call once waited minutes for that)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, cast

from servermanager.core.alerts.engine import AlertEngine
from servermanager.core.bus import Bus
from servermanager.core.nodes import Nodes
from servermanager.core.settings import CoreSettings
from servermanager.core.store.db import Database


class _SlowTransaction:
    """A real transaction that takes 50 ms: long enough for more changes to queue behind it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __aenter__(self) -> Any:
        con = await self.inner.__aenter__()
        await asyncio.sleep(0.05)
        return con

    async def __aexit__(self, *exc: Any) -> None:
        await self.inner.__aexit__(*exc)


async def test_sync_returns_while_changes_keep_coming(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.db")
    await db.open()
    await db.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY)")
    real = db.transaction
    db.transaction = lambda: _SlowTransaction(real())  # type: ignore[method-assign]
    engine = AlertEngine(db, cast(Nodes, None), Bus(), CoreSettings())  # the writer needs no nodes
    writer = asyncio.create_task(engine._writer())
    stop = asyncio.Event()
    made = 0

    async def churn() -> None:  # a change every 5 ms, up to 2,000 (10 s) unless the test ends first
        nonlocal made
        while not stop.is_set() and made < 2000:
            made += 1
            engine._sql("INSERT INTO kv (k) VALUES (?)", made)
            await asyncio.sleep(0.005)

    producer = asyncio.create_task(churn())
    try:
        await asyncio.sleep(0.2)
        before = made
        await asyncio.wait_for(engine.sync(), 60)  # a guard against a hang, not a measurement
        row = await db.fetchone("SELECT count(*) FROM kv WHERE k <= ?", (before,))
        assert row[0] == before  # everything made before sync() is committed when it returns
        # It waited for the batch in flight and the next one (a few dozen changes), not for the
        # churn to stop (the old "until the queue is empty" returned only after all 2,000).
        assert not producer.done() and made < 1000
    finally:
        stop.set()
        await producer
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await engine._flush()
        row = await db.fetchone("SELECT count(*) FROM kv")
        assert row[0] == made  # and nothing was lost
        await db.close()
