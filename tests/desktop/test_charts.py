"""Tests of desktop.charts: range requests, curve data, live tail, theme, crosshair, panel and rendering."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QImage, QWheelEvent
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from servermanager.common.metrics import DiskUsage, Metrics, Sample
from servermanager.desktop.charts import (
    DARK,
    DEFAULT_FAMILIES,
    LIGHT,
    ChartPanel,
    ChartRange,
    HistoryChart,
    Unit,
    UnitAxisItem,
    format_bytes_rate,
    format_percent,
    preset,
    request_for,
)

NOW = 1_750_000_000.0
FAMILIES = {f.key: f for f in DEFAULT_FAMILIES}
# (range key, span, resolution) the core's auto choice would make for it
PRESET_EXPECTATIONS = [
    ("live", 300.0, "raw"),
    ("1h", 3600.0, "raw"),
    ("24h", 86400.0, "1m"),
    ("7d", 7 * 86400.0, "1m"),
    ("30d", 30 * 86400.0, "1h"),
]


def _chart(qtbot: QtBot, key: str = "memory", *, dark: bool = True, show: bool = False) -> HistoryChart:
    chart = HistoryChart(FAMILIES[key], dark=dark)
    qtbot.addWidget(chart)
    if show:
        chart.resize(640, 300)
        chart.show()
        qtbot.waitExposed(chart)
    return chart


def _panel(qtbot: QtBot, **kwargs: Any) -> ChartPanel:
    panel = ChartPanel(now=lambda: NOW, **kwargs)
    qtbot.addWidget(panel)
    return panel


def _metrics(cpu: float, mem: float = 40.0, rx: float | None = 1000.0) -> Metrics:
    return Metrics(
        cpu_pct=cpu,
        cpu_per_core=[cpu],
        load1=0.5,
        load5=0.4,
        load15=0.3,
        mem_total=8 << 30,
        mem_used=int((8 << 30) * mem / 100),
        mem_pct=mem,
        swap_total=0,
        swap_used=0,
        swap_pct=0.0,
        uptime=100.0,
        procs=90,
        disks=[DiskUsage("/", "ext4", 100, 61, 61.0), DiskUsage("/data", "ext4", 100, 87, 87.0)],
        net_rx_bps=rx,
        net_tx_bps=None,
    )


def synthetic_history(start: float, end: float, step: float, seed: int = 1) -> dict[str, Any]:
    """A REST history response (1m rollup shape) with daily cycles, noise, a gap and min/max."""
    rng = np.random.default_rng(seed)
    ts = np.arange(start, end, step)
    n = ts.shape[0]
    day = 2 * np.pi * (ts - start) / 86400.0
    series: dict[str, tuple[np.ndarray, float]] = {
        # (avg, spread of min/max around it)
        "cpu_pct": (np.clip(30 + 20 * np.sin(day) + rng.normal(0, 3, n), 0, 100), 12.0),
        "mem_pct": (55 + 8 * (ts - start) / (end - start) + rng.normal(0, 0.3, n), 1.0),
        "swap_pct": (4 + rng.normal(0, 0.1, n), 0.2),
        "disk_pct": (71 + 2 * (ts - start) / (end - start), 0.05),
        "disk_read_bps": (np.abs(2e6 + 1.5e6 * np.sin(3 * day) + rng.normal(0, 2e5, n)), 8e5),
        "disk_write_bps": (np.abs(5e5 + rng.normal(0, 1e5, n)), 3e5),
        "net_rx_bps": (np.abs(8e6 + 6e6 * np.sin(day) + rng.normal(0, 6e5, n)), 3e6),
        "net_tx_bps": (np.abs(1.2e6 + rng.normal(0, 2e5, n)), 6e5),
        "load1": (np.abs(1.2 + np.sin(day) + rng.normal(0, 0.2, n)), 0.6),
        "load5": (np.abs(1.2 + np.sin(day) + rng.normal(0, 0.08, n)), 0.25),
        "load15": (np.abs(1.2 + 0.9 * np.sin(day)), 0.1),
    }
    avg: dict[str, list[float | None]] = {}
    lo: dict[str, list[float | None]] = {}
    hi: dict[str, list[float | None]] = {}
    gap = slice(n // 5, n // 5 + 20)  # the agent was down for 20 minutes
    for f, (v, spread) in series.items():
        d = np.abs(rng.normal(0, spread / 2, n))
        cols = [v.tolist(), np.maximum(v - d, 0).tolist(), (v + d).tolist()]
        for col in cols:
            col[gap] = [None] * (gap.stop - gap.start)
        avg[f], lo[f], hi[f] = cols
    return {
        "node_id": 1,
        "resolution": "1m",
        "from": start,
        "to": end,
        "fields": list(series),
        "ts": ts.tolist(),
        "avg": avg,
        "min": lo,
        "max": hi,
    }


# ---------------------------------------------------------------- ranges


@pytest.mark.parametrize(("key", "span", "resolution"), PRESET_EXPECTATIONS)
def test_request_for_presets(key: str, span: float, resolution: str) -> None:
    assert request_for(preset(key), NOW) == (NOW - span, NOW, resolution)


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
    assert request_for(ChartRange.custom(start, end), NOW) == (start, end, resolution)


def test_custom_range_must_end_after_start_and_presets_are_known() -> None:
    with pytest.raises(ValueError, match="end after"):
        ChartRange.custom(NOW, NOW)
    assert [preset(k).key for k in ("live", "1h", "24h", "7d", "30d")] == ["live", "1h", "24h", "7d", "30d"]
    assert preset("live").live and not preset("1h").live
    with pytest.raises(KeyError, match="no chart range '2h'"):
        preset("2h")


# ---------------------------------------------------------------- units


def test_unit_formatting() -> None:
    assert format_percent(12.345) == "12.3 %"
    assert format_bytes_rate(512) == "512 B/s"
    assert format_bytes_rate(1536) == "1.50 KiB/s"
    assert format_bytes_rate(25 * 2**20) == "25.0 MiB/s"
    assert format_bytes_rate(300 * 2**30) == "300 GiB/s"
    assert Unit.PLAIN.format_value(0.4567) == "0.46"
    assert Unit.PERCENT.format_value(None) == "n/a"
    assert Unit.BYTES_PER_S.format_value(math.nan) == "n/a"


def test_bytes_axis_ticks_fall_on_round_binary_prefixes(qtbot: QtBot) -> None:
    axis = UnitAxisItem(Unit.BYTES_PER_S)
    axis.setRange(0, 5 * 2**20)
    major, _ = axis.tickSpacing(0, 5 * 2**20, 200)[0]
    assert major % 2**20 == 0  # 1 MiB/s steps, not 1,000,000 B/s
    assert axis.tickStrings([2**20, 2 * 2**20], 1.0, 2**20) == ["1 MiB/s", "2 MiB/s"]
    pct = UnitAxisItem(Unit.PERCENT)
    assert pct.tickStrings([0.0, 50.0], 1.0, 50.0) == ["0%", "50%"]


# ---------------------------------------------------------------- HistoryChart data


def test_set_history_puts_avg_and_band_in_the_curves(qtbot: QtBot) -> None:
    chart = _chart(qtbot, "memory")
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


def test_set_history_without_min_max_has_no_band_and_missing_fields_are_nan(qtbot: QtBot) -> None:
    chart = _chart(qtbot, "memory")
    chart.set_history([1.0, 2.0], {"mem_pct": [1.0, 2.0]}, {"mem_pct": [0.0, 1.0]}, {"mem_pct": [2.0, 3.0]})
    chart.set_history([1.0, 2.0, 3.0], {"mem_pct": [1.0, 2.0, 3.0]})
    assert not chart.has_band
    assert chart._bands["mem_pct"].scene() is None and chart.band_data("mem_pct") is None
    _, ys = chart.data()
    assert np.isnan(ys["swap_pct"]).all() and ys["swap_pct"].shape == (3,)


def test_set_history_rejects_series_of_the_wrong_length(qtbot: QtBot) -> None:
    chart = _chart(qtbot, "cpu")
    with pytest.raises(ValueError, match="2 points, timestamps have 3"):
        chart.set_history([1.0, 2.0, 3.0], {"cpu_pct": [1.0, 2.0]})


def test_clear_empties_every_curve(qtbot: QtBot) -> None:
    chart = _chart(qtbot, "cpu")
    chart.set_history([1.0, 2.0], {"cpu_pct": [1.0, 2.0]})
    chart.clear()
    assert chart.data()[0].shape == (0,)
    x_drawn = chart.curves["cpu_pct"].xData
    assert x_drawn is None or len(x_drawn) == 0


# ---------------------------------------------------------------- live tail


def test_append_live_appends_and_trims_to_the_window(qtbot: QtBot) -> None:
    chart = _chart(qtbot, "network")
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
    chart = _chart(qtbot, "cpu")
    assert chart.append_live(10.0, {"cpu_pct": 1.0})
    assert not chart.append_live(10.0, {"cpu_pct": 2.0})
    assert not chart.append_live(5.0, {"cpu_pct": 3.0})
    np.testing.assert_array_equal(chart.data()[1]["cpu_pct"], [1.0])


def test_many_appends_stay_bounded(qtbot: QtBot) -> None:
    chart = _chart(qtbot, "load")
    for i in range(3000):  # ten windows' worth: the buffer wraps (compacts) several times
        chart.append_live(NOW + i, {"load1": float(i), "load5": 1.0, "load15": None})
    x, ys = chart.data()
    assert x.shape == (301,)  # 300 s window at 1 Hz, both ends included
    assert x[0] == NOW + 3000 - 1 - 300
    np.testing.assert_array_equal(ys["load1"], np.arange(3000 - 301, 3000, dtype=np.float64))
    assert chart.buffer_capacity <= 1024  # compacted in place, not grown per sample
    assert len(chart.curves["load1"].xData) == 301


def test_a_manual_zoom_stops_following_the_tail_and_emits_range_selected(qtbot: QtBot) -> None:
    chart = _chart(qtbot, "cpu", show=True)
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
    chart = _chart(qtbot, "memory", dark=True, show=True)
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
    chart = _chart(qtbot, "network", show=True)
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
    assert "Transmit: n/a" in text

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
    chart = _chart(qtbot, "cpu")
    text = chart.show_crosshair(NOW)
    assert text.splitlines() == [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(NOW)), "CPU: n/a"]


# ---------------------------------------------------------------- ChartPanel


@pytest.mark.parametrize(("key", "span", "resolution"), PRESET_EXPECTATIONS)
def test_panel_range_buttons_request_the_right_resolution(
    qtbot: QtBot, key: str, span: float, resolution: str
) -> None:
    panel = _panel(qtbot, initial=ChartRange.custom(NOW - 10, NOW))
    with qtbot.waitSignal(panel.rangeRequested, timeout=1000) as blocker:
        qtbot.mouseClick(panel.range_buttons[key], Qt.MouseButton.LeftButton)
    assert blocker.args == [NOW - span, NOW, resolution]
    assert panel.current_range.key == key
    assert panel.range_buttons[key].isChecked()
    assert panel.is_live == (key == "live")
    assert panel.range_label.text().endswith(f"· {resolution}")


def test_panel_custom_dialog_requests_its_range(qtbot: QtBot) -> None:
    panel = _panel(qtbot)
    qtbot.mouseClick(panel.custom_button, Qt.MouseButton.LeftButton)
    dialog = panel.custom_dialog
    assert dialog is not None and dialog.isVisible()
    start, end = NOW - 10 * 86400, NOW - 86400
    dialog.start_edit.setDateTime(dialog.start_edit.dateTime().fromSecsSinceEpoch(int(start)))
    dialog.end_edit.setDateTime(dialog.end_edit.dateTime().fromSecsSinceEpoch(int(end)))
    with qtbot.waitSignal(panel.rangeRequested, timeout=1000) as blocker:
        dialog.accept()
    assert blocker.args == [start, end, "1h"]  # 9 days: more than 1-minute rollups serve
    assert panel.current_range.is_custom and panel.custom_button.isChecked()


def test_panel_custom_dialog_refuses_an_inverted_range(qtbot: QtBot) -> None:
    panel = _panel(qtbot)
    dialog = panel.open_custom_dialog()
    dialog.end_edit.setDateTime(dialog.start_edit.dateTime().addSecs(-3600))
    assert not dialog.buttons.button(dialog.buttons.StandardButton.Ok).isEnabled()
    dialog.reject()
    assert panel.range_buttons["live"].isChecked()


def test_panel_links_the_x_axes(qtbot: QtBot) -> None:
    panel = _panel(qtbot)
    panel.charts["cpu"].set_x_range(NOW - 1000, NOW - 500)
    for chart in panel.charts.values():
        assert chart.x_range() == pytest.approx((NOW - 1000, NOW - 500))


def test_panel_set_history_distributes_fields_and_drops_stale_responses(qtbot: QtBot) -> None:
    panel = _panel(qtbot)
    panel.select_range(preset("24h"))
    response = synthetic_history(NOW - 86400, NOW, 60.0)
    assert panel.set_history(response)
    n = len(response["ts"])
    for chart in panel.charts.values():
        x, ys = chart.data()
        assert x.shape == (n,)
        for f in chart.fields:
            expected = np.array(response["avg"][f], dtype=np.float64)
            np.testing.assert_array_equal(ys[f], expected)
        assert chart.has_band
    assert panel.charts["load"].x_range() == pytest.approx((NOW - 86400, NOW))

    # A raw response that arrives after the user moved on to 24 h answers an older request.
    stale = {"resolution": "raw", "from": NOW - 300, "to": NOW, "ts": [NOW], "avg": {"cpu_pct": [99.0]}}
    assert not panel.set_history(stale)
    assert panel.charts["cpu"].data()[0].shape == (n,)


def test_panel_append_sample_only_in_live_range(qtbot: QtBot) -> None:
    panel = _panel(qtbot)
    assert panel.is_live
    assert panel.append_sample(Sample(seq=1, ts=NOW, metrics=_metrics(12.5)))
    x, ys = panel.charts["cpu"].data()
    np.testing.assert_array_equal(x, [NOW])
    np.testing.assert_array_equal(ys["cpu_pct"], [12.5])
    assert panel.charts["disk"].data()[1]["disk_pct"][0] == 87.0  # the fullest mount
    assert np.isnan(panel.charts["network"].data()[1]["net_tx_bps"][0])

    qtbot.mouseClick(panel.range_buttons["24h"], Qt.MouseButton.LeftButton)
    assert not panel.append_sample(Sample(seq=2, ts=NOW + 5, metrics=_metrics(50.0)))
    np.testing.assert_array_equal(panel.charts["cpu"].data()[0], [NOW])


def test_panel_live_history_keeps_samples_pushed_while_it_was_in_flight(qtbot: QtBot) -> None:
    panel = _panel(qtbot)
    start, end, res = panel.current_request()
    assert res == "raw"
    panel.append_sample(Sample(seq=9, ts=end + 5, metrics=_metrics(77.0)))
    response = {
        "resolution": "raw",
        "from": start,
        "to": end,
        "ts": [end - 10, end],
        "avg": {"cpu_pct": [1.0, 2.0]},
        "min": None,
        "max": None,
    }
    assert panel.set_history(response)
    x, ys = panel.charts["cpu"].data()
    np.testing.assert_array_equal(x, [end - 10, end, end + 5])
    np.testing.assert_array_equal(ys["cpu_pct"], [1.0, 2.0, 77.0])
    assert panel.charts["cpu"].x_range() == pytest.approx((end + 5 - 300, end + 5))


# ---------------------------------------------------------------- rendering


def _pixels(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    raw = np.frombuffer(image.constBits(), dtype=np.uint8, count=image.sizeInBytes())
    rgb: np.ndarray = raw.reshape(image.height(), image.bytesPerLine() // 4, 4)[:, : image.width(), 2::-1]
    return rgb


def _near(rgb: np.ndarray, colour: str, tol: int = 40) -> int:
    c = QColor(colour)
    target = np.array([c.red(), c.green(), c.blue()], dtype=np.int32)
    return int((np.abs(rgb.astype(np.int32) - target).sum(axis=2) < tol).sum())


@pytest.fixture
def day_panel(qtbot: QtBot) -> ChartPanel:
    panel = _panel(qtbot)
    panel.resize(1400, 850)
    panel.show()
    qtbot.waitExposed(panel)
    panel.select_range(preset("24h"))
    assert panel.set_history(synthetic_history(NOW - 86400, NOW, 60.0))
    panel.charts["network"].show_crosshair(NOW - 5 * 3600)
    return panel


@pytest.mark.parametrize("dark", [True, False])
def test_rendered_panel_is_not_blank(day_panel: ChartPanel, tmp_path: Path, dark: bool) -> None:
    day_panel.set_theme(dark)
    out = tmp_path / f"charts-{'dark' if dark else 'light'}.png"
    assert day_panel.grab().save(str(out))
    # Set SM_CHART_PNG_DIR to keep the images for a human look.
    keep = os.environ.get("SM_CHART_PNG_DIR")
    if keep:
        day_panel.grab().save(str(Path(keep) / out.name))
    rgb = _pixels(QImage(str(out)))
    assert rgb.shape[:2] == (850, 1400)
    assert rgb.std() > 15  # not a flat fill
    theme = DARK if dark else LIGHT
    # Lines of the first two series are drawn in their theme colours, over the theme background.
    assert _near(rgb, theme.background, tol=6) > rgb.shape[0] * rgb.shape[1] // 4
    assert _near(rgb, theme.series[0]) > 5000
    assert _near(rgb, theme.series[1]) > 1000
    # The min-max band of the first series: its colour at band_alpha over the background.
    a = theme.band_alpha / 255
    bg, fg = QColor(theme.background), QColor(theme.series[0])
    blend = QColor(
        *(
            round(b * (1 - a) + c * a)
            for b, c in zip((bg.red(), bg.green(), bg.blue()), (fg.red(), fg.green(), fg.blue()), strict=True)
        )
    )
    assert _near(rgb, blend.name(), tol=12) > 5000
    luminance = rgb.mean()
    assert luminance < 80 if dark else luminance > 170
