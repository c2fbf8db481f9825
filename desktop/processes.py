"""A node's top processes: a sortable table model, and the Processes tab that shows them live or at a picked moment."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from PySide6.QtCore import (
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import metrics as mt
from servermanager.common import rest as m
from servermanager.desktop.context import AppContext
from servermanager.desktop.format import NA, fmt_bytes, fmt_pct, fmt_rate, fmt_time
from servermanager.desktop.models.columns import SORT_ROLE, Column, ColumnsModel
from servermanager.desktop.net.errors import CoreError

# The raw value of a cell, for sorting: numbers sort as numbers, missing ones first.
CMDLINE_HINT = "Command lines are shown to operators and admins only."


def _num(v: float | None) -> float:
    return -1.0 if v is None else float(v)


class ProcessesModel(ColumnsModel):
    """Rows of m.Process; each column a header, how it shows, and what it sorts by."""

    columns: Sequence[Column] = (
        ("PID", lambda p: str(p.pid), lambda p: p.pid),
        ("Name", lambda p: p.name, lambda p: p.name.lower()),
        ("User", lambda p: p.user or NA, lambda p: p.user or ""),
        ("CPU", lambda p: fmt_pct(p.cpu_pct, 1), lambda p: _num(p.cpu_pct)),
        ("Memory", lambda p: fmt_bytes(p.rss), lambda p: p.rss),
        ("Read/s", lambda p: fmt_rate(p.read_bps), lambda p: _num(p.read_bps)),
        ("Write/s", lambda p: fmt_rate(p.write_bps), lambda p: _num(p.write_bps)),
        ("Command", lambda p: p.cmd or "", lambda p: p.cmd or ""),
    )
    CPU, MEMORY = 3, 4
    right = frozenset((0, 3, 4, 5, 6))  # the numbers


class ProcessesPanel(QWidget):
    """The Processes tab of a node view.

    Live, it reloads from REST on each sample of its node while shown (live sample events carry no
    processes: the core keeps them out of the fleet-wide stream). `show_at(ts)` pins it to the
    snapshot at or before a moment, such as a point clicked on a chart, until "Back to live".
    """

    def __init__(self, ctx: AppContext, node_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.node_id = node_id
        self.at: float | None = None  # None: live
        self.ts: float | None = None  # the shown snapshot's time
        self.loads = 0  # completed loads; tests wait on it
        self._task: asyncio.Task[None] | None = None
        self._want = 0.0  # newest sample time seen live: a live load should show it or later
        self._again = False  # a sample arrived while a live load was under way
        self.model = ProcessesModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.proxy.setFilterKeyColumn(-1)

        self.when = QLabel("Live")
        self.when.setObjectName("factKey")
        self.live_button = QPushButton("Back to live")
        self.live_button.clicked.connect(self.go_live)
        self.live_button.hide()
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter processes…")
        self.filter.setAccessibleName("Filter processes")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        bar = QHBoxLayout()
        bar.addWidget(self.when)
        bar.addWidget(self.live_button)
        bar.addWidget(self.filter, 1)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.hide()
        self.table = QTableView()
        self.table.setAccessibleName("Processes")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(ProcessesModel.CPU, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        ctx.model.sample_received.connect(self._sample)

    @property
    def live(self) -> bool:
        return self.at is None

    def refresh(self) -> None:
        """Load what the tab shows now (the latest, or the picked moment); one load at a time."""
        if self._task is not None and not self._task.done():
            if not self.live:
                self._task.cancel()  # a newer moment supersedes the one in flight
            else:
                self._again = True  # live: load once more when the one under way is done
                return
        self._task = self.ctx.aio.spawn(self._load(self.at), f"processes-{self.node_id}")

    def show_at(self, ts: float) -> None:
        """Pin the table to the snapshot at or just before `ts` (a moment picked on a chart)."""
        self.at = ts
        self.live_button.show()
        self.when.setText(f"Loading {fmt_time(ts, seconds=True)}…")
        self.refresh()

    def go_live(self) -> None:
        self.at = None
        self.live_button.hide()
        self.when.setText("Live")
        self.refresh()

    def _sample(self, node_id: int, sample: mt.Sample) -> None:
        if node_id == self.node_id and self.live and self.isVisible():
            self._want = max(self._want, sample.ts)
            self.refresh()

    async def _load(self, at: float | None) -> None:
        # The core announces a sample on arrival and commits it a moment later: a live load made
        # at once may find the previous snapshot, so it asks again a few times, shortly after.
        # (An agent with [processes] interval sends lists less often: then it settles for older.)
        for attempt in range(4):
            self._again = False
            try:
                result = await self.ctx.rest.processes(self.node_id, at)
            except CoreError as exc:
                self.status.setText(f"Processes unavailable: {exc.message}")
                self.status.show()
                return
            if at != self.at:
                return  # the user went live or picked another moment meanwhile
            stale = at is None and result.ts is not None and result.ts < self._want - 0.001
            if not (self._again or (stale and attempt < 3)):
                break
            self._show(result, at)
            await asyncio.sleep(0.0 if self._again else 0.2)
        self._show(result, at)
        self.loads += 1

    def _show(self, result: m.Processes, at: float | None) -> None:
        self.ts = result.ts
        self.model.set_rows(result.processes)
        notes = []
        if result.ts is None:
            notes.append("No processes stored for this node" + (" before that moment." if at else " yet."))
        if result.cmdline_hidden:
            notes.append(CMDLINE_HINT)
        self.status.setText(" ".join(notes))
        self.status.setVisible(bool(notes))
        if at is None:
            self.when.setText("Live" + (f" · {fmt_time(result.ts, seconds=True)}" if result.ts else ""))
        elif result.ts is not None:
            self.when.setText(f"At {fmt_time(result.ts, seconds=True)}")
        else:
            self.when.setText(f"At {fmt_time(at, seconds=True)}")

    def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(RuntimeError, TypeError):
            self.ctx.model.sample_received.disconnect(self._sample)
