"""The outbox's shutdown: the dispatcher stops when cancelled, whatever woke it just before."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from devkit.cores import RunningCore
from servermanager.core.alerts.channels import Channels
from servermanager.core.alerts.outbox import Outbox
from servermanager.core.datadir import DB_FILENAME
from servermanager.core.settings import CoreSettings
from servermanager.core.store.db import Database
from tests.core.alerts.helpers import Rig
from tests.helpers.wait import wait_for, wait_until


async def test_a_wake_up_just_before_the_cancel_does_not_keep_the_dispatcher_running(db: Database) -> None:
    """A notify() (a commit with outbox rows, a send that ended) lands an instant before shutdown
    cancels the dispatcher. The wake-up may complete a loop turn or two before the cancel reaches
    the task; the cancel must win every time, or the core's shutdown waits on it forever."""
    outbox = Outbox(db, Channels(db), CoreSettings())
    for turns in range(6):  # where the cancel lands relative to the wake-up's completion
        task = asyncio.create_task(outbox.run())
        # Asleep between passes: the first pass found nothing due and it waits for a wake-up.
        await wait_for(lambda: outbox._wake._waiters, what="the dispatcher asleep")
        outbox.notify()
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5.0)
        if not done:  # a second cancel reaches it while it sleeps: the test ends, and fails
            task.cancel()
            await asyncio.wait({task})
        assert done, f"the dispatcher ignored a cancel {turns} loop turns after a wake-up"
        assert task.cancelled()


async def test_a_core_stopped_as_a_notification_is_written_stops(tmp_path: Path) -> None:
    """A node is down, its offline alert firing; the core is stopped just as a repeat falls due.
    The engine's last flush writes the row and wakes the dispatcher, which the shutdown cancels
    right after: the core stops, and the row waits in the database for the next start."""
    server = RunningCore(tmp_path / "core", alert_repeat_interval=60)

    async def repeat_due_at_shutdown(app: web.Application) -> AsyncIterator[None]:
        yield
        # Unwound just before the alert engine's context: the sweep finds the repeat due.
        server.core.alerts.tick(time.time() + 120)

    server.app.cleanup_ctx.append(repeat_due_at_shutdown)
    await server.start()
    try:
        rig = await Rig(server).start()
        ch = await rig.channel("hook")
        await rig.rule(name="down", metric="offline", channels=[ch])
        await rig.agent.close()
        await wait_until(rig.deliveries, lambda d: len(d) == 1, what="the offline alert's firing row")
    except BaseException:
        await server.stop()
        raise
    stop = asyncio.create_task(server.stop())
    done, _ = await asyncio.wait({stop}, timeout=20.0)
    if not done:  # cancel the dispatcher again so that the stop ends, then fail
        for task in asyncio.all_tasks():
            if task.get_name() == "alert-outbox":
                task.cancel()
    await stop
    assert done, "the core's shutdown hung: the dispatcher outlived its cancel"
    con = sqlite3.connect(tmp_path / "core" / DB_FILENAME)
    try:
        rows = con.execute("SELECT status, state FROM alert_deliveries ORDER BY id").fetchall()
    finally:
        con.close()
    assert rows == [("firing", "pending"), ("firing", "pending")]  # the repeat, written at shutdown
