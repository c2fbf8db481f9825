"""The compare chart: one metric of several nodes overlaid, each node a line with its own times."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QPointF, Qt, Signal
from PySide6.QtWidgets import QVBoxLayout, QWidget

from servermanager.common.metrics import Unit
from servermanager.desktop.charts.buffer import FloatArray, SeriesBuffer, as_float_array
from servermanager.desktop.charts.chart import add_crosshair, break_gaps
from servermanager.desktop.charts.export import ChartExporter, ExportSeries
from servermanager.desktop.charts.items import UnitAxisItem, set_y_scale
from servermanager.desktop.charts.ranges import LIVE_WINDOW
from servermanager.desktop.charts.theme import ChartTheme, chart_theme
from servermanager.desktop.format import fmt_time, format_value

MAX_SERIES = 10


def series_pen(theme: ChartTheme, k: int) -> tuple[str, Qt.PenStyle]:
    """Colour and dash of the k-th line: the theme's hues, then the same hues dashed, so ten lines
    stay apart while keeping the colour-vision-friendly palette."""
    n = len(theme.series)
    return theme.series[k % n], (Qt.PenStyle.SolidLine if (k // n) % 2 == 0 else Qt.PenStyle.DashLine)


@dataclass
class _Line:
    label: str
    buf: SeriesBuffer
    curve: pg.PlotDataItem
    gap_after: float | None = None


class CompareChart(QWidget):
    """One unit's lines, one per node (keyed by node id), with a legend, a crosshair and export."""

    rangeSelected = Signal(float, float)  # the x view after a manual zoom or pan
    resetRequested = Signal()  # a double-click: undo the zoom

    def __init__(self, unit: Unit, title: str, parent: QWidget | None = None, *, dark: bool = True) -> None:
        super().__init__(parent)
        self.unit = unit
        self.title = title
        self.follow_tail = True
        self.live_window = LIVE_WINDOW
        self._theme = chart_theme(dark)
        self.lines: dict[int, _Line] = {}

        self._axis = UnitAxisItem(unit)
        self.plot_widget = pg.PlotWidget(
            axisItems={"bottom": pg.DateAxisItem(orientation="bottom"), "left": self._axis}
        )
        pi = self.plot_item = self.plot_widget.getPlotItem()
        pi.setMenuEnabled(False)
        pi.hideButtons()
        pi.setMouseEnabled(x=True, y=False)
        pi.setDownsampling(auto=True, mode="peak")
        pi.setClipToView(True)
        self._axis.setWidth(72)
        self.vb: pg.ViewBox = pi.getViewBox()
        set_y_scale(self.vb, unit)
        self.vb.sigRangeChangedManually.connect(self._on_manual_range)
        self.legend = pi.addLegend(offset=(8, 8))

        self.crosshair_line, self.crosshair_label, self._mouse_proxy = add_crosshair(
            pi, self.plot_widget, self.mouse_moved
        )
        self.hide_crosshair()
        self.plot_widget.scene().sigMouseClicked.connect(self._clicked)
        self.exporter = ChartExporter(self, self.plot_widget, self.export_series, lambda: self.title)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)
        self.setMinimumHeight(200)
        self.set_theme(dark)

    # ------------------------------------------------------------ data

    def set_series(
        self, key: int, label: str, x: FloatArray, y: FloatArray | Sequence[float | None] | None
    ) -> None:
        """Replace (or add) the line of key with these points."""
        xs = np.asarray(x, dtype=np.float64)
        ys = as_float_array(y, int(xs.shape[0]))
        line = self.lines.get(key)
        if line is None:
            curve = pg.PlotDataItem(connect="finite", name=label)
            self.plot_item.addItem(curve)
            line = self.lines[key] = _Line(label, SeriesBuffer(1), curve)
            self._restyle()
        elif line.label != label:
            line.label = label
            self._rebuild_legend()
        line.buf.replace(xs, ys.reshape(1, -1))
        self._refresh(line)

    def remove_series(self, key: int) -> None:
        line = self.lines.pop(key, None)
        if line is not None:
            self.plot_item.removeItem(line.curve)
            self._restyle()

    def clear(self) -> None:
        for key in list(self.lines):
            self.remove_series(key)

    def append_live(self, key: int, ts: float, value: float | None) -> bool:
        """Append one point to key's line; False if it has no line or ts is not newer."""
        line = self.lines.get(key)
        if line is None:
            return False
        last = line.buf.last_x()
        if last is not None and ts <= last:
            return False
        line.buf.append(float(ts), np.array([np.nan if value is None else value], dtype=np.float64))
        line.buf.drop_before(ts - self.live_window)
        self._refresh(line)
        if self.follow_tail:
            self.vb.setXRange(ts - self.live_window, ts, padding=0.0)
        return True

    def set_gap_after(self, key: int, seconds: float | None) -> None:
        """Break key's line where its points are more than `seconds` apart (None: never)."""
        line = self.lines.get(key)
        if line is not None and line.gap_after != seconds:
            line.gap_after = seconds
            self._refresh(line)

    def data(self, key: int) -> tuple[FloatArray, FloatArray]:
        line = self.lines[key]
        return line.buf.xs().copy(), line.buf.ys()[0].copy()

    def plotted(self, key: int) -> tuple[FloatArray, FloatArray]:
        """What key's curve was given to draw: its points with a NaN at every outage."""
        x, y = self.lines[key].curve.getOriginalDataset()
        if x is None or y is None:
            return np.empty(0), np.empty(0)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def labels(self) -> list[str]:
        return [line.label for line in self.lines.values()]

    def legend_labels(self) -> list[str]:
        return [label.text for _sample, label in self.legend.items]

    def export_series(self) -> list[ExportSeries]:
        return [ExportSeries(line.label, self.unit, *self.data(k)) for k, line in self.lines.items()]

    def set_x_range(self, start: float, end: float) -> None:
        self.vb.setXRange(start, end, padding=0.0)

    def x_range(self) -> tuple[float, float]:
        lo, hi = self.vb.viewRange()[0]
        return float(lo), float(hi)

    def newest(self) -> float | None:
        ends = [x for line in self.lines.values() if (x := line.buf.last_x()) is not None]
        return max(ends) if ends else None

    def _refresh(self, line: _Line) -> None:
        x, ys = break_gaps(line.buf.xs(), line.buf.ys(), line.gap_after)
        y = ys[0]
        line.curve.setData(x, y, connect="finite", skipFiniteCheck=bool(np.isfinite(y).all()))

    def _on_manual_range(self, _mask: object) -> None:
        self.follow_tail = False
        self.rangeSelected.emit(*self.x_range())

    # ------------------------------------------------------------ crosshair

    def _clicked(self, event: object) -> None:
        double = getattr(event, "double", None)
        button = getattr(event, "button", None)
        if double is not None and button is not None and button() == Qt.MouseButton.LeftButton and double():
            self.resetRequested.emit()

    def mouse_moved(self, args: tuple[QPointF]) -> None:
        pos = args[0]
        if not self.vb.sceneBoundingRect().contains(pos):
            self.hide_crosshair()
            return
        self.show_crosshair(float(self.vb.mapSceneToView(pos).x()))

    def show_crosshair(self, x: float) -> str:
        """The crosshair at x, labelled with each node's point nearest x; the label's plain text."""
        th = self._theme
        when = fmt_time(x, seconds=True)
        rows = [f'<span style="color:{th.foreground}; font-weight:600">{when}</span>']
        plain = [when]
        for k, line in enumerate(self.lines.values()):
            xs, ys = line.buf.xs(), line.buf.ys()[0]
            v: float | None = None
            if xs.shape[0]:
                i = int(np.searchsorted(xs, x))
                if i >= xs.shape[0] or (i > 0 and x - xs[i - 1] < xs[i] - x):
                    i -= 1
                # A point further away than the line's gap would be a reading from outside an outage.
                if line.gap_after is None or abs(xs[i] - x) <= line.gap_after:
                    v = float(ys[i])
            text = f"{line.label}: {format_value(self.unit, v, precise=True)}"
            colour, _ = series_pen(th, k)
            rows.append(
                f'<span style="color:{colour}">●</span> <span style="color:{th.foreground}">{text}</span>'
            )
            plain.append(text)
        self.crosshair_label.setHtml("<br>".join(rows))
        self.crosshair_line.setPos(x)
        (x0, x1), (_y0, y1) = self.vb.viewRange()
        self.crosshair_label.setAnchor((1, 0) if x > (x0 + x1) / 2 else (0, 0))
        self.crosshair_label.setPos(x, y1)
        self.crosshair_line.show()
        self.crosshair_label.show()
        return "\n".join(plain)

    def hide_crosshair(self) -> None:
        self.crosshair_line.hide()
        self.crosshair_label.hide()

    def leaveEvent(self, event: QEvent) -> None:
        self.hide_crosshair()
        super().leaveEvent(event)

    @property
    def crosshair_text(self) -> str:
        return str(self.crosshair_label.textItem.toPlainText())

    # ------------------------------------------------------------ theme

    @property
    def dark(self) -> bool:
        return self._theme is chart_theme(True)

    def set_theme(self, dark: bool) -> None:
        th = self._theme = chart_theme(dark)
        self.plot_widget.setBackground(th.background)
        pi = self.plot_item
        for name in ("left", "bottom"):
            ax = pi.getAxis(name)
            ax.setPen(pg.mkPen(th.axis))
            ax.setTextPen(pg.mkPen(th.foreground))
        pi.showGrid(x=True, y=True, alpha=th.grid_alpha)
        self.legend.setBrush(pg.mkBrush(th.label_fill))
        self.legend.setPen(pg.mkPen(th.axis))
        self.legend.setLabelTextColor(th.foreground)
        self.crosshair_line.setPen(pg.mkPen(th.crosshair, width=1, style=Qt.PenStyle.DashLine))
        self.crosshair_label.fill = pg.mkBrush(th.label_fill)
        self.crosshair_label.border = pg.mkPen(th.axis)
        self.plot_item.setTitle(f"<b>{self.title}</b>", color=th.foreground, size="9pt")
        self._restyle()

    def _restyle(self) -> None:
        for k, line in enumerate(self.lines.values()):
            colour, style = series_pen(self._theme, k)
            line.curve.setPen(
                pg.mkPen(colour, width=1.5 if style is Qt.PenStyle.DashLine else 1, style=style)
            )
        self._rebuild_legend()

    def _rebuild_legend(self) -> None:
        # The legend follows the lines' order and names (a node renamed, one removed).
        self.legend.clear()
        for line in self.lines.values():
            self.legend.addItem(line.curve, line.label)
