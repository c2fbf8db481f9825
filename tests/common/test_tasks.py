"""stop_tasks: a task that carried on after its cancel is cancelled again until it ends."""

from __future__ import annotations

import asyncio
import sys

import pytest

from servermanager.common.tasks import stop_tasks


async def _swallowing_wait_for(ready: asyncio.Event, done: asyncio.Future[None]) -> None:
    """A loop like the Redis sender's: an operation awaited through wait_for(), then a wait for more
    work. `done` completes in the same loop turn as the cancel, which is when Python 3.11's
    wait_for() returns its result instead of raising CancelledError."""
    while True:
        try:
            await asyncio.wait_for(done, 5.0)
        except asyncio.CancelledError:
            raise
        ready.set()
        await asyncio.Event().wait()  # the next wait, for work that never comes


async def test_a_task_that_carried_on_after_its_cancel_is_stopped() -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ready = asyncio.Event()
    task = asyncio.create_task(_swallowing_wait_for(ready, done))
    await asyncio.sleep(0)  # the task is inside wait_for()
    done.set_result(None)
    task.cancel()
    for _ in range(10):
        if ready.is_set() or task.done():
            break
        await asyncio.sleep(0)
    if sys.version_info < (3, 12):
        # The bug itself: the cancel was lost and the task went on to its next wait.
        assert ready.is_set() and not task.done()
    # Whether this interpreter's wait_for() swallowed the first cancel or not, stop_tasks ends it.
    async with asyncio.timeout(5):
        await stop_tasks(task)
    assert task.cancelled()


async def test_one_cancel_that_is_swallowed_is_what_stop_tasks_mends() -> None:
    """The same task stopped the old way, cancel once and wait: it never ends if the cancel was lost."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed == 0:
                    swallowed += 1  # a library caught it and carried on
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await asyncio.shield(task)
    assert not task.done() and swallowed == 1
    async with asyncio.timeout(5):
        await stop_tasks(task)
    assert task.cancelled()


async def test_an_error_the_task_ended_with_is_raised() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken"):
        await stop_tasks(task, None)
