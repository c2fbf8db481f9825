"""Chart export: CSV with ISO 8601 UTC times and unit headers, PNG of the chart as drawn, and failures."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtGui import QImage
from pytestqt.qtbot import QtBot

from servermanager.common.metrics import Unit
from servermanager.desktop.charts.compare import CompareChart
from servermanager.desktop.charts.export import TIME_HEADER, ExportSeries, iso_utc, write_csv
from tests.desktop.charts.conftest import NOW, make_chart


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_iso_utc_keeps_milliseconds_only_when_there_are_some() -> None:
    assert iso_utc(0.0) == "1970-01-01T00:00:00Z"
    assert iso_utc(1_750_000_000.25) == "2025-06-15T15:06:40.250Z"


def test_a_node_chart_exports_its_lines_as_csv_with_units_in_the_header(qtbot: QtBot, tmp_path: Path) -> None:
    chart = make_chart(qtbot, "memory")
    ts = [NOW, NOW + 10, NOW + 20]
    chart.set_history(ts, {"mem_pct": [40.0, None, 42.5], "swap_pct": [1.0, 2.0, 3.0]})
    path = tmp_path / "memory.csv"
    assert chart.exporter.export("csv", path)
    rows = read_csv(path)
    assert rows[0] == [TIME_HEADER, "RAM (%)", "Swap (%)"]
    assert rows[1:] == [
        [iso_utc(NOW), "40", "1"],
        [iso_utc(NOW + 10), "", "2"],  # a missing reading is an empty cell
        [iso_utc(NOW + 20), "42.5", "3"],
    ]


def test_series_with_their_own_times_share_one_sorted_time_column(tmp_path: Path) -> None:
    a = ExportSeries("web-1", Unit.BYTES_PER_S, np.array([10.0, 30.0]), np.array([1.0, 3.0]))
    b = ExportSeries("db-1", Unit.COUNT, np.array([20.0, 30.0]), np.array([2.0, 4.0]))
    assert write_csv(tmp_path / "x.csv", [a, b]) == 3
    rows = read_csv(tmp_path / "x.csv")
    assert rows[0] == [TIME_HEADER, "web-1 (B/s)", "db-1"]
    assert [r[1:] for r in rows[1:]] == [["1", ""], ["", "2"], ["3", "4"]]


def test_png_is_the_chart_as_drawn(qtbot: QtBot, tmp_path: Path) -> None:
    chart = CompareChart(Unit.PERCENT, "CPU", dark=False)
    qtbot.addWidget(chart)
    chart.resize(640, 300)
    chart.show()
    qtbot.waitExposed(chart)
    chart.set_series(1, "web-1", np.array([NOW, NOW + 10, NOW + 20]), [10.0, 50.0, 90.0])
    chart.set_x_range(NOW, NOW + 20)
    path = tmp_path / "cpu.png"
    # Through the dialog's signal, as a user choosing a file would.
    dialog = chart.exporter.ask("png")
    dialog.fileSelected.emit(str(path))
    image = QImage(str(path))
    assert not image.isNull()
    ratio = chart.devicePixelRatioF()
    assert (image.width(), image.height()) == (round(640 * ratio), round(300 * ratio))
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 3  # background, axes, text and the line: not a blank image


def test_the_menu_offers_both_exports_and_csv_only_with_data(qtbot: QtBot) -> None:
    chart = make_chart(qtbot, "cpu")
    texts = [a.text() for a in chart.exporter.menu().actions()]
    assert texts == ["Export image (PNG)…", "Export data (CSV)…"]
    assert not chart.exporter.menu().actions()[1].isEnabled()
    chart.set_history([NOW], {"cpu_pct": [5.0]})
    assert chart.exporter.menu().actions()[1].isEnabled()


def test_an_unwritable_path_is_one_log_line_and_a_message(
    qtbot: QtBot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chart = make_chart(qtbot, "cpu")
    chart.set_history([NOW], {"cpu_pct": [5.0]})
    with caplog.at_level(logging.WARNING):
        assert not chart.exporter.export("csv", tmp_path / "missing" / "cpu.csv")
    assert len(caplog.records) == 1 and "cpu.csv" in caplog.records[0].getMessage()
    assert chart.exporter.error_box is not None
    assert "Could not write" in chart.exporter.error_box.text()
    chart.exporter.error_box.close()
