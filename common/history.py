"""The history resolution policy: which stored resolution answers a time range (core and desktop)."""

from __future__ import annotations

from typing import Literal

Resolution = Literal["raw", "1m", "1h"]

# The core's default retention of each resolution (its settings can change them).
RETENTION_RAW = 48 * 3600.0
RETENTION_1M = 30 * 86400.0
RETENTION_1H = 2 * 365 * 86400.0
# The longest span each finer resolution answers: they bound the point count a chart has to draw.
RAW_MAX_SPAN = 6 * 3600.0
ONE_MINUTE_MAX_SPAN = 8 * 86400.0


def choose_resolution(
    start: float,
    end: float,
    now: float,
    retention_raw: float = RETENTION_RAW,
    retention_1m: float = RETENTION_1M,
) -> Resolution:
    """The finest stored resolution that still holds the whole of [start, end] and keeps the point
    count sane. The core answers a too-old range with no rows rather than an error, so choosing a
    coarser resolution for old ranges is what keeps charts filled."""
    span = end - start
    if span <= RAW_MAX_SPAN and start >= now - retention_raw:
        return "raw"
    if span <= ONE_MINUTE_MAX_SPAN and start >= now - retention_1m:
        return "1m"
    return "1h"
