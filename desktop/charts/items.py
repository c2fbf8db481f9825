"""Custom pyqtgraph items of a chart: the unit-aware y axis and the per-pixel decimated min-max band."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QBrush, QPainter

from servermanager.common.metrics import Unit
from servermanager.desktop.charts.buffer import FloatArray
from servermanager.desktop.format import binary_scale

_LABEL_SLACK_PX = 10
# Units whose ticks fall on round numbers of a binary prefix, and what follows the prefix.
_BYTE_UNITS = {Unit.BYTES: "", Unit.BYTES_PER_S: "/s"}


class UnitAxisItem(pg.AxisItem):
    """Left axis whose ticks carry the unit, at round numbers of the right binary prefix for bytes."""

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
        if self.unit in _BYTE_UNITS:
            return binary_scale(max(abs(lo), abs(hi)))
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
        if self.unit in _BYTE_UNITS and values:
            f, prefix = self._scale(*self.range)
            suffix = _BYTE_UNITS[self.unit]
            return [f"{s} {prefix}{suffix}" for s in super().tickStrings(values, scale / f, spacing)]
        return super().tickStrings(values, scale, spacing)


class ZeroAnchor(pg.GraphicsObject):
    """Nothing drawn; its data bounds hold y = 0, so an auto-ranged y axis always starts at zero.

    Without it a flat series (a disk's used bytes, a container's memory limit) auto-ranged to
    pyqtgraph's one unit around the value, [v - 0.5, v + 0.5]: at 74 GiB every tick label read
    "73.9999999996 GiB", too wide for the axis, so the chart showed no scale at all. From zero the
    scale is honest for every non-negative quantity these charts draw (bytes, rates, counts).
    """

    def boundingRect(self) -> QRectF:
        return QRectF()

    def paint(self, *args: Any) -> None:
        pass

    def dataBounds(
        self, ax: int, frac: float = 1.0, orthoRange: tuple[float, float] | None = None
    ) -> tuple[float, float] | None:
        return (0.0, 0.0) if ax == 1 else None


def set_y_scale(vb: pg.ViewBox, unit: Unit) -> None:
    """The y range of a chart of `unit`: percentages on a fixed 0-100 scale (auto-ranging would
    magnify noise), anything else auto-ranged over what is visible, from zero."""
    if unit is Unit.PERCENT:
        vb.setYRange(0.0, 100.0, padding=0.02)
        vb.disableAutoRange(axis=pg.ViewBox.YAxis)
        return
    vb.setAutoVisible(y=True)
    vb.enableAutoRange(axis=pg.ViewBox.YAxis)
    vb.setLimits(yMin=0.0)  # every series here is non-negative
    vb.addItem(ZeroAnchor())


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
