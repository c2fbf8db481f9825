"""One history chart: curve data, min-max band, live tail, zoom, theme and crosshair."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QWheelEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from servermanager.desktop.charts.chart import HistoryChart
from servermanager.desktop.charts.theme import DARK, LIGHT
from servermanager.desktop.format import NA
from tests.desktop.charts.conftest import NOW, make_chart


def test_set_history_puts_avg_and_band_in_the_curves(qtbot: QtBot) -> None:
    chart = make_chart(qtbot, "memory")
    ts = [NOW - 240, NOW - 180, NOW - 120, NOW - 60, NOW]
    Series = dict[str, list[float | None]]
    avg: Series = {"mem_pct": [10.0, None, 30.0, 40.0, 50.0], "swap_pct": [1.0, 2.0, 3.0, 4.0, 5.0]}
    lo: Series = {"mem_pct": [5.0, None, 25.0, 35.0, 45.0], "swap_pct": [0.5, 1.5, 2.5, 3.5, 4.5]}
    hi: Series = {"mem_pct": [15.0, None, 35.0, 45.0, 55.0], "swap_pct": [1.5, 2.5, 3.5, 4.5, 5.5]}
    chart.set_history(ts, avg, lo, hi)

    mem = chart.curves["mem_pct"]
    assert mem.xData is not None and mem.yData is not None
    assert mem.xData.dtype == np.float64
    np.testing.assert_array_equal(mem.xData, ts)
    np.testing.assert_array_equal(mem.yData, [10.0, np.nan, 30.0, 40.0, 50.0])
    assert mem.opts["connect"] == "finite"
    # The finite check is skipped exactly where the data has no gaps.
    assert mem.opts["skipFiniteCheck"] is False
    assert chart.curves["swap_pct"].opts["skipFiniteCheck"] is True
    np.testing.assert_array_equal(chart.curves["swap_pct"].yData, avg["swap_pct"])

    assert chart.has_band and chart._bands["mem_pct"].scene() is chart.plot_widget.scene()
    band = chart.band_data("mem_pct")
    assert band is not None
    np.testing.assert_array_equal(band[0], ts)
    np.testing.assert_array_equal(band[1], [5.0, np.nan, 25.0, 35.0, 45.0])
    np.testing.assert_array_equal(band[2], [15.0, np.nan, 35.0, 45.0, 55.0])
    # The band counts in the y extent, and only over the x range asked for.
    assert chart._bands["swap_pct"].dataBounds(1, orthoRange=(NOW - 130, NOW - 50)) == (2.5, 4.5)


def test_a_flat_series_is_scaled_from_zero_with_readable_ticks(qtbot: QtBot) -> None:
    # A steady 74 GiB/s (a disk's used bytes is as flat): auto-ranged on its own, the y axis was one
    # byte wide and every tick label read "73.9999999996 GiB", too wide to show at all.
    chart = make_chart(qtbot, "network", show=True)
    flat = 74.0 * 2**30
    ts = [NOW - 240 + 60 * i for i in range(5)]
    chart.set_history(ts, {"net_rx_bps": [flat] * 5, "net_tx_bps": [flat / 2] * 5})
    chart.set_x_range(ts[0], ts[-1])
    axis = chart._axis

    def scaled() -> bool:
        lo, hi = chart.vb.viewRange()[1]
        return lo == 0.0 and flat < hi < flat * 1.2

    qtbot.waitUntil(scaled)
    lo, hi = chart.vb.viewRange()[1]
    labels = [
        label
        for spacing, values in axis.tickValues(lo, hi, chart.vb.height())
        for label in axis.tickStrings(values, 1.0, spacing)
    ]
    assert "0 GiB/s" in labels and "60 GiB/s" in labels, labels
    assert all(len(label) <= len("100 GiB/s") for label in labels), labels
    # Percentages keep their fixed scale.
    cpu = make_chart(qtbot, "cpu", show=True)
    cpu.set_history(ts, {"cpu_pct": [50.0] * 5})
    lo, hi = cpu.vb.viewRange()[1]
    assert lo < 0.0 < 100.0 < hi < 103.0


def test_set_history_without_min_max_has_no_band_and_missing_fields_are_nan(qtbot: QtBot) -> None:
    chart = make_chart(qtbot, "memory")
    chart.set_history([1.0, 2.0], {"mem_pct": [1.0, 2.0]}, {"mem_pct": [0.0, 1.0]}, {"mem_pct": [2.0, 3.0]})
    chart.set_history([1.0, 2.0, 3.0], {"mem_pct": [1.0, 2.0, 3.0]})
    assert not chart.has_band
    assert chart._bands["mem_pct"].scene() is None and chart.band_data("mem_pct") is None
    _, ys = chart.data()
    assert np.isnan(ys["swap_pct"]).all() and ys["swap_pct"].shape == (3,)


def test_set_history_rejects_series_of_the_wrong_length(qtbot: QtBot) -> None:
    chart = make_chart(qtbot, "cpu")
    with pytest.raises(ValueError, match="2 points, timestamps have 3"):
        chart.set_history([1.0, 2.0, 3.0], {"cpu_pct": [1.0, 2.0]})


def test_clear_empties_every_curve(qtbot: QtBot) -> None:
    chart = make_chart(qtbot, "cpu")
    chart.set_history([1.0, 2.0], {"cpu_pct": [1.0, 2.0]})
    chart.clear()
    assert chart.data()[0].shape == (0,)
    x_drawn = chart.curves["cpu_pct"].xData
    assert x_drawn is None or len(x_drawn) == 0


# ---------------------------------------------------------------- live tail


def test_append_live_appends_and_trims_to_the_window(qtbot: QtBot) -> None:
    chart = make_chart(qtbot, "network")
    chart.set_history([NOW - 200, NOW - 100], {"net_rx_bps": [1.0, 2.0], "net_tx_bps": [5.0, 6.0]})
    assert chart.append_live(NOW, {"net_rx_bps": 3.0, "net_tx_bps": None})
    x, ys = chart.data()
    np.testing.assert_array_equal(x, [NOW - 200, NOW - 100, NOW])
    np.testing.assert_array_equal(ys["net_rx_bps"], [1.0, 2.0, 3.0])
    assert np.isnan(ys["net_tx_bps"][-1])
    np.testing.assert_array_equal(chart.curves["net_rx_bps"].yData, [1.0, 2.0, 3.0])

    # 150 s later the point at NOW - 200 is 350 s old: outside the 300 s window.
    assert chart.append_live(NOW + 150, {"net_rx_bps": 4.0, "net_tx_bps": 7.0})
    x, ys = chart.data()
    np.testing.assert_array_equal(x, [NOW - 100, NOW, NOW + 150])
    np.testing.assert_array_equal(chart.curves["net_rx_bps"].xData, x)
    # The view follows the tail.
    assert chart.x_range() == pytest.approx((NOW + 150 - 300, NOW + 150))


def test_append_live_ignores_duplicates_and_out_of_order(qtbot: QtBot) -> None:
    chart = make_chart(qtbot, "cpu")
    assert chart.append_live(10.0, {"cpu_pct": 1.0})
    assert not chart.append_live(10.0, {"cpu_pct": 2.0})
    assert not chart.append_live(5.0, {"cpu_pct": 3.0})
    np.testing.assert_array_equal(chart.data()[1]["cpu_pct"], [1.0])


def test_many_appends_stay_bounded(qtbot: QtBot) -> None:
    chart = make_chart(qtbot, "load")
    for i in range(3000):  # ten windows' worth: the buffer wraps (compacts) several times
        chart.append_live(NOW + i, {"load1": float(i), "load5": 1.0, "load15": None})
    x, ys = chart.data()
    assert x.shape == (301,)  # 300 s window at 1 Hz, both ends included
    assert x[0] == NOW + 3000 - 1 - 300
    np.testing.assert_array_equal(ys["load1"], np.arange(3000 - 301, 3000, dtype=np.float64))
    assert chart.buffer_capacity <= 1024  # compacted in place, not grown per sample
    assert len(chart.curves["load1"].xData) == 301


def test_a_manual_zoom_stops_following_the_tail_and_emits_range_selected(qtbot: QtBot) -> None:
    chart = make_chart(qtbot, "cpu", show=True)
    for i in range(100):
        chart.append_live(NOW + i, {"cpu_pct": float(i % 10)})
    viewport = chart.plot_widget.viewport()
    centre = QPointF(viewport.rect().center())
    wheel = QWheelEvent(
        centre,
        QPointF(viewport.mapToGlobal(centre.toPoint())),
        QPoint(0, 0),
        QPoint(0, 120),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    with qtbot.waitSignal(chart.rangeSelected, timeout=1000) as blocker:
        QApplication.sendEvent(viewport, wheel)
    start, end = blocker.args
    assert end - start < 300  # zoomed in
    assert not chart.follow_tail
    before = chart.x_range()
    chart.append_live(NOW + 500, {"cpu_pct": 1.0})
    assert chart.x_range() == before


# ---------------------------------------------------------------- theme


def _pen_colour(chart: HistoryChart, field: str) -> str:
    return str(QColor(chart.curves[field].opts["pen"].color()).name())


def test_set_theme_recolours_background_axes_and_pens_live(qtbot: QtBot) -> None:
    chart = make_chart(qtbot, "memory", dark=True, show=True)
    chart.set_history([1.0, 2.0], {"mem_pct": [1.0, 2.0], "swap_pct": [0.0, 0.0]})
    assert chart.background_color().name() == DARK.background
    assert _pen_colour(chart, "mem_pct") == DARK.series[0]
    before = chart.grab().toImage().pixelColor(3, 3)

    chart.set_theme(False)
    assert not chart.dark
    assert chart.background_color().name() == LIGHT.background
    assert _pen_colour(chart, "swap_pct") == LIGHT.series[1]
    assert chart.plot_item.getAxis("left").textPen().color().name() == LIGHT.foreground
    after = chart.grab().toImage().pixelColor(3, 3)
    assert before.name() == DARK.background and after.name() == LIGHT.background
    # Data survives a theme change.
    np.testing.assert_array_equal(chart.curves["mem_pct"].yData, [1.0, 2.0])


# ---------------------------------------------------------------- crosshair


def test_crosshair_follows_the_mouse_and_shows_the_nearest_values(qtbot: QtBot) -> None:
    chart = make_chart(qtbot, "network", show=True)
    ts = [NOW - 240.0, NOW - 180.0, NOW - 120.0, NOW - 60.0, NOW]
    chart.set_history(
        ts, {"net_rx_bps": [1e3, 2e3, 3 * 2**20, 4e3, 5e3], "net_tx_bps": [1.0, 2.0, None, 4.0, 5.0]}
    )
    chart.set_x_range(ts[0], ts[-1])
    # 20 s right of the third point, which is still the nearest.
    pos = chart.vb.mapViewToScene(QPointF(ts[2] + 20.0, 2**20))
    with qtbot.waitSignal(chart.crosshairMoved, timeout=1000) as blocker:
        chart.mouse_moved((pos,))
    assert blocker.args[0] == pytest.approx(ts[2] + 20.0, abs=1.0)
    assert chart.crosshair_line.isVisible() and chart.crosshair_label.isVisible()
    assert chart.crosshair_line.value() == ts[2]
    text = chart.crosshair_text
    assert time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts[2])) in text
    assert "Receive: 3.00 MiB/s" in text
    assert f"Transmit: {NA}" in text  # no value at that point

    view = chart.vb.sceneBoundingRect()
    outside = QPointF(view.left() - 20, view.center().y())  # over the y axis
    with qtbot.waitSignal(chart.crosshairHidden, timeout=1000):
        chart.mouse_moved((outside,))
    assert not chart.crosshair_line.isVisible()

    chart.show_crosshair(ts[1])
    with qtbot.waitSignal(chart.crosshairHidden, timeout=1000):
        QApplication.sendEvent(chart, QEvent(QEvent.Type.Leave))
    assert not chart.crosshair_label.isVisible()


def test_crosshair_on_an_empty_chart_shows_the_time_only(qtbot: QtBot) -> None:
    chart = make_chart(qtbot, "cpu")
    text = chart.show_crosshair(NOW)
    assert text.splitlines() == [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(NOW)), f"CPU: {NA}"]
