"""The chart panel: range buttons and requests, linked charts, history answers, the live tail, rendering."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QColor, QImage, QMouseEvent
from PySide6.QtWidgets import QApplication, QWidget
from pytestqt.qtbot import QtBot

from servermanager.common.metrics import Sample
from servermanager.common.rest import History
from servermanager.desktop.charts.panel import ChartPanel
from servermanager.desktop.charts.ranges import CHART_POINTS, ChartRange, HistoryRequest, preset
from servermanager.desktop.charts.theme import DARK, LIGHT
from tests.desktop.charts.conftest import NOW, make_panel, reading, synthetic_history
from tests.desktop.charts.test_ranges import PRESET_EXPECTATIONS


@pytest.mark.parametrize(("key", "span", "resolution", "points"), PRESET_EXPECTATIONS)
def test_panel_range_buttons_request_the_right_resolution(
    qtbot: QtBot, key: str, span: float, resolution: str, points: int | None
) -> None:
    panel = make_panel(qtbot, initial=ChartRange.custom(NOW - 10, NOW))
    with qtbot.waitSignal(panel.rangeRequested, timeout=1000) as blocker:
        qtbot.mouseClick(panel.range_buttons[key], Qt.MouseButton.LeftButton)
    assert blocker.args == [HistoryRequest(NOW - span, NOW, resolution, points)]
    assert panel.current_range.key == key
    assert panel.range_buttons[key].isChecked()
    assert panel.is_live == (key == "live")
    assert panel.range_label.text().endswith(f"· {resolution}")


def test_panel_custom_dialog_requests_its_range(qtbot: QtBot) -> None:
    panel = make_panel(qtbot)
    qtbot.mouseClick(panel.custom_button, Qt.MouseButton.LeftButton)
    dialog = panel.custom_dialog
    assert dialog is not None and dialog.isVisible()
    start, end = NOW - 10 * 86400, NOW - 86400
    dialog.start_edit.setDateTime(dialog.start_edit.dateTime().fromSecsSinceEpoch(int(start)))
    dialog.end_edit.setDateTime(dialog.end_edit.dateTime().fromSecsSinceEpoch(int(end)))
    with qtbot.waitSignal(panel.rangeRequested, timeout=1000) as blocker:
        dialog.accept()
    assert blocker.args == [HistoryRequest(start, end, "1h")]  # 9 days: more than 1-minute rollups serve
    assert panel.current_range.is_custom and panel.custom_button.isChecked()


def test_panel_custom_dialog_refuses_an_inverted_range(qtbot: QtBot) -> None:
    panel = make_panel(qtbot)
    dialog = panel.open_custom_dialog()
    dialog.end_edit.setDateTime(dialog.start_edit.dateTime().addSecs(-3600))
    assert not dialog.buttons.button(dialog.buttons.StandardButton.Ok).isEnabled()
    dialog.reject()
    assert panel.range_buttons["live"].isChecked()


def test_panel_links_the_x_axes(qtbot: QtBot) -> None:
    panel = make_panel(qtbot)
    panel.charts["cpu"].set_x_range(NOW - 1000, NOW - 500)
    for chart in panel.charts.values():
        assert chart.x_range() == pytest.approx((NOW - 1000, NOW - 500))


def test_panel_set_history_distributes_fields_and_drops_stale_responses(qtbot: QtBot) -> None:
    panel = make_panel(qtbot)
    panel.select_range(preset("24h"))
    response = synthetic_history(NOW - 86400, NOW, 60.0)
    assert panel.set_history(response)
    n = len(response.ts)
    for chart in panel.charts.values():
        x, ys = chart.data()
        assert x.shape == (n,)
        for f in chart.fields:
            expected = np.array(response.avg[f], dtype=np.float64)
            np.testing.assert_array_equal(ys[f], expected)
        assert chart.has_band
    assert panel.charts["load"].x_range() == pytest.approx((NOW - 86400, NOW))

    # A raw response that arrives after the user moved on to 24 h answers an older request.
    stale = History(
        node_id=1,
        resolution="raw",
        from_=NOW - 300,
        to=NOW,
        fields=["cpu_pct"],
        ts=[NOW],
        avg={"cpu_pct": [99.0]},
    )
    assert not panel.set_history(stale)
    assert panel.charts["cpu"].data()[0].shape == (n,)


def test_panel_append_sample_only_in_live_range(qtbot: QtBot) -> None:
    panel = make_panel(qtbot)
    assert panel.is_live
    assert panel.append_sample(Sample(seq=1, ts=NOW, metrics=reading(12.5)))
    x, ys = panel.charts["cpu"].data()
    np.testing.assert_array_equal(x, [NOW])
    np.testing.assert_array_equal(ys["cpu_pct"], [12.5])
    assert panel.charts["disk"].data()[1]["disk_pct"][0] == 87.0  # the fullest mount
    assert np.isnan(panel.charts["network"].data()[1]["net_tx_bps"][0])

    qtbot.mouseClick(panel.range_buttons["24h"], Qt.MouseButton.LeftButton)
    assert not panel.append_sample(Sample(seq=2, ts=NOW + 5, metrics=reading(50.0)))
    np.testing.assert_array_equal(panel.charts["cpu"].data()[0], [NOW])


def test_panel_live_history_keeps_samples_pushed_while_it_was_in_flight(qtbot: QtBot) -> None:
    panel = make_panel(qtbot)
    request = panel.current_request()
    start, end = request.start, request.end
    assert request.resolution == "raw" and request.points is None
    panel.append_sample(Sample(seq=9, ts=end + 5, metrics=reading(77.0)))
    response = History(
        node_id=1,
        resolution="raw",
        from_=start,
        to=end,
        fields=["cpu_pct"],
        ts=[end - 10, end],
        avg={"cpu_pct": [1.0, 2.0]},
        min=None,
        max=None,
    )
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
    panel = make_panel(qtbot)
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


def test_panel_draws_a_merged_week_with_the_band_of_its_buckets(qtbot: QtBot) -> None:
    panel = make_panel(qtbot)
    panel.select_range(preset("7d"))
    request = panel.current_request()
    assert request.resolution == "1m" and request.points == CHART_POINTS
    # What the core answers with points: 10-minute buckets, each with the min of its minimums and
    # the max of its maximums.
    merged = msgspec.structs.replace(synthetic_history(request.start, request.end, 600.0), step=600.0)
    assert merged.min is not None and merged.max is not None
    assert panel.set_history(merged)
    chart = panel.charts["network"]
    x, ys = chart.data()
    assert 0 < x.shape[0] == len(merged.ts) <= CHART_POINTS
    np.testing.assert_array_equal(ys["net_rx_bps"], np.array(merged.avg["net_rx_bps"], dtype=np.float64))
    band = chart.band_data("net_rx_bps")
    assert band is not None
    np.testing.assert_array_equal(band[1], np.array(merged.min["net_rx_bps"], dtype=np.float64))
    np.testing.assert_array_equal(band[2], np.array(merged.max["net_rx_bps"], dtype=np.float64))
    assert chart.x_range() == pytest.approx((request.start, request.end))


def double_click(widget: QWidget, at: QPointF) -> None:
    """The events a real double-click delivers (QTest.mouseDClick skips the first click, which
    pyqtgraph's scene needs to pair the second with)."""
    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    for kind, buttons in (
        (QEvent.Type.MouseButtonPress, left),
        (QEvent.Type.MouseButtonRelease, none),
        (QEvent.Type.MouseButtonDblClick, left),
        (QEvent.Type.MouseButtonRelease, none),
    ):
        event = QMouseEvent(kind, at, widget.mapToGlobal(at), left, buttons, Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(widget, event)


def _raw_history(ts: list[float], cpu: float = 30.0) -> History:
    return History(
        node_id=1,
        resolution="raw",
        from_=NOW - 300,
        to=NOW,
        fields=["cpu_pct"],
        ts=ts,
        avg={"cpu_pct": [cpu] * len(ts)},
    )


def test_an_outage_is_drawn_as_a_gap_in_history_and_in_the_live_tail(qtbot: QtBot) -> None:
    panel = make_panel(qtbot, initial=preset("live"))
    panel.set_interval(2.0)
    request = panel.current_request()
    # Samples every 2 s, then 38 s of nothing (an outage), then samples again.
    before = [request.start + 10 + 2 * i for i in range(10)]
    after = [before[-1] + 38 + 2 * i for i in range(5)]
    assert panel.set_history(_raw_history(before + after))
    cpu = panel.charts["cpu"]
    x, y = cpu.plotted("cpu_pct")
    assert len(x) == len(before) + len(after) + 1
    gap = int(np.flatnonzero(np.isnan(y))[0])
    assert x[gap - 1] == before[-1] and x[gap + 1] == after[0]  # the break sits inside the outage
    assert np.isfinite(np.delete(y, gap)).all()  # and nowhere else: 2 s steps are not gaps
    assert np.all(np.diff(x) > 0)

    # The live tail: a sample 2 s on continues the line; one 20 s later starts a new one.
    panel.append_sample(Sample(seq=100, ts=after[-1] + 2, metrics=reading(40.0)))
    assert np.isnan(cpu.plotted("cpu_pct")[1]).sum() == 1
    panel.append_sample(Sample(seq=101, ts=after[-1] + 22, metrics=reading(41.0)))
    x, y = cpu.plotted("cpu_pct")
    assert np.isnan(y).sum() == 2 and np.isnan(y[-2]) and y[-1] == 41.0


def test_rollups_break_where_buckets_are_missing_not_between_them(qtbot: QtBot) -> None:
    panel = make_panel(qtbot, initial=preset("24h"))
    panel.set_interval(2.0)  # raw spacing must not make every minute bucket a gap
    request = panel.current_request()
    ts = [request.start + 60 * i for i in range(30)] + [request.start + 60 * 40 + 60 * i for i in range(5)]
    history = _raw_history(ts)
    history.resolution = "1m"
    history.from_ = request.start
    assert panel.set_history(history)
    y = panel.charts["cpu"].plotted("cpu_pct")[1]
    assert np.isnan(y).sum() == 1


def test_reset_zoom_brings_a_zoomed_live_chart_back_to_following(qtbot: QtBot) -> None:
    panel = make_panel(qtbot, initial=preset("live"))
    panel.resize(900, 600)
    panel.show()
    qtbot.waitExposed(panel)
    cpu = panel.charts["cpu"]
    for i in range(5):
        panel.append_sample(Sample(seq=i + 1, ts=NOW - 50 + 10 * i, metrics=reading(30.0)))
    assert not panel.reset_button.isVisible() and "zoomed" not in panel.range_label.text()

    # The user zooms (what a wheel or drag on the plot emits): the chart stops following...
    cpu.set_x_range(NOW - 120, NOW - 60)
    cpu.vb.sigRangeChangedManually.emit([True, False])
    assert panel.zoomed and panel.reset_button.isVisible()
    assert "zoomed, not following live" in panel.range_label.text()
    assert panel.reset_button.text() == "Back to live"
    panel.append_sample(Sample(seq=10, ts=NOW + 10, metrics=reading(31.0)))
    assert cpu.x_range()[1] < NOW  # ...and the label says so

    # ...until reset: the live window again, and it follows the next sample.
    qtbot.mouseClick(panel.reset_button, Qt.MouseButton.LeftButton)
    assert not panel.zoomed and not panel.reset_button.isVisible()
    assert cpu.x_range()[1] == pytest.approx(NOW + 10)
    panel.append_sample(Sample(seq=11, ts=NOW + 20, metrics=reading(32.0)))
    assert cpu.x_range()[1] == pytest.approx(NOW + 20)

    # A double-click on a chart does the same.
    cpu.set_x_range(NOW - 120, NOW - 60)
    cpu.vb.sigRangeChangedManually.emit([True, False])
    assert panel.zoomed
    double_click(
        cpu.plot_widget.viewport(), QPointF(cpu.plot_widget.mapFromScene(cpu.vb.sceneBoundingRect().center()))
    )
    qtbot.waitUntil(lambda: not panel.zoomed, timeout=2000)
    assert cpu.x_range()[1] == pytest.approx(NOW + 20)
