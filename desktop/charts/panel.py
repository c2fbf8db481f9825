"""A node's chart panel: every family's chart, x-linked, under a range selector; and the custom range dialog."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from PySide6.QtCore import QDateTime, Signal
from PySide6.QtGui import QColor, QPalette, QResizeEvent
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

from servermanager.common.metrics import Sample, scalar
from servermanager.common.rest import History
from servermanager.desktop.charts.chart import HistoryChart
from servermanager.desktop.charts.families import DEFAULT_FAMILIES, ChartFamily
from servermanager.desktop.charts.ranges import (
    LIVE_5M,
    LIVE_WINDOW,
    PRESET_RANGES,
    ROLLUP_STEP,
    ChartRange,
    HistoryRequest,
    request_for,
)
from servermanager.desktop.charts.theme import chart_theme
from servermanager.desktop.format import fmt_time

# Points further apart than this many times the expected spacing mark an outage: a late sample or
# two is jitter, a whole missed heartbeat's worth is not.
GAP_FACTOR = 2.5
MIN_CHART_WIDTH = 380  # pixels: narrower, and the time axis' labels crowd each other out


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


class ChartPanel(QWidget):
    """All family charts of one node, x-linked, under a range selector that emits what to fetch."""

    rangeRequested = Signal(object)  # HistoryRequest
    pointClicked = Signal(float)  # a moment clicked on any chart (unix seconds)

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
        self._pending: HistoryRequest | None = None
        self.interval: float | None = None  # the node's sample interval, seconds
        self._step: float | None = None  # spacing of the points drawn: the interval or a rollup's
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
        # A zoom or pan stops a live chart following the tail; this (or a double-click on a chart)
        # undoes it, so the label never claims "Live" for a view that stands still.
        self.zoomed = False
        self.reset_button = QPushButton("Reset zoom")
        self.reset_button.setToolTip("Show the whole range again (or double-click a chart)")
        self.reset_button.clicked.connect(self.reset_zoom)
        self.reset_button.hide()
        bar.addWidget(self.reset_button)

        # The charts sit on an area painted in the theme's separator colour: the application palette
        # may be light while the charts are dark, and its colour would show in the gaps.
        self.chart_area = QWidget()
        self.chart_area.setAutoFillBackground(True)
        self.grid = grid = QGridLayout(self.chart_area)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(2)
        # At most this many columns; fewer on a narrow panel (see resizeEvent).
        self.max_columns = self.columns = columns
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
            chart.pointClicked.connect(self.pointClicked)
            chart.resetRequested.connect(self.reset_zoom)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.setSpacing(4)
        outer.addLayout(bar)
        outer.addWidget(self.chart_area, 1)
        self._paint_chart_area(dark)
        self._update_range_label()

    def fitting_columns(self, width: int) -> int:
        """Charts narrower than MIN_CHART_WIDTH are unreadable: fewer columns (at least one)."""
        return max(1, min(self.max_columns, width // MIN_CHART_WIDTH))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        columns = self.fitting_columns(self.width())
        if columns != self.columns:
            self.columns = columns
            charts = list(self.charts.values())
            for chart in charts:
                self.grid.removeWidget(chart)
            for i, chart in enumerate(charts):
                self.grid.addWidget(chart, i // columns, i % columns)

    # ------------------------------------------------------------ ranges

    @property
    def current_range(self) -> ChartRange:
        return self._range

    @property
    def is_live(self) -> bool:
        return self._range.live

    def current_request(self) -> HistoryRequest:
        """The request for the current range as of now; remembered as the pending request."""
        request = request_for(self._range, self._now())
        self._pending = request
        self._update_range_label()
        return request

    def select_range(self, rng: ChartRange) -> None:
        """Make rng current (as if clicked) and emit rangeRequested for it."""
        self._range = rng
        self.zoomed = False
        button = self.range_buttons.get(rng.key)
        if button is not None:
            button.setChecked(True)
        for chart in self.charts.values():
            chart.follow_tail = rng.live
        self.rangeRequested.emit(self.current_request())

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
        res = self._pending.resolution if self._pending else ""
        if self._range.is_custom and self._range.start is not None and self._range.end is not None:
            text = f"{fmt_time(self._range.start)} to {fmt_time(self._range.end)}"
        else:
            text = self._range.label
        text = f"{text} · {res}" if res else text
        if self.zoomed:
            text += " · zoomed, not following live" if self._range.live else " · zoomed"
        self.range_label.setText(text)
        self.reset_button.setText("Back to live" if self._range.live else "Reset zoom")
        self.reset_button.setVisible(self.zoomed)

    def reset_zoom(self) -> None:
        """Undo a zoom or pan: the whole current range again, following the tail if it is live."""
        if not self.zoomed:
            return
        self.zoomed = False
        if self._range.live and self.charts:
            first = next(iter(self.charts.values()))
            last = first.data()[0]
            end = float(last[-1]) if last.shape[0] else self._now()
            first.set_x_range(end - LIVE_WINDOW, end)
            for chart in self.charts.values():
                chart.follow_tail = True
        elif self._pending is not None and self.charts:
            next(iter(self.charts.values())).set_x_range(self._pending.start, self._pending.end)
        self._update_range_label()

    # ------------------------------------------------------------ data

    def set_history(self, history: History) -> bool:
        """Draw a GET .../metrics answer; False if it answers a superseded request.

        An answer is stale when its resolution differs from, or its "from" is more than a second
        off, the last request this panel issued; answers with no pending request are accepted.
        A merged answer (the request's `points`) is drawn as any rollup: avg as the lines, and the
        band from the buckets' min and max, which the core merged as min of mins, max of maxes.
        """
        pending = self._pending
        if pending is not None and (
            history.resolution != pending.resolution or abs(history.from_ - pending.start) > 1.0
        ):
            return False
        ts = history.ts
        step = history.step or ROLLUP_STEP.get(history.resolution) or self.interval
        if len(ts) > 2:
            # The data's own usual spacing counts too: history written at another interval (the
            # agent's changed since, or a backfill) must not read as one long run of outages.
            step = max(step or 0.0, float(np.median(np.diff(ts))))
        self._step = step
        self._apply_gaps()
        for chart in self.charts.values():
            chart.set_history(ts, history.avg, history.min, history.max, keep_newer_tail=self.is_live)
        start, end = history.from_, history.to
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
            # scalar() also derives the rows that are not sent, such as disk_pct from the mounts.
            values = {f: scalar(m, f) for f in chart.fields}
            appended = chart.append_live(sample.ts, values) or appended
        return appended

    def clear(self) -> None:
        for chart in self.charts.values():
            chart.clear()

    def set_interval(self, seconds: float | None) -> None:
        """The node's sample interval: raw points further apart than GAP_FACTOR times it are a gap."""
        if seconds == self.interval:
            return
        self.interval = seconds
        if self._step is None or self._pending is None or self._pending.resolution == "raw":
            self._step = seconds
            self._apply_gaps()

    def _apply_gaps(self) -> None:
        gap = GAP_FACTOR * self._step if self._step else None
        for chart in self.charts.values():
            chart.set_gap_after(gap)

    def set_theme(self, dark: bool) -> None:
        """Re-colour every chart and the gaps between them (the range bar follows the app palette)."""
        for chart in self.charts.values():
            chart.set_theme(dark)
        self._paint_chart_area(dark)

    def _paint_chart_area(self, dark: bool) -> None:
        palette = self.chart_area.palette()
        palette.setColor(QPalette.ColorRole.Window, QColor(chart_theme(dark).separator))
        self.chart_area.setPalette(palette)

    # ------------------------------------------------------------ linked interaction

    def _on_user_zoom(self, _start: float, _end: float) -> None:
        # A manual zoom on one chart moved all (x-linked): none of them may snap back to the tail.
        for chart in self.charts.values():
            chart.follow_tail = False
        if not self.zoomed:
            self.zoomed = True
            self._update_range_label()

    def _mirror_crosshair(self, source: HistoryChart, x: float) -> None:
        for chart in self.charts.values():
            if chart is not source:
                chart.show_crosshair(x)

    def _hide_crosshairs(self) -> None:
        for chart in self.charts.values():
            chart.hide_crosshair()
