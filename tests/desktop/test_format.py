"""Value formatting: one formatter per unit of the metric table, and for sizes, durations and ages."""

from __future__ import annotations

import math
import time

import pytest

from servermanager.common.metrics import Unit
from servermanager.desktop.format import (
    NA,
    fmt_ago,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_of,
    fmt_pct,
    fmt_rate,
    fmt_time,
    format_value,
)


def test_unit_formatting() -> None:
    # What a chart's crosshair shows (precise) and what the unknown value reads as.
    assert format_value(Unit.PERCENT, 12.345, precise=True) == "12.3%"
    assert fmt_rate(512) == "512 B/s"
    assert fmt_rate(1536) == "1.50 KiB/s"
    assert fmt_rate(25 * 2**20) == "25.0 MiB/s"
    assert fmt_rate(300 * 2**30) == "300 GiB/s"
    assert format_value(Unit.PLAIN, 0.4567) == "0.46"
    assert format_value(Unit.PERCENT, None) == NA
    assert format_value(Unit.BYTES_PER_S, math.nan) == NA


@pytest.mark.parametrize(
    ("unit", "value", "text"),
    [
        (Unit.PERCENT, 81.0, "81%"),  # a table cell and a meter: no decimals
        (Unit.PERCENT, 41.6, "42%"),
        (Unit.BYTES, 16 << 30, "16.0 GiB"),
        (Unit.BYTES_PER_S, 5.0, "5 B/s"),
        (Unit.BYTES_PER_S, 923.4 * 1024, "923 KiB/s"),
        (Unit.PER_S, 3.5, "3.50/s"),
        (Unit.PER_S, 120.0, "120/s"),
        (Unit.SECONDS, 12 * 86400 + 3 * 3600 + 5, "12d 3h"),
        (Unit.COUNT, 180, "180"),
        (Unit.COUNT, 180.25, "180.2"),
        (Unit.PLAIN, 1.5, "1.50"),
    ],
)
def test_every_unit_has_its_format(unit: Unit, value: float, text: str) -> None:
    assert format_value(unit, value) == text


def test_every_unit_of_the_table_is_formatted() -> None:
    # A unit added to the table without a format here would read as a plain number by accident.
    for unit in Unit:
        assert format_value(unit, 1.0) != NA
        assert format_value(unit, None) == NA


def test_sizes_parts_durations_and_ages() -> None:
    assert fmt_bytes(None) == NA and fmt_rate(None) == NA and fmt_pct(None) == NA
    assert fmt_bytes(1023) == "1023 B"
    assert fmt_bytes(5 * 2**40 * 1024) == "5120 TiB"  # no prefix past TiB
    assert fmt_of(11.7 * 2**30, 16 * 2**30) == "11.7 / 16.0 GiB"  # the unit said once
    # The part in the whole's unit: "512 MiB / 16.0 GiB" did not fit beside a meter's label.
    assert fmt_of(512 * 2**20, 16 * 2**30) == "0.50 / 16.0 GiB"
    assert fmt_of(612 * 2**30, 2**40) == "0.60 / 1.00 TiB"
    assert fmt_duration(59) == "59s" and fmt_duration(61) == "1m 1s" and fmt_duration(3720) == "1h 2m"
    assert fmt_duration(-5) == "0s"
    assert fmt_count(None) == NA
    assert fmt_ago(None) == "never"
    assert fmt_ago(1000.0, now=1003.0) == "just now"
    assert fmt_ago(1000.0, now=1000.0 + 125) == "2m 5s ago"


def test_times_are_local_with_or_without_seconds() -> None:
    ts = 1_750_000_000.0
    assert fmt_time(ts) == time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
    assert fmt_time(ts, seconds=True) == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    assert fmt_time(None) == NA
