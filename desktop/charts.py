"""History charts: dumb pyqtgraph widgets that draw metric series and ask for time ranges via signals."""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from numpy.typing import NDArray
from PySide6.QtCore import QDateTime, QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QPainter, QPalette
from PySide6.QtWidgets import (
    QButtonGroup,
    QDateTimeEdit,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from servermanager.common.history import Resolution, choose_resolution
from servermanager.common.metrics import Sample

__all__ = [
    "DARK",
    "DEFAULT_FAMILIES",
    "LIGHT",
    "PRESET_RANGES",
    "BandItem",
    "ChartFamily",
    "ChartPanel",
    "ChartRange",
    "ChartTheme",
    "CustomRangeDialog",
    "HistoryChart",
    "Resolution",
    "Unit",
    "UnitAxisItem",
    "choose_resolution",
    "format_bytes_rate",
    "format_percent",
    "format_plain",
    "preset",
    "request_for",
]

FloatArray = NDArray[np.float64]

LIVE_WINDOW = 300.0
_LABEL_SLACK_PX = 10


# ---------------------------------------------------------------- ranges


@dataclass(frozen=True)
class ChartRange:
    """A time range the user can pick: a span ending now (`span`), or a fixed custom [start, end]."""

    key: str
    label: str
    span: float | None = None
    start: float | None = None
    end: float | None = None
    live: bool = False

    @classmethod
    def custom(cls, start: float, end: float) -> ChartRange:
        if not end > start:
            raise ValueError(f"custom range must end after it starts ({start} >= {end})")
        return cls(key="custom", label="Custom", start=float(start), end=float(end))

    @property
    def is_custom(self) -> bool:
        return self.span is None


LIVE_5M = ChartRange("live", "Live 5 min", span=LIVE_WINDOW, live=True)
LAST_1H = ChartRange("1h", "1 h", span=3600.0)
LAST_24H = ChartRange("24h", "24 h", span=86400.0)
LAST_7D = ChartRange("7d", "7 d", span=7 * 86400.0)
LAST_30D = ChartRange("30d", "30 d", span=30 * 86400.0)
PRESET_RANGES: tuple[ChartRange, ...] = (LIVE_5M, LAST_1H, LAST_24H, LAST_7D, LAST_30D)
_PRESETS_BY_KEY = {r.key: r for r in PRESET_RANGES}


def preset(key: str) -> ChartRange:
    """The preset range with this key ("live", "1h", "24h", "7d", "30d"), e.g. from a setting."""
    try:
        return _PRESETS_BY_KEY[key]
    except KeyError:
        raise KeyError(f"no chart range {key!r}; known: {', '.join(_PRESETS_BY_KEY)}") from None


def request_for(rng: ChartRange, now: float) -> tuple[float, float, Resolution]:
    """(start, end, resolution) to ask the core for; never "auto", so the app gets what it draws."""
    if rng.live:
        # Live is raw by definition: the tail is appended from raw samples pushed over the socket.
        return now - LIVE_WINDOW, now, "raw"
    if rng.span is not None:
        start, end = now - rng.span, now
    else:
        assert rng.start is not None and rng.end is not None
        start, end = rng.start, rng.end
    return start, end, choose_resolution(start, end, now)


# ---------------------------------------------------------------- units


def format_percent(v: float) -> str:
    return f"{v:.1f} %"


_BINARY_PREFIXES = ("B", "KiB", "MiB", "GiB", "TiB")


def _binary_scale(v: float) -> tuple[float, str]:
    """The 1024-power and its prefix that puts |v| in [1, 1024)."""
    v = abs(v)
    i = 0
    while v >= 1024.0 and i < len(_BINARY_PREFIXES) - 1:
        v /= 1024.0
        i += 1
    return 1024.0**i, _BINARY_PREFIXES[i]


def format_bytes_rate(v: float) -> str:
    scale, prefix = _binary_scale(v)
    x = v / scale
    # Three significant digits whatever the magnitude: 1.23 MiB/s, 12.3 MiB/s, 123 MiB/s.
    digits = 0 if prefix == "B" or abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:.{digits}f} {prefix}/s"


