"""Stopping asyncio tasks for good, even a task that a library's wait_for() let carry on after a cancel."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

# Seconds between one cancel and the next of a task that has not ended.
RECANCEL_EVERY = 0.5
# After this long a task still running is named in a log line (once), and still waited for.
SLOW_STOP = 10.0


async def stop_tasks(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel `tasks` and wait for each to end, cancelling again any still running a moment later.

    On Python 3.11 asyncio.wait_for() swallows a cancel that arrives as the operation it waits for
    completes (CPython gh-86296, fixed in 3.12). redis-py sends every command through it, so a
    task cancelled at that moment carried on into its next wait, and `task.cancel(); await task`
    waited for it forever: a core's shutdown hung with its loop idle (a CI run, and about 1 in 20 runs of
    the shared-database cluster tests). An exception other than the cancel is raised, as awaiting
    the task would.
    """
    pending = {t for t in tasks if t is not None and not t.done()}
    waited = 0.0
    said = False
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
        waited += RECANCEL_EVERY
        if pending and waited >= SLOW_STOP and not said:
            said = True
            names = ", ".join(sorted(t.get_name() for t in pending))
            log.warning("still stopping after %gs: %s", SLOW_STOP, names)
    for ended in tasks:
        if ended is not None and not ended.cancelled() and (exc := ended.exception()) is not None:
            raise exc
