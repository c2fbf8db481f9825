"""Waiting on conditions instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll a cheap synchronous condition until it holds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_until(
    fn: Callable[[], Awaitable[T]], ok: Callable[[T], bool], timeout: float = 10.0, what: str = "condition"
) -> T:
    """Poll an async probe until its value satisfies `ok`; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {value!r}")
        await asyncio.sleep(0.02)


def wait_sync(
    cond: Callable[[], object], timeout: float = 20.0, what: str = "condition", interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