def format_plain(v: float) -> str:
    return f"{v:.2f}"


class Unit(enum.Enum):
    """How a family's values read: on the y axis ticks and in the crosshair label."""

    PERCENT = "percent"
    BYTES_PER_S = "bytes_per_s"
    PLAIN = "plain"

    def format_value(self, v: float | None) -> str:
        if v is None or not math.isfinite(v):
            return "n/a"
        if self is Unit.PERCENT:
            return format_percent(v)
        if self is Unit.BYTES_PER_S:
            return format_bytes_rate(v)
        return format_plain(v)


@dataclass(frozen=True)
class ChartFamily:
    """One chart: a title, the SCALAR_FIELDS it draws (with display labels) and their unit."""

    key: str
    title: str
    fields: tuple[str, ...]
    labels: tuple[str, ...]
    unit: Unit

    def __post_init__(self) -> None:
        if len(self.fields) != len(self.labels):
            raise ValueError("one label per field")


DEFAULT_FAMILIES: tuple[ChartFamily, ...] = (
    ChartFamily("cpu", "CPU", ("cpu_pct",), ("CPU",), Unit.PERCENT),
    ChartFamily("memory", "Memory", ("mem_pct", "swap_pct"), ("RAM", "Swap"), Unit.PERCENT),
    ChartFamily("disk", "Disk usage", ("disk_pct",), ("Fullest mount",), Unit.PERCENT),
    ChartFamily(
        "disk_io", "Disk I/O", ("disk_read_bps", "disk_write_bps"), ("Read", "Write"), Unit.BYTES_PER_S
    ),
    ChartFamily(
        "network", "Network", ("net_rx_bps", "net_tx_bps"), ("Receive", "Transmit"), Unit.BYTES_PER_S
    ),
    ChartFamily(
        "load", "Load average", ("load1", "load5", "load15"), ("1 min", "5 min", "15 min"), Unit.PLAIN
    ),
)


# ---------------------------------------------------------------- themes


@dataclass(frozen=True)
class ChartTheme:
    background: str
    foreground: str  # axis text and titles
    axis: str  # axis lines and ticks
    grid_alpha: float
    crosshair: str
    label_fill: str  # crosshair label background, with alpha so the lines stay visible beneath
    series: tuple[str, ...]
    band_alpha: int  # 0-255 opacity of the min-max band
    separator: str  # the gaps between the charts of a panel


# Okabe-Ito-like hues (distinguishable with the common colour-vision deficiencies), brightened for the
# dark background and deepened for the light one so both keep contrast.
DARK = ChartTheme(
    background="#1b1d23",
    foreground="#d5d8de",
    axis="#8a909c",
    grid_alpha=0.18,
    crosshair="#c8ccd4",
    label_fill="#23262ee6",
    series=("#56b4e9", "#f0a14a", "#5fd3a3", "#e47c9b", "#c9b458"),
    band_alpha=60,
    separator="#30333b",
)
LIGHT = ChartTheme(
    background="#ffffff",
    foreground="#22252b",
    axis="#5c6370",
    grid_alpha=0.22,
    crosshair="#4a4f59",
    label_fill="#ffffffe6",
    series=("#0072b2", "#d55e00", "#009e73", "#cc3d77", "#8a7a00"),
    band_alpha=50,
    separator="#d5d8de",
)


