"""The points a chart holds: preallocated float64 columns with a sliding window, for a cheap live tail."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


class SeriesBuffer:
    """Preallocated float64 columns with a sliding [start, stop) window.

    Appending writes one slot; when the buffer's end is reached the live window is moved to the front
    (if it fills at most half) or the buffer doubles, so append is amortised O(1) and memory stays
    within twice the largest window ever held.
    """

    def __init__(self, n_series: int, capacity: int = 512) -> None:
        self.x: FloatArray = np.empty(capacity, dtype=np.float64)
        self.y: FloatArray = np.empty((n_series, capacity), dtype=np.float64)
        self.start = 0
        self.stop = 0

    @property
    def capacity(self) -> int:
        return int(self.x.shape[0])

    def __len__(self) -> int:
        return self.stop - self.start

    def replace(self, x: FloatArray, y: FloatArray) -> None:
        n = int(x.shape[0])
        # Keep headroom for the live tail that may follow a history load.
        cap = max(512, n + n // 4 + 64)
        self.x = np.empty(cap, dtype=np.float64)
        self.y = np.empty((y.shape[0], cap), dtype=np.float64)
        self.x[:n] = x
        self.y[:, :n] = y
        self.start, self.stop = 0, n

    def clear(self) -> None:
        self.start = self.stop = 0

    def append(self, t: float, row: FloatArray) -> None:
        if self.stop == self.capacity:
            n = len(self)
            if n <= self.capacity // 2:
                # numpy copies overlapping slices correctly.
                self.x[:n] = self.x[self.start : self.stop]
                self.y[:, :n] = self.y[:, self.start : self.stop]
            else:
                x = np.empty(self.capacity * 2, dtype=np.float64)
                y = np.empty((self.y.shape[0], self.capacity * 2), dtype=np.float64)
                x[:n] = self.x[self.start : self.stop]
                y[:, :n] = self.y[:, self.start : self.stop]
                self.x, self.y = x, y
            self.start, self.stop = 0, n
        self.x[self.stop] = t
        self.y[:, self.stop] = row
        self.stop += 1

    def drop_before(self, t: float) -> None:
        """Forget points older than t: x is sorted, so this is a binary search."""
        self.start += int(np.searchsorted(self.x[self.start : self.stop], t, side="left"))

    def xs(self) -> FloatArray:
        return self.x[self.start : self.stop]

    def ys(self) -> FloatArray:
        return self.y[:, self.start : self.stop]

    def last_x(self) -> float | None:
        return float(self.x[self.stop - 1]) if self.stop > self.start else None


def as_float_array(values: Sequence[float | None] | FloatArray | None, n: int) -> FloatArray:
    """None becomes NaN (numpy does that for float64); a missing series is all NaN."""
    if values is None:
        return np.full(n, np.nan, dtype=np.float64)
    a = np.asarray(values, dtype=np.float64)
    if a.shape != (n,):
        raise ValueError(f"series has {a.shape[0] if a.ndim else 0} points, timestamps have {n}")
    return a
