"""Per-second rates from monotonic counters, the one helper every collector shares."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any


class RateTracker:
    """Remembers the last reading of each named counter and turns the next one into a rate.

    Like Glances' `_manage_rate`: the first reading of a key has nothing to diff against, and a
    counter that went backwards was reset (reboot, driver reload, 32-bit wrap), so both give None
    instead of a made-up number. Time comes from a monotonic clock so wall-clock jumps (NTP, DST)
    never distort a rate; the clock is injectable so tests can control elapsed time exactly.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Any hashable key: a name ("eth0.rx"), or a tuple (a process's (pid, start time), counter).
        # key -> (value, clock reading); for rates(), the tuple of values read together.
        self._last: dict[Hashable, tuple[Any, float]] = {}

    def now(self) -> float:
        """One clock reading, so a collector can stamp a whole snapshot with the same instant."""
        return self._clock()

    def rate(self, key: Hashable, value: float, now: float | None = None) -> float | None:
        """Units per second of `key` since its previous reading, or None when there is none.

        Unrounded: the collector rounds every value by its metric table row, in one place.
        """
        t = self._clock() if now is None else now
        prev = self._last.get(key)
        self._last[key] = (value, t)
        if prev is None:
            return None
        prev_value, prev_t = prev
        elapsed = t - prev_t
        if elapsed <= 0 or value < prev_value:
            # Two readings at the same instant carry no rate; a smaller value means the counter
            # restarted, and the new value becomes the baseline for the next reading.
            return None
        return (value - prev_value) / elapsed

    def rates(
        self, key: Hashable, values: tuple[float | None, ...], now: float
    ) -> tuple[float | None, ...] | None:
        """The rates of several counters read at one instant, kept under one key: what rate()
        does for each, with one lookup (a process's CPU time and I/O counters, every second).

        None on the key's first reading (or when the counters read changed in number); in the
        tuple, None for a counter that was not read (None), or not read before, or went back.
        """
        prev = self._last.get(key)
        self._last[key] = (values, now)
        if prev is None:
            return None
        prev_values, prev_t = prev
        elapsed = now - prev_t
        if elapsed <= 0 or len(prev_values) != len(values):
            return None
        # A list made and turned into a tuple: cheaper than a generator, and this runs per process.
        return tuple(
            [
                None if v is None or p is None or v < p else (v - p) / elapsed
                for v, p in zip(values, prev_values, strict=True)
            ]
        )

    def retain(self, keys: Iterable[Hashable]) -> None:
        """Forget keys not in `keys`, so churning names (veth interfaces) cannot grow memory."""
        keep = keys if isinstance(keys, set | frozenset) else set(keys)
        for key in [k for k in self._last if k not in keep]:
            del self._last[key]

    def __contains__(self, key: object) -> bool:
        return key in self._last

    def __len__(self) -> int:
        return len(self._last)
