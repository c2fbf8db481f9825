"""One history chart: a metric family's avg lines over time, its min-max band, a live tail and a crosshair."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QVBoxLayout, QWidget

from servermanager.desktop.charts.buffer import FloatArray, SeriesBuffer, as_float_array
from servermanager.desktop.charts.export import ChartExporter, ExportSeries
from servermanager.desktop.charts.families import ChartFamily
from servermanager.desktop.charts.items import BandItem, UnitAxisItem, set_y_scale
from servermanager.desktop.charts.ranges import LIVE_WINDOW
from servermanager.desktop.charts.theme import DARK, chart_theme
from servermanager.desktop.format import fmt_time, format_value


def break_gaps(x: FloatArray, ys: FloatArray, gap_after: float | None) -> tuple[FloatArray, FloatArray]:
    """x and the rows of ys with a NaN point inside every gap wider than gap_after seconds.

    With connect="finite" a NaN ends a line, so an outage shows as a gap rather than as a straight
    line bridging it; the inserted x sits mid-gap so x stays sorted.
    """
    if gap_after is None or x.shape[0] < 2:
        return x, ys
    at = np.flatnonzero(np.diff(x) > gap_after) + 1
    if not at.shape[0]:
        return x, ys
    mid = (x[at - 1] + x[at]) / 2
    return np.insert(x, at, mid), np.insert(ys, at, np.nan, axis=1)


def add_crosshair(
    pi: pg.PlotItem, plot_widget: pg.PlotWidget, on_move: Callable[[tuple[QPointF]], None]
) -> tuple[pg.InfiniteLine, pg.TextItem, pg.SignalProxy]:
    """A vertical line and a value label over `pi`, and mouse moves relayed to `on_move`.

    Rate-limited: the label is HTML, and laying out text on every move event would lag the pointer.
    """
    line = pg.InfiniteLine(angle=90, movable=False)
    line.setZValue(50)
    label = pg.TextItem(anchor=(0, 0))
    label.setZValue(51)
    pi.addItem(line, ignoreBounds=True)
    pi.addItem(label, ignoreBounds=True)
    proxy = pg.SignalProxy(plot_widget.scene().sigMouseMoved, rateLimit=60, slot=on_move)
    return line, label, proxy


class HistoryChart(QWidget):
    """One metric family over time: avg lines, an optional min-max band, a live tail and a crosshair."""

    # (start, end) of the x view after the user zoomed or panned with the mouse (fires during drags).
    rangeSelected = Signal(float, float)
    # Data x under the mouse, so a panel can mirror the crosshair on sibling charts; hidden on leave.
    crosshairMoved = Signal(float)
    crosshairHidden = Signal()
    # Data x (a moment, unix seconds) of a left click inside the plot: "what was happening then".
    pointClicked = Signal(float)
    # A double-click inside the plot: undo the zoom.
    resetRequested = Signal()

    def __init__(
        self,
        family: ChartFamily,
        parent: QWidget | None = None,
        *,
        dark: bool = True,
        live_window: float = LIVE_WINDOW,
    ) -> None:
        super().__init__(parent)
        self.family = family
        self.setAccessibleName(f"{family.title} chart")
        self.live_window = live_window
        # Whether append_live scrolls the view to keep the newest point in sight; a manual zoom stops it.
        self.follow_tail = True
        self._theme = chart_theme(dark)
        self._buf = SeriesBuffer(len(family.fields))
        self._band_visible = False
        # Points further apart than this (seconds) are an outage: the line breaks there instead of
        # bridging it. None: no breaks (the expected spacing is not known yet).
        self.gap_after: float | None = None

        self._axis = UnitAxisItem(family.unit)
        self.plot_widget = pg.PlotWidget(
            axisItems={"bottom": pg.DateAxisItem(orientation="bottom"), "left": self._axis}
        )
        self.plot_item: pg.PlotItem = self.plot_widget.getPlotItem()
        pi = self.plot_item
        pi.setMenuEnabled(False)  # pyqtgraph's menu offers FFT/log transforms that make no sense here
        pi.hideButtons()
        pi.setMouseEnabled(x=True, y=False)
        pi.setDownsampling(auto=True, mode="peak")  # peak keeps spikes visible when decimating
        pi.setClipToView(True)
        for name in ("left", "bottom"):
            # Major and minor ticks only: the sub-minor level adds dozens of grid lines (each an
            # alpha-blended line across the plot, the largest paint cost after the data) for no reading.
            pi.getAxis(name).setStyle(maxTickLevel=1)
        # Fixed left-axis width so every chart of a panel has the same plot width and linked x axes align.
        self._axis.setWidth(72)
        self.vb: pg.ViewBox = pi.getViewBox()
        set_y_scale(self.vb, family.unit)
        self.vb.sigRangeChangedManually.connect(self._on_manual_range)
        # The y range of auto-ranged charts settles only at paint time, after the label was placed.
        self.vb.sigRangeChanged.connect(self._on_range_changed)

        self.curves: dict[str, pg.PlotDataItem] = {}
        self._bands: dict[str, BandItem] = {}
        for field in family.fields:
            curve = pg.PlotDataItem(connect="finite")
            pi.addItem(curve)
            self.curves[field] = curve
            band = BandItem()
            band.setZValue(-1)  # under every line
            # Band items join the plot only while a band is shown (see _show_band).
            self._bands[field] = band

        self.crosshair_line, self.crosshair_label, self._mouse_proxy = add_crosshair(
            pi, self.plot_widget, self.mouse_moved
        )
        self.hide_crosshair()

        self.plot_widget.scene().sigMouseClicked.connect(self.mouse_clicked)
        # Right-click: the chart as PNG, its data as CSV.
        self.exporter = ChartExporter(self, self.plot_widget, self.export_series, lambda: self.family.title)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)
        self.setMinimumHeight(150)
        self.set_theme(dark)

    # ------------------------------------------------------------ data

    @property
    def fields(self) -> tuple[str, ...]:
        return self.family.fields

    def set_history(
        self,
        ts: Sequence[float] | FloatArray,
        avg: Mapping[str, Sequence[float | None] | FloatArray],
        min: Mapping[str, Sequence[float | None] | FloatArray] | None = None,  # the REST names
        max: Mapping[str, Sequence[float | None] | FloatArray] | None = None,
        *,
        keep_newer_tail: bool = False,
    ) -> None:
        """Replace the data: avg as lines, and a faint min-max band when both min and max are given.

        keep_newer_tail keeps already appended live points newer than the last history point, so
        samples pushed while the history request was in flight are not lost.
        """
        x = np.asarray(ts, dtype=np.float64)
        n = int(x.shape[0])
        y = (
            np.vstack([as_float_array(avg.get(f), n) for f in self.fields])
            if n
            else np.empty((len(self.fields), 0))
        )
        tail: tuple[FloatArray, FloatArray] | None = None
        if keep_newer_tail and len(self._buf):
            newest = x[-1] if n else -math.inf
            i = int(np.searchsorted(self._buf.xs(), newest, side="right"))
            tail = self._buf.xs()[i:].copy(), self._buf.ys()[:, i:].copy()
        self._buf.replace(x, y)
        if tail is not None:
            for j in range(tail[0].shape[0]):
                self._buf.append(float(tail[0][j]), tail[1][:, j])
        self._refresh_curves()
        if min is not None and max is not None and n:
            for f in self.fields:
                lo = as_float_array(min.get(f), n)
                hi = as_float_array(max.get(f), n)
                bx, (blo, bhi) = break_gaps(x, np.vstack([lo, hi]), self.gap_after)
                self._bands[f].set_data(bx, blo, bhi)
            self._show_band(True)
        else:
            self._show_band(False)

    def append_live(self, ts: float, values: Mapping[str, float | None]) -> bool:
        """Append one point and drop those older than the live window; False if ts is not newer."""
        last = self._buf.last_x()
        if last is not None and ts <= last:
            return False  # a duplicate (reconnect snapshot) or an out-of-order sample: x must stay sorted
        row = np.array([values.get(f) for f in self.fields], dtype=np.float64)
        self._buf.append(float(ts), row)
        self._buf.drop_before(ts - self.live_window)
        # Raw samples have no min/max, and a band that stopped short of the tail would mislead.
        self._show_band(False)
        self._refresh_curves()
        if self.follow_tail:
            self.vb.setXRange(ts - self.live_window, ts, padding=0.0)
        return True

    def clear(self) -> None:
        self._buf.clear()
        self._show_band(False)
        self._refresh_curves()
        self.hide_crosshair()

    def data(self) -> tuple[FloatArray, dict[str, FloatArray]]:
        """Copies of the points held (x, {field: y}): what the chart draws before clipping."""
        x = self._buf.xs().copy()
        ys = self._buf.ys()
        return x, {f: ys[i].copy() for i, f in enumerate(self.fields)}

    def export_series(self) -> list[ExportSeries]:
        """The lines as exported to CSV: one per field, named by its legend."""
        x, ys = self.data()
        return [
            ExportSeries(label, self.family.unit, x, ys[f])
            for f, label in zip(self.fields, self.family.labels, strict=True)
        ]

    @property
    def buffer_capacity(self) -> int:
        return self._buf.capacity

    def set_x_range(self, start: float, end: float) -> None:
        self.vb.setXRange(start, end, padding=0.0)

    def x_range(self) -> tuple[float, float]:
        lo, hi = self.vb.viewRange()[0]
        return float(lo), float(hi)

    def set_gap_after(self, seconds: float | None) -> None:
        """Break the lines where points are more than `seconds` apart (None: never)."""
        if seconds != self.gap_after:
            self.gap_after = seconds
            self._refresh_curves()

    def plotted(self, field: str) -> tuple[FloatArray, FloatArray]:
        """What the curve of field was given to draw: the points with a NaN at every outage."""
        x, y = self.curves[field].getOriginalDataset()
        if x is None or y is None:
            return np.empty(0), np.empty(0)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def _refresh_curves(self) -> None:
        x, ys = break_gaps(self._buf.xs(), self._buf.ys(), self.gap_after)
        for i, f in enumerate(self.fields):
            y = ys[i]
            # The finite check costs a pass over the data in pyqtgraph on every repaint; skip it when
            # there is nothing to skip.
            self.curves[f].setData(x, y, connect="finite", skipFiniteCheck=bool(np.isfinite(y).all()))

    def _show_band(self, visible: bool) -> None:
        # A band item sits in the plot only while shown, so it never counts in the y auto-range
        # or costs a paint when there is nothing to draw.
        if visible == self._band_visible:
            return
        self._band_visible = visible
        for band in self._bands.values():
            if visible:
                self.plot_item.addItem(band)
            else:
                self.plot_item.removeItem(band)

    def band_data(self, field: str) -> tuple[FloatArray, FloatArray, FloatArray] | None:
        """(x, min, max) of the band shown for field, or None without a band."""
        return self._bands[field].data() if self._band_visible else None

    @property
    def has_band(self) -> bool:
        return self._band_visible

    def _on_manual_range(self, _mask: object) -> None:
        self.follow_tail = False
        lo, hi = self.x_range()
        self.rangeSelected.emit(lo, hi)

    # ------------------------------------------------------------ crosshair

    def mouse_moved(self, args: tuple[QPointF]) -> None:
        """SignalProxy slot: args is (scene position,)."""
        pos = args[0]
        if not self.vb.sceneBoundingRect().contains(pos):
            self.hide_crosshair()
            self.crosshairHidden.emit()
            return
        x = float(self.vb.mapSceneToView(pos).x())
        self.show_crosshair(x)
        self.crosshairMoved.emit(x)

    def mouse_clicked(self, event: Any) -> None:
        """Scene click slot: a left click on the plot picks that moment (pointClicked)."""
        if event.button() != Qt.MouseButton.LeftButton:
            return
        pos = event.scenePos()
        if not self.vb.sceneBoundingRect().contains(pos):
            return
        if event.double():
            self.resetRequested.emit()
        else:
            self.pointClicked.emit(float(self.vb.mapSceneToView(pos).x()))

    def show_crosshair(self, x: float) -> str:
        """Put the crosshair on the point nearest x and return the label's plain text."""
        xs = self._buf.xs()
        ys = self._buf.ys()
        if xs.shape[0]:
            i = int(np.searchsorted(xs, x))
            if i >= xs.shape[0] or (i > 0 and x - xs[i - 1] < xs[i] - x):
                i -= 1
            at = float(xs[i])
            vals: list[float | None] = [float(ys[k, i]) for k in range(len(self.fields))]
        else:
            at, vals = x, [None] * len(self.fields)
        when = fmt_time(at, seconds=True)
        th = self._theme
        rows = [f'<span style="color:{th.foreground}; font-weight:600">{when}</span>']
        plain = [when]
        for k, (label, v) in enumerate(zip(self.family.labels, vals, strict=True)):
            text = f"{label}: {format_value(self.family.unit, v, precise=True)}"
            colour = th.series[k % len(th.series)]
            rows.append(
                f'<span style="color:{colour}">●</span> <span style="color:{th.foreground}">{text}</span>'
            )
            plain.append(text)
        self.crosshair_label.setHtml("<br>".join(rows))
        self.crosshair_line.setPos(at)
        self.crosshair_line.show()
        self.crosshair_label.show()
        self._place_label()
        return "\n".join(plain)

    def _on_range_changed(self, *_: object) -> None:
        self._place_label()

    def _place_label(self) -> None:
        """Pin the label to the top of the view beside the line; re-run whenever the view moves."""
        if not self.crosshair_label.isVisible():
            return
        at = float(self.crosshair_line.value())
        (x0, x1), (_y0, y1) = self.vb.viewRange()
        # Flip the label to the left of the line in the right half so it never leaves the plot.
        self.crosshair_label.setAnchor((1, 0) if at > (x0 + x1) / 2 else (0, 0))
        self.crosshair_label.setPos(at, y1)

    def hide_crosshair(self) -> None:
        self.crosshair_line.hide()
        self.crosshair_label.hide()

    def leaveEvent(self, event: QEvent) -> None:
        # The scene reports moves only inside it: a fast exit would leave the crosshair standing.
        self.hide_crosshair()
        self.crosshairHidden.emit()
        super().leaveEvent(event)

    @property
    def crosshair_text(self) -> str:
        return str(self.crosshair_label.textItem.toPlainText())

    # ------------------------------------------------------------ theme

    @property
    def dark(self) -> bool:
        return self._theme is DARK

    def set_theme(self, dark: bool) -> None:
        """Re-colour background, axes, title, pens and crosshair in place (no data is reloaded)."""
        th = self._theme = chart_theme(dark)
        self.plot_widget.setBackground(th.background)
        pi = self.plot_item
        for name in ("left", "bottom"):
            ax = pi.getAxis(name)
            ax.setPen(pg.mkPen(th.axis))
            ax.setTextPen(pg.mkPen(th.foreground))
        pi.showGrid(x=True, y=True, alpha=th.grid_alpha)
        for k, f in enumerate(self.fields):
            colour = th.series[k % len(th.series)]
            # Width 1 lines are the fast path of Qt's raster engine: with 2 px, panning a 30-day view
            # of 1-minute points fell from 68 to 25 fps (benchmarks/chart_pan.py).
            self.curves[f].setPen(pg.mkPen(colour, width=1))
            band = QColor(colour)
            band.setAlpha(th.band_alpha)
            self._bands[f].set_brush(QBrush(band))
        self.crosshair_line.setPen(pg.mkPen(th.crosshair, width=1, style=Qt.PenStyle.DashLine))
        self.crosshair_label.fill = pg.mkBrush(th.label_fill)
        self.crosshair_label.border = pg.mkPen(th.axis)
        self.crosshair_label.update()
        self._set_title()
        if self.crosshair_line.isVisible():
            self.show_crosshair(float(self.crosshair_line.value()))

    def _set_title(self) -> None:
        # The series key lives in the title row rather than a legend box, which would cover data.
        th = self._theme
        keys = "&nbsp;&nbsp;".join(
            f'<span style="color:{th.series[k % len(th.series)]}">━━</span>&nbsp;{label}'
            for k, label in enumerate(self.family.labels)
        )
        html = f"<b>{self.family.title}</b>&nbsp;&nbsp;&nbsp;<span style='font-size:8pt'>{keys}</span>"
        self.plot_item.setTitle(html, color=th.foreground, size="9pt")

    def background_color(self) -> QColor:
        return QColor(self.plot_widget.backgroundBrush().color())
