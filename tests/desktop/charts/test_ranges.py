"""Chart ranges: presets, custom ranges, and the request (span, resolution, point cap) each one makes."""

from __future__ import annotations

import pytest

from servermanager.desktop.charts.ranges import (
    CHART_POINTS,
    PRESET_RANGES,
    ChartRange,
    HistoryRequest,
    preset,
    request_for,
)
from servermanager.desktop.settings import CHART_RANGES
from tests.desktop.charts.conftest import NOW

# (range key, span, resolution the core's auto choice would make for it, points asked for)
PRESET_EXPECTATIONS = [
    ("live", 300.0, "raw", None),
    ("1h", 3600.0, "raw", None),  # raw: the samples as they are
    ("24h", 86400.0, "1m", None),  # 1,440 minutes: as stored
    ("7d", 7 * 86400.0, "1m", CHART_POINTS),  # 10,080 minutes: merged
    ("30d", 30 * 86400.0, "1h", None),  # 720 hours
]


@pytest.mark.parametrize(("key", "span", "resolution", "points"), PRESET_EXPECTATIONS)
def test_request_for_presets(key: str, span: float, resolution: str, points: int | None) -> None:
    assert request_for(preset(key), NOW) == HistoryRequest(NOW - span, NOW, resolution, points)


@pytest.mark.parametrize(
    ("start", "end", "resolution"),
    [
        (NOW - 3 * 3600, NOW - 3600, "raw"),  # short and recent
        (NOW - 6 * 3600, NOW, "raw"),  # the raw limit itself
        (NOW - 6 * 3600 - 1, NOW, "1m"),  # just longer than raw allows
        (NOW - 72 * 3600, NOW - 71 * 3600, "1m"),  # short but older than raw retention
        (NOW - 2 * 86400, NOW, "1m"),
        (NOW - 8 * 86400, NOW, "1m"),
        (NOW - 10 * 86400, NOW, "1h"),  # too many minutes
        (NOW - 40 * 86400, NOW - 39 * 86400, "1h"),  # older than 1m retention
    ],
)
def test_request_for_custom_by_span_and_age(start: float, end: float, resolution: str) -> None:
    request = request_for(ChartRange.custom(start, end), NOW)
    assert (request.start, request.end, request.resolution) == (start, end, resolution)


def test_points_are_asked_for_only_where_rollup_rows_could_outnumber_them() -> None:
    # Raw answers only short ranges, and comes as stored, up to its longest span.
    six_hours = request_for(ChartRange.custom(NOW - 6 * 3600, NOW), NOW)
    assert six_hours.resolution == "raw" and six_hours.points is None
    # 1,500 minutes fit; 1,501 may not.
    assert request_for(ChartRange.custom(NOW - 1500 * 60, NOW), NOW).points is None
    assert request_for(ChartRange.custom(NOW - 1501 * 60, NOW), NOW).points == CHART_POINTS
    # 8 days of minutes, and more than 1,500 hours.
    assert request_for(ChartRange.custom(NOW - 8 * 86400, NOW), NOW).points == CHART_POINTS
    assert request_for(ChartRange.custom(NOW - 90 * 86400, NOW - 20 * 86400), NOW).points == CHART_POINTS
    assert request_for(ChartRange.custom(NOW - 60 * 86400, NOW), NOW).points is None  # 1,440 hours
    # A custom chart size asks for that many.
    assert request_for(preset("7d"), NOW, points=400).points == 400
    assert request_for(preset("24h"), NOW, points=400).points == 400
    # Live is never merged: pushed raw samples continue it.
    assert request_for(preset("live"), NOW, points=10).points is None


def test_custom_range_must_end_after_start_and_presets_are_known() -> None:
    with pytest.raises(ValueError, match="end after"):
        ChartRange.custom(NOW, NOW)
    assert [preset(k).key for k in ("live", "1h", "24h", "7d", "30d")] == ["live", "1h", "24h", "7d", "30d"]
    assert preset("live").live and not preset("1h").live
    with pytest.raises(KeyError, match="no chart range '2h'"):
        preset("2h")


def test_the_settings_offer_the_presets_as_the_default_range() -> None:
    assert [key for key, _ in CHART_RANGES] == [r.key for r in PRESET_RANGES]
    assert dict(CHART_RANGES) == {
        "live": "Live (5 min)",
        "1h": "1 hour",
        "24h": "24 hours",
        "7d": "7 days",
        "30d": "30 days",
    }
