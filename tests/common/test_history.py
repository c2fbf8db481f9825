"""The resolution policy that the core's `resolution=auto` and the desktop's charts both use."""

from __future__ import annotations

import pytest

from servermanager.common.history import RETENTION_1M, RETENTION_RAW, choose_resolution
from servermanager.core.settings import CoreSettings

NOW = 1_700_000_000.0


def test_the_cores_default_retention_is_the_policys_default() -> None:
    settings = CoreSettings()
    assert (settings.retention_raw, settings.retention_1m) == (RETENTION_RAW, RETENTION_1M)


@pytest.mark.parametrize(
    ("span", "age", "expected"),
    [
        (60.0, 0.0, "raw"),
        (6 * 3600.0, 0.0, "raw"),  # the raw limit itself
        (6 * 3600.0 + 1, 0.0, "1m"),  # just longer than raw allows
        (3600.0, 49 * 3600.0, "1m"),  # short, but older than raw retention
        (8 * 86400.0, 0.0, "1m"),
        (8 * 86400.0 + 1, 0.0, "1h"),  # too many minutes
        (86400.0, 31 * 86400.0, "1h"),  # older than 1m retention
    ],
)
def test_finest_resolution_that_holds_the_range(span: float, age: float, expected: str) -> None:
    assert choose_resolution(NOW - age - span, NOW - age, NOW) == expected


def test_retention_settings_move_the_boundaries() -> None:
    start, end = NOW - 3 * 3600.0, NOW - 2 * 3600.0
    assert choose_resolution(start, end, NOW) == "raw"
    assert choose_resolution(start, end, NOW, retention_raw=2 * 3600.0) == "1m"
    assert choose_resolution(start, end, NOW, retention_raw=3600.0, retention_1m=2 * 3600.0) == "1h"
