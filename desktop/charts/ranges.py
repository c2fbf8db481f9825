"""The time ranges a chart offers, and the history request (span, resolution, point cap) each one makes."""

from __future__ import annotations

from dataclasses import dataclass

from servermanager.common.history import Resolution, choose_resolution

LIVE_WINDOW = 300.0
# Points per series a chart asks for on a long range: the core merges rows into at most this
# many buckets (avg, min, max). A chart is a few hundred to two thousand pixels wide, and its
# min-max band folds to one bin per two pixels, so more points only cost transfer and paint time.
CHART_POINTS = 1500
# Seconds per row of each rollup resolution.
ROLLUP_STEP: dict[str, float] = {"1m": 60.0, "1h": 3600.0}


@dataclass(frozen=True)
class ChartRange:
    """A time range the user can pick: a span ending now (`span`), or a fixed custom [start, end]."""

    key: str
    label: str  # on the chart panel's button
    span: float | None = None
    start: float | None = None
    end: float | None = None
    live: bool = False
    title: str = ""  # in the settings dialog's choice of the default range

    @classmethod
    def custom(cls, start: float, end: float) -> ChartRange:
        if not end > start:
            raise ValueError(f"custom range must end after it starts ({start} >= {end})")
        return cls(key="custom", label="Custom", start=float(start), end=float(end))

    @property
    def is_custom(self) -> bool:
        return self.span is None


@dataclass(frozen=True)
class HistoryRequest:
    """What to ask GET /nodes/{id}/metrics for: never resolution "auto", so the app gets what it draws."""

    start: float
    end: float
    resolution: Resolution
    points: int | None = None  # the core merges rows into at most this many; None: every row


LIVE_5M = ChartRange("live", "Live 5 min", span=LIVE_WINDOW, live=True, title="Live (5 min)")
LAST_1H = ChartRange("1h", "1 h", span=3600.0, title="1 hour")
LAST_24H = ChartRange("24h", "24 h", span=86400.0, title="24 hours")
LAST_7D = ChartRange("7d", "7 d", span=7 * 86400.0, title="7 days")
LAST_30D = ChartRange("30d", "30 d", span=30 * 86400.0, title="30 days")
PRESET_RANGES: tuple[ChartRange, ...] = (LIVE_5M, LAST_1H, LAST_24H, LAST_7D, LAST_30D)
_PRESETS_BY_KEY = {r.key: r for r in PRESET_RANGES}


def preset(key: str) -> ChartRange:
    """The preset range with this key ("live", "1h", "24h", "7d", "30d"), e.g. from a setting."""
    try:
        return _PRESETS_BY_KEY[key]
    except KeyError:
        raise KeyError(f"no chart range {key!r}; known: {', '.join(_PRESETS_BY_KEY)}") from None


def request_for(rng: ChartRange, now: float, points: int = CHART_POINTS) -> HistoryRequest:
    """The request for rng as of now, capped at `points` per series where the rows could be more."""
    if rng.live:
        # Live is raw by definition: the tail is appended from raw samples pushed over the socket,
        # and it must not be merged, or the pushed points would not continue the drawn ones.
        return HistoryRequest(now - LIVE_WINDOW, now, "raw")
    if rng.span is not None:
        start, end = now - rng.span, now
    else:
        assert rng.start is not None and rng.end is not None
        start, end = rng.start, rng.end
    res = choose_resolution(start, end, now)
    # Raw rows answer short ranges only (choose_resolution bounds their count), and are drawn as
    # the samples they are. A rollup range asks for merged rows where it could hold more than a
    # chart draws: 24 hours of minutes (1,440) come as stored, a week (10,080) in 10-minute buckets.
    capped = res != "raw" and (end - start) / ROLLUP_STEP[res] > points
    return HistoryRequest(start, end, res, points if capped else None)