class UnitAxisItem(pg.AxisItem):
    """Left axis whose ticks carry the unit, at round numbers of the right binary prefix for bytes/s."""

    def __init__(self, unit: Unit, **kwargs: Any) -> None:
        super().__init__("left", **kwargs)
        self.unit = unit
        # Our own unit handling replaces pyqtgraph's SI prefixes (which are decimal, not KiB/MiB).
        self.enableAutoSIPrefix(False)

    def boundingRect(self) -> QRectF:
        # With a grid, pyqtgraph clips tick labels to the axis' own height, which hides the labels of
        # the end ticks (0 % and 100 %); a few pixels of slack keeps them.
        return super().boundingRect().adjusted(0, -_LABEL_SLACK_PX, 0, _LABEL_SLACK_PX)

    def _scale(self, lo: float, hi: float) -> tuple[float, str]:
        if self.unit is Unit.BYTES_PER_S:
            return _binary_scale(max(abs(lo), abs(hi)))
        return 1.0, ""

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:
        f, _ = self._scale(minVal, maxVal)
        if f == 1.0:
            return super().tickSpacing(minVal, maxVal, size)
        # Ticks at round numbers *of the prefix* (1, 2, 3 MiB/s), not at round byte counts.
        return [(s * f, o * f) for s, o in super().tickSpacing(minVal / f, maxVal / f, size)]

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        if self.unit is Unit.PERCENT:
            return [f"{s}%" for s in super().tickStrings(values, scale, spacing)]
        if self.unit is Unit.BYTES_PER_S and values:
            f, prefix = self._scale(*self.range)
            return [f"{s} {prefix}/s" for s in super().tickStrings(values, scale / f, spacing)]
        return super().tickStrings(values, scale, spacing)


# ---------------------------------------------------------------- data buffer


