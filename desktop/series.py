"""A node's named series (custom metrics, scrapes, checks): a table of last values and up/down, the plugins' errors, and a chart of a picked series."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from PySide6.QtCore import (
    QModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import metrics as mt
from servermanager.common import rest as m
from servermanager.common.metric_table import Unit
from servermanager.desktop.charts.families import ChartFamily
from servermanager.desktop.charts.panel import ChartPanel
from servermanager.desktop.charts.ranges import LAST_1H, HistoryRequest
from servermanager.desktop.context import AppContext
from servermanager.desktop.format import NA, fmt_ago
from servermanager.desktop.models.columns import SORT_ROLE, Column, ColumnsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.widgets import scrolled

# Series whose value is a 1/0 state rather than a measure: shown as up or down.
UP_SERIES = ("check_up", "plugin_up")


def _state(s: m.SeriesInfo) -> str:
    if s.name not in UP_SERIES or s.last_value is None:
        return ""
    return "up" if s.last_value >= 1 else "down"


def _value(s: m.SeriesInfo) -> str:
    if s.last_value is None:
        return NA
    text = f"{s.last_value:.6g}"
    return f"{text} {s.unit}" if s.unit else text


class SeriesModel(ColumnsModel):
    """Rows of m.SeriesInfo: series, last value, state (for check_up and plugin_up), last update."""

    columns: Sequence[Column] = (
        ("Series", lambda s: s.selector, lambda s: s.selector.lower()),
        ("Value", _value, lambda s: -1e300 if s.last_value is None else s.last_value),
        ("State", _state, _state),
        ("Updated", lambda s: fmt_ago(s.last_ts), lambda s: s.last_ts or 0.0),
    )
    right = frozenset((1,))  # the numbers


def plugin_problems(plugins: Sequence[m.PluginStatus]) -> list[str]:
    """One line per entry that failed or printed unreadable lines on its last run."""
    return [f"{p.kind} {p.name}: {p.error}" for p in plugins if p.error]


class SeriesPanel(QWidget):
    """The Custom tab of a node view: the node's series, its agent's plugin errors, a chart of one.

    Reloads from REST on each sample of its node while shown (live sample events carry no named
    series). Picking a row charts that series over the range chosen above the chart.
    """

    def __init__(self, ctx: AppContext, node_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.node_id = node_id
        self.loads = 0  # completed list loads; tests wait on them
        self.chart_loads = 0
        self.selector: str | None = None  # the charted series
        self._task: asyncio.Task[None] | None = None
        self._chart_task: asyncio.Task[None] | None = None
        self.model = SeriesModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.status = QLabel()
        self.status.setObjectName("error")
        self.status.setWordWrap(True)
        self.status.hide()
        self.empty = QLabel(
            "No named series from this node. Its agent's config declares them: "
            "[[custom]] commands, [[scrape]] endpoints and [[check]] service checks."
        )
        self.empty.setWordWrap(True)
        self.empty.hide()
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.selectionModel().currentRowChanged.connect(self._picked)
        self.chart_title = QLabel("Pick a series to chart it.")
        self.chart_title.setObjectName("factKey")
        self.chart_box = QWidget()
        self.chart_layout = QVBoxLayout(self.chart_box)
        self.chart_layout.setContentsMargins(0, 0, 0, 0)
        self.chart_layout.addWidget(self.chart_title)
        self.charts: ChartPanel | None = None
        self.table.setAccessibleName("Series")
        # Two rows at least, not Qt's default (a few more): with the plugins' problems listed above
        # it, that default made the node view 3 px taller than a 1024x640 window.
        self.table.setMinimumHeight(48)
        # In a scroll area: the chart's own minimum height must not make the node view (whose tabs
        # share one height) taller than a 1024x640 window.
        self.charts_scroll = scrolled(self.chart_box)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.charts_scroll)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addWidget(self.status)
        layout.addWidget(self.empty)
        layout.addWidget(split, 1)
        ctx.model.sample_received.connect(self._sample)

    # ------------------------------------------------------------ the list

    def refresh(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._task = self.ctx.aio.spawn(self._load(), f"series-{self.node_id}")

    def _sample(self, node_id: int, sample: mt.Sample) -> None:
        if node_id == self.node_id and self.isVisible():
            self.refresh()

    async def _load(self) -> None:
        try:
            result = await self.ctx.rest.series(self.node_id)
        except CoreError as exc:
            self.status.setText(f"Series unavailable: {exc.message}")
            self.status.show()
            return
        self._show(result)
        self.loads += 1

    def _show(self, result: m.SeriesList) -> None:
        self.model.set_rows(result.series)
        problems = plugin_problems(result.plugins)
        self.status.setText("\n".join(problems))
        self.status.setVisible(bool(problems))
        self.empty.setVisible(not result.series)
        if self.selector is not None:
            rows = [i for i, s in enumerate(self.model.rows) if s.selector == self.selector]
            if rows:
                self.table.selectRow(self.proxy.mapFromSource(self.model.index(rows[0], 0)).row())

    # ------------------------------------------------------------ the chart

    def _picked(self, current: QModelIndex, _previous: QModelIndex) -> None:
        s = self.model.row_at(self.proxy.mapToSource(current).row()) if current.isValid() else None
        if s is not None and s.selector != self.selector:
            self.chart_series(s)

    def chart_series(self, s: m.SeriesInfo) -> None:
        """Chart `s` over the range above the chart (an hour at first)."""
        self.selector = s.selector
        if self.charts is not None:
            self.charts.deleteLater()
        family = ChartFamily("series", s.selector, (s.selector,), (s.name,), Unit.PLAIN)
        self.charts = ChartPanel(families=[family], dark=self.ctx.themes.dark, columns=1, initial=LAST_1H)
        self.charts.rangeRequested.connect(self.load_chart)
        self.chart_layout.addWidget(self.charts, 1)
        self.chart_title.setText(s.selector + (f" ({s.unit})" if s.unit else ""))
        self.load_chart(self.charts.current_request())

    def load_chart(self, r: HistoryRequest) -> None:
        if self._chart_task is not None:
            self._chart_task.cancel()
        self._chart_task = self.ctx.aio.spawn(self._load_chart(r), f"series-chart-{self.node_id}")

    async def _load_chart(self, r: HistoryRequest) -> None:
        selector, charts = self.selector, self.charts
        if selector is None or charts is None:
            return
        try:
            history = await self.ctx.rest.series_history(self.node_id, selector, r.start, r.end, r.resolution)
        except CoreError as exc:
            self.chart_title.setText(f"{selector}: history unavailable: {exc.message}")
            return
        if charts is self.charts and charts.set_history(history):
            self.chart_loads += 1

    def shutdown(self) -> None:
        for task in (self._task, self._chart_task):
            if task is not None:
                task.cancel()
        with contextlib.suppress(RuntimeError, TypeError):
            self.ctx.model.sample_received.disconnect(self._sample)
