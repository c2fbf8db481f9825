"""A node's containers: a sortable table model, and the Containers tab with a picked container's charts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import pyqtgraph as pg
from PySide6.QtCore import (
    QItemSelection,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import metrics as mt
from servermanager.common import rest as m
from servermanager.desktop.charts.chart import HistoryChart
from servermanager.desktop.charts.families import ChartFamily
from servermanager.desktop.context import AppContext
from servermanager.desktop.format import NA, fmt_bytes, fmt_rate, fmt_time
from servermanager.desktop.models.columns import SORT_ROLE, Column, ColumnsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.widgets import scrolled

HISTORY_SPAN = 3600.0  # seconds of a picked container's history the charts show
# Percent of one CPU, as `docker stats` shows it: 250 % is two and a half CPUs busy.
CPU_FAMILY = ChartFamily("container_cpu", "CPU (% of one CPU)", ("cpu_pct",), ("CPU",), mt.Unit.PERCENT)
MEM_FAMILY = ChartFamily(
    "container_mem", "Memory", ("mem_used", "mem_limit"), ("Used", "Limit"), mt.Unit.BYTES
)
IO_FAMILY = ChartFamily(
    "container_io",
    "Network and block I/O",
    ("net_rx_bps", "net_tx_bps", "blk_read_bps", "blk_write_bps"),
    ("Net in", "Net out", "Disk read", "Disk write"),
    mt.Unit.BYTES_PER_S,
)


def _num(v: float | None) -> float:
    return -1.0 if v is None else float(v)


def _mem(c: m.Container) -> str:
    if c.mem_used is None:
        return NA
    return fmt_bytes(c.mem_used) + (f" / {fmt_bytes(c.mem_limit)}" if c.mem_limit else "")


def _pair(a: float | None, b: float | None) -> str:
    return NA if a is None and b is None else f"{fmt_rate(a)} / {fmt_rate(b)}"


class ContainersModel(ColumnsModel):
    """Rows of m.Container; each column a header, how it shows, and what it sorts by."""

    columns: Sequence[Column] = (
        ("Name", lambda c: c.name, lambda c: c.name.lower()),
        ("Image", lambda c: c.image or NA, lambda c: c.image),
        ("State", lambda c: c.state or NA, lambda c: c.state),
        ("Health", lambda c: c.health or "", lambda c: c.health or ""),
        ("CPU", lambda c: NA if c.cpu_pct is None else f"{c.cpu_pct:.1f} %", lambda c: _num(c.cpu_pct)),
        ("Memory", _mem, lambda c: _num(c.mem_used)),
        ("Net in / out", lambda c: _pair(c.net_rx_bps, c.net_tx_bps), lambda c: _num(c.net_rx_bps)),
        (
            "Disk read / write",
            lambda c: _pair(c.blk_read_bps, c.blk_write_bps),
            lambda c: _num(c.blk_read_bps),
        ),
    )
    CPU, MEMORY = 4, 5
    right = frozenset(range(CPU, len(columns)))  # the numbers


class ContainersPanel(QWidget):
    """The Containers tab of a node view: the latest list (reloaded on the node's samples while
    shown), and the picked container's CPU, memory and I/O over the last hour."""

    def __init__(self, ctx: AppContext, node_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.node_id = node_id
        self.ts: float | None = None
        self.picked: str | None = None
        self.loads = 0  # completed list loads; tests wait on them
        self.history_loads = 0
        self._task: asyncio.Task[None] | None = None
        self._history: asyncio.Task[None] | None = None
        self.model = ContainersModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)

        self.when = QLabel("Live")
        self.when.setObjectName("factKey")
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.hide()
        self.table = QTableView()
        self.table.setAccessibleName("Containers")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(ContainersModel.CPU, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.selectionModel().selectionChanged.connect(self._selected)

        dark = ctx.themes.dark
        self.cpu_chart = HistoryChart(CPU_FAMILY, dark=dark)
        # Past 100 % is normal here (several CPUs), so this percent chart scales to its data.
        self.cpu_chart.vb.enableAutoRange(axis=pg.ViewBox.YAxis)
        self.mem_chart = HistoryChart(MEM_FAMILY, dark=dark)
        self.io_chart = HistoryChart(IO_FAMILY, dark=dark)
        self.chart_title = QLabel("Pick a container to chart its last hour.")
        self.chart_title.setObjectName("factKey")
        charts = QWidget()
        row = QHBoxLayout()
        for c in (self.cpu_chart, self.mem_chart, self.io_chart):
            row.addWidget(c)
        col = QVBoxLayout(charts)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self.chart_title)
        col.addLayout(row, 1)
        # In a scroll area: the charts' own minimum height must not make the node view (whose tabs
        # share one height) taller than a 1024x640 window.
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(scrolled(charts))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addWidget(self.when)
        layout.addWidget(self.status)
        layout.addWidget(split, 1)
        ctx.model.sample_received.connect(self._sample)
        ctx.themes.theme_changed.connect(self._theme)

    def _theme(self, dark: bool) -> None:
        for c in (self.cpu_chart, self.mem_chart, self.io_chart):
            c.set_theme(dark)

    def refresh(self) -> None:
        """Load the latest list; one load at a time (a sample during one is caught by the next)."""
        if self._task is None or self._task.done():
            self._task = self.ctx.aio.spawn(self._load(), f"containers-{self.node_id}")

    def _sample(self, node_id: int, _sample: mt.Sample) -> None:
        if node_id == self.node_id and self.isVisible():
            self.refresh()

    async def _load(self) -> None:
        try:
            result = await self.ctx.rest.containers(self.node_id)
        except CoreError as exc:
            self.status.setText(f"Containers unavailable: {exc.message}")
            self.status.show()
            return
        self.ts = result.ts
        picked = self.picked
        self.model.set_rows(result.containers)
        if picked is not None:
            self.select(picked, load=False)
        if result.ts is None:
            self.status.setText(
                "No containers stored for this node: no Docker or Podman engine was found, or "
                "[containers] is off in its agent's config."
            )
        elif not result.containers:
            self.status.setText("The engine runs no containers.")
        self.status.setVisible(result.ts is None or not result.containers)
        self.when.setText("Live" + (f" · {fmt_time(result.ts, seconds=True)}" if result.ts else ""))
        self.loads += 1

    def select(self, name: str, *, load: bool = True) -> bool:
        """Select the row of container `name` (and chart it); False if it is not listed."""
        for row in range(self.proxy.rowCount()):
            src = self.proxy.mapToSource(self.proxy.index(row, 0))
            c = self.model.row_at(src.row())
            if c is not None and c.name == name:
                if not load:
                    self.table.selectionModel().blockSignals(True)
                self.table.selectRow(row)
                self.table.selectionModel().blockSignals(False)
                return True
        return False

    def _selected(self, _new: QItemSelection, _old: QItemSelection) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        c = self.model.row_at(self.proxy.mapToSource(rows[0]).row())
        if c is not None:
            self.picked = c.name
            self.chart_title.setText(f"{c.name}: the last hour")
            if self._history is not None:
                self._history.cancel()
            self._history = self.ctx.aio.spawn(
                self._load_history(c.name), f"container-history-{self.node_id}"
            )

    async def _load_history(self, name: str) -> None:
        end = time.time()
        try:
            h = await self.ctx.rest.container_history(self.node_id, name, end - HISTORY_SPAN, end)
        except CoreError as exc:
            self.chart_title.setText(f"History of {name} unavailable: {exc.message}")
            return
        values: dict[str, Sequence[float | None]] = {
            "cpu_pct": h.cpu_pct,
            "mem_used": h.mem_used,
            "mem_limit": h.mem_limit,
            "net_rx_bps": h.net_rx_bps,
            "net_tx_bps": h.net_tx_bps,
            "blk_read_bps": h.blk_read_bps,
            "blk_write_bps": h.blk_write_bps,
        }
        for chart in (self.cpu_chart, self.mem_chart, self.io_chart):
            chart.set_history(h.ts, {f: values[f] for f in chart.fields})
            chart.set_x_range(end - HISTORY_SPAN, end)
        self.history_loads += 1

    def shutdown(self) -> None:
        for task in (self._task, self._history):
            if task is not None:
                task.cancel()
        for signal, slot in (
            (self.ctx.model.sample_received, self._sample),
            (self.ctx.themes.theme_changed, self._theme),
        ):
            with contextlib.suppress(RuntimeError, TypeError):
                signal.disconnect(slot)
