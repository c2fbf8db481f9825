"""The compare chart on its own: one line per node with its own times, a crosshair per node, gaps, styles."""

from __future__ import annotations

import numpy as np
from pytestqt.qtbot import QtBot

from servermanager.common.metrics import Unit
from servermanager.desktop.charts.compare import MAX_SERIES, CompareChart, series_pen
from servermanager.desktop.charts.theme import DARK
from tests.desktop.charts.conftest import NOW


def make(qtbot: QtBot) -> CompareChart:
    chart = CompareChart(Unit.PERCENT, "CPU")
    qtbot.addWidget(chart)
    return chart


def test_the_crosshair_names_each_node_and_its_nearest_point_but_not_across_an_outage(qtbot: QtBot) -> None:
    chart = make(qtbot)
    chart.set_series(1, "web-1", np.array([NOW, NOW + 10, NOW + 20]), [10.0, 20.0, 30.0])
    chart.set_series(2, "db-1", np.array([NOW + 5, NOW + 200]), [50.0, 60.0])
    chart.set_gap_after(2, 25.0)
    text = chart.show_crosshair(NOW + 11)
    lines = text.splitlines()[1:]
    assert lines == ["web-1: 20.0%", "db-1: 50.0%"]
    # Mid-outage, db-1's nearest point is 95 s away: a reading from before the outage, not shown.
    lines = chart.show_crosshair(NOW + 100).splitlines()[1:]
    assert lines[0] == "web-1: 30.0%" and "50" not in lines[1] and "60" not in lines[1]
    assert chart.legend_labels() == ["web-1", "db-1"]
    _x, y = chart.plotted(2)
    assert np.isnan(y).sum() == 1


def test_a_rename_and_a_removal_follow_in_the_legend_and_pens_stay_distinct(qtbot: QtBot) -> None:
    chart = make(qtbot)
    for k in range(MAX_SERIES):
        chart.set_series(k, f"n{k}", np.array([NOW]), [float(k)])
    pens = {series_pen(DARK, k) for k in range(MAX_SERIES)}
    assert len(pens) == MAX_SERIES  # ten lines, ten looks
    chart.set_series(3, "renamed", *chart.data(3))
    chart.remove_series(0)
    assert chart.legend_labels() == [f"n{k}" if k != 3 else "renamed" for k in range(1, MAX_SERIES)]


def test_live_points_append_and_follow_until_a_manual_zoom(qtbot: QtBot) -> None:
    chart = make(qtbot)
    chart.set_series(1, "web-1", np.array([NOW]), [1.0])
    assert chart.append_live(1, NOW + 1, 2.0) and not chart.append_live(1, NOW + 1, 3.0)
    assert not chart.append_live(9, NOW + 2, 1.0)  # no such line
    assert chart.x_range()[1] == NOW + 1
    zooms: list[tuple[float, float]] = []
    chart.rangeSelected.connect(lambda a, b: zooms.append((a, b)))
    chart.vb.sigRangeChangedManually.emit([True, False])
    assert zooms and not chart.follow_tail
    chart.append_live(1, NOW + 50, 4.0)
    assert chart.x_range()[1] < NOW + 50
