"""Per-second rates from monotonic counters, the one helper every collector shares."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable


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
        self._last: dict[Hashable, tuple[float, float]] = {}  # key -> (value, clock reading)

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

    def retain(self, keys: Iterable[Hashable]) -> None:
        """Forget keys not in `keys`, so churning names (veth interfaces) cannot grow memory."""
        keep = set(keys)
        for key in [k for k in self._last if k not in keep]:
            del self._last[key]

    def __contains__(self, key: object) -> bool:
        return key in self._last

    def __len__(self) -> int:
        return len(self._last)
