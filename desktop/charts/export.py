"""Export of a chart: the picture as PNG and the data as CSV (ISO 8601 UTC times, one column per series)."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QSize, Qt, Signal
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox, QWidget

from servermanager.common.metrics import Unit
from servermanager.desktop.charts.buffer import FloatArray

log = logging.getLogger(__name__)

# What follows a column's name in the CSV header; counts and plain numbers have no unit.
UNIT_SUFFIX: dict[Unit, str] = {
    Unit.PERCENT: "%",
    Unit.BYTES: "B",
    Unit.BYTES_PER_S: "B/s",
    Unit.PER_S: "/s",
    Unit.SECONDS: "s",
}
TIME_HEADER = "time (UTC)"


@dataclass(frozen=True)
class ExportSeries:
    """One line of a chart: its legend name, unit and points (each series may have its own times)."""

    label: str
    unit: Unit
    x: FloatArray
    y: FloatArray

    @property
    def header(self) -> str:
        suffix = UNIT_SUFFIX.get(self.unit)
        return f"{self.label} ({suffix})" if suffix else self.label


def iso_utc(ts: float) -> str:
    """2026-11-30T13:00:05Z, with milliseconds only when the moment has them."""
    moment = datetime.fromtimestamp(ts, UTC)
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _cell(v: float) -> str:
    # An outage or a missing reading is an empty cell, which spreadsheets read as "no value".
    return "" if not math.isfinite(v) else f"{v:.10g}"


def write_csv(path: str | Path, series: Sequence[ExportSeries]) -> int:
    """Write one row per moment any series has a point (sorted), one column per series; rows written."""
    times = np.unique(np.concatenate([s.x for s in series])) if series else np.empty(0)
    columns: list[list[str]] = []
    for s in series:
        # Series have their own times (nodes sample at their own moments): a cell only where it has one.
        at = {float(t): float(v) for t, v in zip(s.x, s.y, strict=True)}
        columns.append([_cell(at.get(float(t), math.nan)) for t in times])
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([TIME_HEADER, *(s.header for s in series)])
        for i, t in enumerate(times):
            writer.writerow([iso_utc(float(t)), *(col[i] for col in columns)])
    return int(times.shape[0])


def write_png(widget: QWidget, path: str | Path) -> QSize:
    """Render widget as it is on screen into a PNG file; the image's size (device pixels)."""
    image = widget.grab()
    if image.isNull() or not image.save(str(path), "PNG"):
        raise OSError(f"could not write a PNG to {path}")
    return image.size()


class ChartExporter(QObject):
    """The export menu of one chart: right-click on the plot, then a file dialog, then the file.

    The dialog is opened with open(), not exec(): a nested event loop would stall the network.
    """

    saved = Signal(str)  # the path written

    def __init__(
        self,
        widget: QWidget,
        plot_widget: pg.PlotWidget,
        series: Callable[[], Sequence[ExportSeries]],
        name: Callable[[], str],
    ) -> None:
        super().__init__(widget)
        self.widget = widget  # what the PNG shows
        self.series = series
        self.name = name  # a default file name (without suffix)
        self.dialog: QFileDialog | None = None
        self.error_box: QMessageBox | None = None
        plot_widget.scene().sigMouseClicked.connect(self._clicked)

    def _clicked(self, event: Any) -> None:
        if event.button() == Qt.MouseButton.RightButton:
            self.menu().popup(QCursor.pos())

    def menu(self) -> QMenu:
        menu = QMenu(self.widget)
        png = menu.addAction("Export image (PNG)…")
        png.triggered.connect(lambda: self.ask("png"))
        data = menu.addAction("Export data (CSV)…")
        data.triggered.connect(lambda: self.ask("csv"))
        data.setEnabled(any(s.x.shape[0] for s in self.series()))
        return menu

    def ask(self, kind: str) -> QFileDialog:
        """The save dialog for kind ("png" or "csv"); choosing a file writes it."""
        filters = {"png": "PNG image (*.png)", "csv": "CSV data (*.csv)"}
        stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in self.name()) or "chart"
        dialog = QFileDialog(self.widget, "Export chart", f"{stem}.{kind}", filters[kind])
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix(kind)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(lambda path: self.export(kind, path))
        self.dialog = dialog
        dialog.open()
        return dialog

    def export(self, kind: str, path: str | Path) -> bool:
        """Write the chart as kind to path; on failure one log line and a message, never a traceback."""
        try:
            if kind == "png":
                write_png(self.widget, path)
            else:
                write_csv(path, self.series())
        except OSError as exc:
            log.warning("chart export to %s failed: %s", path, exc)
            box = QMessageBox(
                QMessageBox.Icon.Warning, "Export chart", f"Could not write {path}: {exc}", parent=self.widget
            )
            box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            self.error_box = box
            box.open()
            return False
        self.saved.emit(str(path))
        return True
