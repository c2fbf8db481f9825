"""The writer's transactions: BEGIN IMMEDIATE .. COMMIT under one lock, whole even when cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import aiosqlite

T = TypeVar("T")


class Transaction:
    """BEGIN IMMEDIATE .. COMMIT on the writer, rolled back whole on any error.

    BEGIN, COMMIT and ROLLBACK run to completion even when the awaiting task is cancelled (the
    core's shutdown cancels its jobs mid-commit): the statement runs in aiosqlite's thread
    regardless, and a cancelled await must not leave the lock released over an open transaction.
    """

    def __init__(self, con: aiosqlite.Connection, lock: asyncio.Lock) -> None:
        self.con = con
        self.lock = lock

    async def __aenter__(self) -> aiosqlite.Connection:
        await self.lock.acquire()
        try:
            await _to_completion(self.con.execute("BEGIN IMMEDIATE"))
        except BaseException:
            try:
                if self.con.in_transaction:
                    await _to_completion(self.con.execute("ROLLBACK"))
            finally:
                self.lock.release()
            raise
        return self.con

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                try:
                    await _to_completion(self.con.execute("COMMIT"))
                except BaseException:
                    if self.con.in_transaction:
                        await _to_completion(self.con.execute("ROLLBACK"))
                    raise
            elif self.con.in_transaction:
                await _to_completion(self.con.execute("ROLLBACK"))
        finally:
            self.lock.release()


async def _to_completion(aw: Awaitable[T]) -> T:
    """Await `aw` to its end however often this task is cancelled meanwhile; one cancel is re-raised after."""
    fut = asyncio.ensure_future(aw)
    cancelled = False
    while not fut.done():
        try:
            await asyncio.wait({fut})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not fut.cancelled():
            fut.exception()  # retrieved: the cancel, not the statement's error, is what the caller hears
        raise asyncio.CancelledError
    return fut.result()
