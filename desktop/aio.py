"""The one place the desktop app starts asyncio tasks: it keeps references and logs every failure."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

ErrorHook = Callable[[str, BaseException], None]


class Aio:
    """Spawns tasks on the running (qasync) loop.

    asyncio only keeps weak references to tasks, so a fire-and-forget task can be garbage
    collected mid-flight; and an exception in a task nobody awaits is only reported when the
    task is collected, if ever. Every task the GUI starts goes through here instead.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_error: list[ErrorHook] = []
        self._closed = False

    def on_error(self, hook: ErrorHook) -> None:
        """Call hook(task_name, exception) when a task fails; the GUI can show it to the user."""
        self._on_error.append(hook)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
        """Start coro as a task now; slots call this and return at once."""
        if self._closed:
            coro.close()
            raise RuntimeError("the task runner is closed")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("task %s failed", task.get_name(), exc_info=exc)
        for hook in self._on_error:
            try:
                hook(task.get_name(), exc)
            except Exception:
                log.exception("error hook failed")

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task still running and wait for them to unwind."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
