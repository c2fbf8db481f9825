"""The chart's own pyqtgraph items: unit-aware axis ticks, and the min-max band's extent."""

from __future__ import annotations

import numpy as np
from pytestqt.qtbot import QtBot

from servermanager.common.metrics import Unit
from servermanager.desktop.charts.items import BandItem, UnitAxisItem


def test_bytes_axis_ticks_fall_on_round_binary_prefixes(qtbot: QtBot) -> None:
    axis = UnitAxisItem(Unit.BYTES_PER_S)
    axis.setRange(0, 5 * 2**20)
    major, _ = axis.tickSpacing(0, 5 * 2**20, 200)[0]
    assert major % 2**20 == 0  # 1 MiB/s steps, not 1,000,000 B/s
    assert axis.tickStrings([2**20, 2 * 2**20], 1.0, 2**20) == ["1 MiB/s", "2 MiB/s"]
    pct = UnitAxisItem(Unit.PERCENT)
    assert pct.tickStrings([0.0, 50.0], 1.0, 50.0) == ["0%", "50%"]


def test_sizes_tick_in_binary_prefixes_too(qtbot: QtBot) -> None:
    axis = UnitAxisItem(Unit.BYTES)
    axis.setRange(0, 8 * 2**30)
    assert axis.tickStrings([2 * 2**30, 4 * 2**30], 1.0, 2 * 2**30) == ["2 GiB", "4 GiB"]
    plain = UnitAxisItem(Unit.PLAIN)
    assert plain.tickStrings([0.5, 1.0], 1.0, 0.5) == ["0.5", "1.0"]


def test_band_bounds_skip_gaps_and_follow_the_x_range_shown() -> None:
    band = BandItem()
    x = np.array([1.0, 2.0, 3.0, 4.0])
    band.set_data(x, np.array([1.0, np.nan, 0.5, 2.0]), np.array([3.0, np.nan, 9.0, 4.0]))
    assert band.dataBounds(0) == (1.0, 4.0)
    assert band.dataBounds(1) == (0.5, 9.0)
    assert band.dataBounds(1, orthoRange=(3.5, 4.5)) == (2.0, 4.0)
    assert band.dataBounds(1, orthoRange=(1.5, 2.5)) == (None, None)  # only the gap in view
    band.set_data(np.empty(0), np.empty(0), np.empty(0))
    assert band.dataBounds(0) == (None, None) and band.boundingRect().isNull()
