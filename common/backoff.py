"""Jittered exponential backoff for reconnect loops (agent link, desktop live socket)."""

from __future__ import annotations

import random


def backoff_ceiling(attempt: int, initial: float, cap: float) -> float:
    """initial * 2**attempt, capped; the exponent is bounded so a long outage cannot overflow."""
    return min(cap, initial * 2.0 ** min(max(attempt, 0), 64))


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform over [0, ceiling], so a fleet that lost the core at once spreads out."""
    return (rng or random).uniform(0.0, backoff_ceiling(attempt, initial, cap))


class Backoff:
    """Attempt counter for reconnects; reset after a successful hand-shake, not a mere TCP connect."""

    def __init__(self, initial: float, cap: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.cap = cap
        self.attempt = 0
        self._rng = rng

    def next(self) -> float:
        delay = backoff_delay(self.attempt, self.initial, self.cap, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
