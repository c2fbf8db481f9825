"""What a running agent lets its owner watch: the Stats counters and the Pulse fired on every change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


class Pulse:
    """Wakes every waiter whenever something observable changed (counters, state)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        # Swap in a fresh event so waiters that re-check and wait again do not spin.
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once predicate() holds; bound it with `async with asyncio.timeout(...)`."""
        while not predicate():
            await self._event.wait()


@dataclass
class Stats:
    """Counters since this process started; read them, never write them from outside."""

    samples_spooled: int = 0  # appended to the spool by this agent's sampler
    sample_errors: int = 0  # ticks lost to a failing collector or spool
    connects: int = 0  # WebSocket openings
    tls_refusals: int = 0  # cores refused for their certificate (pin mismatch, untrusted), before any frame
    welcomes: int = 0  # handshakes the core accepted
    batches_sent: int = 0
    samples_sent: int = 0  # including resends after a reconnect
    batches_acked: int = 0
    samples_acked: int = 0  # committed by the core and deleted from the spool
    samples_rejected: int = 0  # refused by the core (e.g. clock skew) and deleted
    samples_discarded: int = 0  # too big for one frame, dropped undelivered
    last_acked_seq: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    core_errors: int = 0  # error frames from the core
    invalid_frames: int = 0  # frames from the core we could not decode