class _SeriesBuffer:
    """Preallocated float64 columns with a sliding [start, stop) window.

    Appending writes one slot; when the buffer's end is reached the live window is moved to the front
    (if it fills at most half) or the buffer doubles, so append is amortised O(1) and memory stays
    within twice the largest window ever held.
    """

    def __init__(self, n_series: int, capacity: int = 512) -> None:
        self.x: FloatArray = np.empty(capacity, dtype=np.float64)
        self.y: FloatArray = np.empty((n_series, capacity), dtype=np.float64)
        self.start = 0
        self.stop = 0

    @property
    def capacity(self) -> int:
        return int(self.x.shape[0])

    def __len__(self) -> int:
        return self.stop - self.start

    def replace(self, x: FloatArray, y: FloatArray) -> None:
        n = int(x.shape[0])
        # Keep headroom for the live tail that may follow a history load.
        cap = max(512, n + n // 4 + 64)
        self.x = np.empty(cap, dtype=np.float64)
        self.y = np.empty((y.shape[0], cap), dtype=np.float64)
        self.x[:n] = x
        self.y[:, :n] = y
        self.start, self.stop = 0, n

    def clear(self) -> None:
        self.start = self.stop = 0

    def append(self, t: float, row: FloatArray) -> None:
        if self.stop == self.capacity:
            n = len(self)
            if n <= self.capacity // 2:
                # numpy copies overlapping slices correctly.
                self.x[:n] = self.x[self.start : self.stop]
                self.y[:, :n] = self.y[:, self.start : self.stop]
            else:
                x = np.empty(self.capacity * 2, dtype=np.float64)
                y = np.empty((self.y.shape[0], self.capacity * 2), dtype=np.float64)
                x[:n] = self.x[self.start : self.stop]
                y[:, :n] = self.y[:, self.start : self.stop]
                self.x, self.y = x, y
            self.start, self.stop = 0, n
        self.x[self.stop] = t
        self.y[:, self.stop] = row
        self.stop += 1

    def drop_before(self, t: float) -> None:
        """Forget points older than t: x is sorted, so this is a binary search."""
        self.start += int(np.searchsorted(self.x[self.start : self.stop], t, side="left"))

    def xs(self) -> FloatArray:
        return self.x[self.start : self.stop]

    def ys(self) -> FloatArray:
        return self.y[:, self.start : self.stop]

    def last_x(self) -> float | None:
        return float(self.x[self.stop - 1]) if self.stop > self.start else None


def _as_float_array(values: Sequence[float | None] | FloatArray | None, n: int) -> FloatArray:
    """None becomes NaN (numpy does that for float64); a missing series is all NaN."""
    if values is None:
        return np.full(n, np.nan, dtype=np.float64)
    a = np.asarray(values, dtype=np.float64)
    if a.shape != (n,):
        raise ValueError(f"series has {a.shape[0] if a.ndim else 0} points, timestamps have {n}")
    return a


# ---------------------------------------------------------------- min-max band


class BandItem(pg.GraphicsObject):
    """A filled min-max envelope, decimated per pixel at paint time.

    pyqtgraph's FillBetweenItem rebuilds a QPainterPath from two peak-downsampled (zigzag) edge
    curves on every view change, which took ~300 ms a frame over 43,200 points. Here each paint
    takes the visible slice, folds it into about one bin per two pixels (lowest min, highest max:
    the true envelope of the bin; polygon fill cost grows with the vertex count) and fills one
    polygon per run of finite values.
    """

    def __init__(self) -> None:
        super().__init__()
        self._x: FloatArray = np.empty(0)
        self._lo: FloatArray = np.empty(0)
        self._hi: FloatArray = np.empty(0)
        self._rect = QRectF()
        self._brush = QBrush()

    def set_data(self, x: FloatArray, lo: FloatArray, hi: FloatArray) -> None:
        self.prepareGeometryChange()
        self._x, self._lo, self._hi = x, lo, hi
        y0, y1 = self._y_bounds(0, x.shape[0])
        if x.shape[0] and y0 is not None and y1 is not None:
            self._rect = QRectF(float(x[0]), y0, float(x[-1] - x[0]), y1 - y0)
        else:
            self._rect = QRectF()
        self.informViewBoundsChanged()
        self.update()

    def data(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        return self._x, self._lo, self._hi

    def set_brush(self, brush: QBrush) -> None:
        self._brush = brush
        self.update()

    def _y_bounds(self, i0: int, i1: int) -> tuple[float | None, float | None]:
        if i1 <= i0:
            return None, None
        # fmin/fmax skip NaN without the all-NaN RuntimeWarning of nanmin/nanmax.
        lo = float(np.fmin.reduce(self._lo[i0:i1]))
        hi = float(np.fmax.reduce(self._hi[i0:i1]))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return None, None
        return lo, hi

    def dataBounds(
        self, ax: int, frac: float = 1.0, orthoRange: tuple[float, float] | None = None
    ) -> tuple[float | None, float | None]:
        """Extent along ax; for y only over the x range shown, so auto-visible y ranges include it."""
        x = self._x
        if not x.shape[0]:
            return None, None
        if ax == 0:
            return float(x[0]), float(x[-1])
        i0, i1 = 0, x.shape[0]
        if orthoRange is not None:
            i0 = int(np.searchsorted(x, orthoRange[0], side="left"))
            i1 = int(np.searchsorted(x, orthoRange[1], side="right"))
        return self._y_bounds(i0, i1)

    def boundingRect(self) -> QRectF:
        return QRectF(self._rect)

    def paint(self, painter: QPainter, *_: Any) -> None:
        x = self._x
        vb = self.getViewBox()
        if not x.shape[0] or vb is None:
            return
        (v0, v1), _ = vb.viewRange()
        # One point beyond each edge so the fill reaches the border of the view.
        i0 = max(int(np.searchsorted(x, v0, side="left")) - 1, 0)
        i1 = min(int(np.searchsorted(x, v1, side="right")) + 1, x.shape[0])
        xs, lo, hi = x[i0:i1], self._lo[i0:i1], self._hi[i0:i1]
        px = self.pixelWidth() or 1.0
        bins = max(int((v1 - v0) / px) // 2, 1)
        factor = xs.shape[0] // bins
        if factor >= 2:
            # Fold `factor` neighbours into one bin; a partial last bin is kept as its own bin.
            starts = np.arange(0, xs.shape[0], factor)
            xs = xs[starts]
            lo = np.fmin.reduceat(lo, starts)
            hi = np.fmax.reduceat(hi, starts)
        finite = np.isfinite(lo) & np.isfinite(hi)
        if not finite.any():
            return
        # Runs of finite bins: a gap in the data is a gap in the band, as in the lines.
        edges = np.flatnonzero(np.diff(np.concatenate(([0], finite.view(np.int8), [0]))))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(self._brush)
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            if b - a < 2:
                continue
            px_ = np.concatenate((xs[a:b], xs[a:b][::-1]))
            py_ = np.concatenate((hi[a:b], lo[a:b][::-1]))
            painter.drawPolygon(pg.functions.arrayToQPolygonF(px_, py_))


# ---------------------------------------------------------------- one chart


class HistoryChart(QWidget):
    """One metric family over time: avg lines, an optional min-max band, a live tail and a crosshair."""

    # (start, end) of the x view after the user zoomed or panned with the mouse (fires during drags).
    rangeSelected = Signal(float, float)
    # Data x under the mouse, so a panel can mirror the crosshair on sibling charts; hidden on leave.
    crosshairMoved = Signal(float)
    crosshairHidden = Signal()

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
        self.live_window = live_window
        # Whether append_live scrolls the view to keep the newest point in sight; a manual zoom stops it.
        self.follow_tail = True
        self._theme = DARK if dark else LIGHT
        self._buf = _SeriesBuffer(len(family.fields))
        self._band_visible = False

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
        if family.unit is Unit.PERCENT:
            # Percentages read honestly on a fixed 0-100 scale; auto-ranging would magnify noise.
            self.vb.setYRange(0.0, 100.0, padding=0.02)
            self.vb.disableAutoRange(axis=pg.ViewBox.YAxis)
        else:
            self.vb.setAutoVisible(y=True)
            self.vb.enableAutoRange(axis=pg.ViewBox.YAxis)
            self.vb.setLimits(yMin=0.0)  # every series here is non-negative
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

        self.crosshair_line = pg.InfiniteLine(angle=90, movable=False)
        self.crosshair_line.setZValue(50)
        self.crosshair_label = pg.TextItem(anchor=(0, 0))
        self.crosshair_label.setZValue(51)
        pi.addItem(self.crosshair_line, ignoreBounds=True)
        pi.addItem(self.crosshair_label, ignoreBounds=True)
        self.hide_crosshair()
        # Rate-limit mouse moves: the label is HTML and relaying out text per event would lag the pointer.
        self._mouse_proxy = pg.SignalProxy(
            self.plot_widget.scene().sigMouseMoved, rateLimit=60, slot=self.mouse_moved
        )

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
            np.vstack([_as_float_array(avg.get(f), n) for f in self.fields])
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
                lo = _as_float_array(min.get(f), n)
                hi = _as_float_array(max.get(f), n)
                self._bands[f].set_data(x, lo, hi)
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

    @property
    def buffer_capacity(self) -> int:
        return self._buf.capacity

    def set_x_range(self, start: float, end: float) -> None:
        self.vb.setXRange(start, end, padding=0.0)

    def x_range(self) -> tuple[float, float]:
        lo, hi = self.vb.viewRange()[0]
        return float(lo), float(hi)

    def _refresh_curves(self) -> None:
        x = self._buf.xs()
        ys = self._buf.ys()
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
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
        th = self._theme
        rows = [f'<span style="color:{th.foreground}; font-weight:600">{when}</span>']
        plain = [when]
        for k, (label, v) in enumerate(zip(self.family.labels, vals, strict=True)):
            text = f"{label}: {self.family.unit.format_value(v)}"
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
        th = self._theme = DARK if dark else LIGHT
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


# ---------------------------------------------------------------- custom range dialog


class CustomRangeDialog(QDialog):
    """Two QDateTimeEdits for a fixed range; OK is enabled only while the range is valid."""

    def __init__(self, start: float, end: float, now: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Custom range")
        self.start_edit = QDateTimeEdit(QDateTime.fromSecsSinceEpoch(int(start)))
        self.end_edit = QDateTimeEdit(QDateTime.fromSecsSinceEpoch(int(end)))
        latest = QDateTime.fromSecsSinceEpoch(int(now))
        for edit in (self.start_edit, self.end_edit):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.setMaximumDateTime(latest)
            edit.dateTimeChanged.connect(self._validate)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.error = QLabel()
        self.error.setStyleSheet("color: #d05050")
        form = QFormLayout(self)
        form.addRow("From", self.start_edit)
        form.addRow("To", self.end_edit)
        form.addRow(self.error)
        form.addRow(self.buttons)
        self._validate()

    def selected_range(self) -> tuple[float, float]:
        return float(self.start_edit.dateTime().toSecsSinceEpoch()), float(
            self.end_edit.dateTime().toSecsSinceEpoch()
        )

    def _validate(self) -> None:
        start, end = self.selected_range()
        ok = end - start >= 60.0
        self.error.setText("" if ok else "“To” must be at least a minute after “From”.")
        ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        assert ok_button is not None
        ok_button.setEnabled(ok)


# ---------------------------------------------------------------- panel


class ChartPanel(QWidget):
    """All family charts of one node, x-linked, under a range selector that emits what to fetch."""

    rangeRequested = Signal(float, float, str)  # start, end, resolution ("raw" | "1m" | "1h")

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        families: Sequence[ChartFamily] = DEFAULT_FAMILIES,
        dark: bool = True,
        columns: int = 2,
        now: Callable[[], float] = time.time,
        initial: ChartRange = LIVE_5M,
    ) -> None:
        super().__init__(parent)
        self._now = now
        self._range = initial
        self._pending: tuple[float, float, str] | None = None
        self.custom_dialog: CustomRangeDialog | None = None

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.setSpacing(4)
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        self.range_buttons: dict[str, QPushButton] = {}
        for rng in PRESET_RANGES:
            button = QPushButton(rng.label)
            button.setCheckable(True)
            button.setChecked(rng.key == initial.key)
            # clicked, not toggled: clicking the current range again is a refresh request.
            button.clicked.connect(lambda _=False, r=rng: self.select_range(r))
            self._group.addButton(button)
            self.range_buttons[rng.key] = button
            bar.addWidget(button)
        self.custom_button = QPushButton("Custom…")
        self.custom_button.setCheckable(True)
        self.custom_button.clicked.connect(self.open_custom_dialog)
        self._group.addButton(self.custom_button)
        self.range_buttons["custom"] = self.custom_button
        bar.addWidget(self.custom_button)
        bar.addStretch(1)
        self.range_label = QLabel()
        bar.addWidget(self.range_label)

        # The charts sit on an area painted in the theme's separator colour: the application palette
        # may be light while the charts are dark, and its colour would show in the gaps.
        self.chart_area = QWidget()
        self.chart_area.setAutoFillBackground(True)
        grid = QGridLayout(self.chart_area)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        self.charts: dict[str, HistoryChart] = {}
        first: HistoryChart | None = None
        for i, fam in enumerate(families):
            chart = HistoryChart(fam, dark=dark)
            chart.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
            grid.addWidget(chart, i // columns, i % columns)
            self.charts[fam.key] = chart
            if first is None:
                first = chart
            else:
                # Panning or zooming one chart moves them all, so times line up across families.
                chart.plot_item.setXLink(first.plot_item)
            chart.rangeSelected.connect(self._on_user_zoom)
            chart.crosshairMoved.connect(lambda x, src=chart: self._mirror_crosshair(src, x))
            chart.crosshairHidden.connect(self._hide_crosshairs)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.setSpacing(4)
        outer.addLayout(bar)
        outer.addWidget(self.chart_area, 1)
        self._paint_chart_area(dark)
        self._update_range_label()

    # ------------------------------------------------------------ ranges

    @property
    def current_range(self) -> ChartRange:
        return self._range

    @property
    def is_live(self) -> bool:
        return self._range.live

    def current_request(self) -> tuple[float, float, Resolution]:
        """(start, end, resolution) for the current range as of now; remembered as the pending request."""
        start, end, res = request_for(self._range, self._now())
        self._pending = (start, end, res)
        self._update_range_label()
        return start, end, res

    def select_range(self, rng: ChartRange) -> None:
        """Make rng current (as if clicked) and emit rangeRequested for it."""
        self._range = rng
        button = self.range_buttons.get(rng.key)
        if button is not None:
            button.setChecked(True)
        for chart in self.charts.values():
            chart.follow_tail = rng.live
        start, end, res = self.current_request()
        self.rangeRequested.emit(start, end, res)

    def open_custom_dialog(self) -> CustomRangeDialog:
        """Open the (non-modal-blocking) custom range dialog; accepting it selects the range."""
        now = self._now()
        if self._range.is_custom:
            assert self._range.start is not None and self._range.end is not None
            start, end = self._range.start, self._range.end
        else:
            start, end = now - 86400.0, now
        dialog = CustomRangeDialog(start, end, now, self)
        dialog.accepted.connect(lambda: self.select_range(ChartRange.custom(*dialog.selected_range())))
        # Cancel puts the check mark back on the range that is still shown.
        dialog.rejected.connect(self._restore_checked)
        self.custom_dialog = dialog
        # open(), not exec(): a nested event loop would stall the qasync loop running the network.
        dialog.open()
        return dialog

    def _restore_checked(self) -> None:
        button = self.range_buttons.get(self._range.key)
        if button is not None:
            button.setChecked(True)

    def _update_range_label(self) -> None:
        res = self._pending[2] if self._pending else ""
        if self._range.is_custom and self._range.start is not None and self._range.end is not None:
            fmt = "%Y-%m-%d %H:%M"
            text = (
                f"{time.strftime(fmt, time.localtime(self._range.start))} to "
                f"{time.strftime(fmt, time.localtime(self._range.end))}"
            )
        else:
            text = self._range.label
        self.range_label.setText(f"{text} · {res}" if res else text)

    # ------------------------------------------------------------ data

    def set_history(self, response: Mapping[str, Any]) -> bool:
        """Draw a GET .../metrics response (as a dict); False if it answers a superseded request.

        A response is stale when its resolution differs from, or its "from" is more than a second
        off, the last request this panel issued; responses with no pending request are accepted.
        """
        if self._pending is not None:
            p_start, _, p_res = self._pending
            if (
                response.get("resolution") != p_res
                or abs(float(response.get("from", p_start)) - p_start) > 1.0
            ):
                return False
        ts = response.get("ts") or []
        avg = response.get("avg") or {}
        mins = response.get("min")
        maxs = response.get("max")
        for chart in self.charts.values():
            chart.set_history(ts, avg, mins, maxs, keep_newer_tail=self.is_live)
        start = float(response.get("from", ts[0] if ts else 0.0))
        end = float(response.get("to", ts[-1] if ts else 0.0))
        if self.charts and end > start:
            first = next(iter(self.charts.values()))
            if self.is_live:
                # The tail may already extend past "to" (kept newer samples).
                last = first.data()[0]
                end = max(end, float(last[-1])) if last.shape[0] else end
                start = end - LIVE_WINDOW
            first.set_x_range(start, end)
        return True

    def append_sample(self, sample: Sample) -> bool:
        """Append a pushed sample to every chart; ignored (False) unless the range is live."""
        if not self.is_live:
            return False
        m = sample.metrics
        appended = False
        for chart in self.charts.values():
            # getattr also reaches Metrics.disk_pct, a property derived from the mounts.
            values = {f: getattr(m, f, None) for f in chart.fields}
            appended = chart.append_live(sample.ts, values) or appended
        return appended

    def clear(self) -> None:
        for chart in self.charts.values():
            chart.clear()

    def set_theme(self, dark: bool) -> None:
        """Re-colour every chart and the gaps between them (the range bar follows the app palette)."""
        for chart in self.charts.values():
            chart.set_theme(dark)
        self._paint_chart_area(dark)

    def _paint_chart_area(self, dark: bool) -> None:
        palette = self.chart_area.palette()
        palette.setColor(QPalette.ColorRole.Window, QColor((DARK if dark else LIGHT).separator))
        self.chart_area.setPalette(palette)

    # ------------------------------------------------------------ linked interaction

    def _on_user_zoom(self, _start: float, _end: float) -> None:
        # A manual zoom on one chart moved all (x-linked): none of them may snap back to the tail.
        for chart in self.charts.values():
            chart.follow_tail = False

    def _mirror_crosshair(self, source: HistoryChart, x: float) -> None:
        for chart in self.charts.values():
            if chart is not source:
                chart.show_crosshair(x)

    def _hide_crosshairs(self) -> None:
        for chart in self.charts.values():
            chart.hide_crosshair()
