"""Counting a connection's trips to aiosqlite's thread: each one's result waits for a turn of the event loop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import aiosqlite


@contextlib.contextmanager
def counted_trips(con: aiosqlite.Connection) -> Iterator[list[int]]:
    """Within the block, count[0] is how many calls went to con's thread (aiosqlite's _execute)."""
    real = con._execute
    count = [0]

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return await real(fn, *args, **kwargs)

    con._execute = counting  # type: ignore[method-assign]
    try:
        yield count
    finally:
        del con._execute  # the class's own again
