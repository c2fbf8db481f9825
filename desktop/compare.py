"""The Compare tab: one metric of up to ten nodes overlaid on one chart, over the node view's ranges."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from servermanager.common.rest import History
from servermanager.desktop.charts.compare import MAX_SERIES, CompareChart
from servermanager.desktop.charts.panel import GAP_FACTOR, CustomRangeDialog
from servermanager.desktop.charts.ranges import (
    LIVE_5M,
    LIVE_WINDOW,
    PRESET_RANGES,
    ROLLUP_STEP,
    ChartRange,
    HistoryRequest,
    request_for,
)
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.errors import CoreError

MAX_NODES = MAX_SERIES
TOO_MANY = f"A comparison holds at most {MAX_NODES} nodes: remove one first."
DEFAULT_METRIC = "cpu_pct"


def gap_after(history: History, interval: float | None) -> float | None:
    """Seconds between two points that mean an outage, as the node view's charts reckon it."""
    step = history.step or ROLLUP_STEP.get(history.resolution) or interval
    if len(history.ts) > 2:
        # History written at another interval must not read as one long run of outages.
        step = max(step or 0.0, float(np.median(np.diff(history.ts))))
    return GAP_FACTOR * step if step else None


class CompareNodes(QObject):
    """The nodes a comparison can show and their history, by key: here one core's, whose keys are
    its node ids; desktop.cores.CoreSetNodes has every core of the window (keys of core and id)."""

    sample_received = Signal(object, object)  # key, mt.Sample
    node_changed = Signal(object)  # key

    def __init__(self, ctx: AppContext, parent: QObject | None = None, *, listen: bool = True) -> None:
        super().__init__(parent)
        self.ctx = ctx
        if listen:  # a subclass with nodes of other models listens to those itself
            ctx.model.sample_received.connect(self._sample)
            ctx.model.node_changed.connect(self._changed)

    def _sample(self, node_id: int, sample: mt.Sample) -> None:
        self.sample_received.emit(node_id, sample)

    def _changed(self, node_id: int) -> None:
        self.node_changed.emit(node_id)

    def name(self, key: int) -> str:
        return self.ctx.model.display_name(key)

    def nodes(self) -> list[tuple[int, p.NodeInfo]]:
        return [(n.id, n) for n in self.ctx.model.nodes()]

    def node(self, key: int) -> p.NodeInfo | None:
        return self.ctx.model.node(key)

    def signed_in(self) -> bool:
        return self.ctx.rest.session is not None

    async def history(self, key: int, r: HistoryRequest, fields: list[str]) -> History:
        return await self.ctx.rest.history(key, r.start, r.end, r.resolution, fields, points=r.points)


class CompareView(QWidget):
    """A metric picker, a range bar, the overlaid chart and the list of nodes compared."""

    def __init__(
        self,
        ctx: AppContext,
        node_ids: Sequence[int] = (),
        parent: QWidget | None = None,
        *,
        now: Callable[[], float] = time.time,
        nodes: CompareNodes | None = None,
    ) -> None:
        super().__init__(parent)
        self.ctx = ctx
        # Node "ids" here are the keys of `nodes`: ctx's own node ids unless it spans several cores.
        self.nodes = nodes if nodes is not None else CompareNodes(ctx, self)
        if self.nodes.parent() is None:
            self.nodes.setParent(self)  # its connections go with the view
        self.core_url = ctx.rest.session.url if ctx.rest.session else ""  # node ids are per core
        self._now = now
        self.node_ids: list[int] = []
        self._range: ChartRange = LIVE_5M
        self._pending: HistoryRequest | None = None
        self._task: asyncio.Task[None] | None = None
        self.history_loads = 0  # answers drawn; tests and the screenshot script wait on it
        self.zoomed = False
        self.custom_dialog: CustomRangeDialog | None = None

        self.metric_box = QComboBox()
        self.metric_box.setAccessibleName("Metric")
        for f in mt.FIELDS:
            self.metric_box.addItem(f.label, f.name)
        self.metric_box.setCurrentIndex(self.metric_box.findData(DEFAULT_METRIC))
        self.metric_box.currentIndexChanged.connect(lambda _i: self._metric_changed())

        bar = QHBoxLayout()
        bar.setSpacing(4)
        bar.addWidget(QLabel("Metric"))
        bar.addWidget(self.metric_box)
        bar.addSpacing(12)
        self._group = QButtonGroup(self)
        self.range_buttons: dict[str, QPushButton] = {}
        for rng in PRESET_RANGES:
            button = QPushButton(rng.label)
            button.setCheckable(True)
            button.setChecked(rng.key == self._range.key)
            button.clicked.connect(lambda _=False, r=rng: self.select_range(r))
            self._group.addButton(button)
            self.range_buttons[rng.key] = button
            bar.addWidget(button)
        custom = QPushButton("Custom…")
        custom.setCheckable(True)
        custom.clicked.connect(self.open_custom_dialog)
        self._group.addButton(custom)
        self.range_buttons["custom"] = custom
        bar.addWidget(custom)
        bar.addStretch(1)
        self.range_label = QLabel()
        bar.addWidget(self.range_label)
        self.reset_button = QPushButton("Reset zoom")
        self.reset_button.setToolTip("Show the whole range again (or double-click the chart)")
        self.reset_button.clicked.connect(self.reset_zoom)
        self.reset_button.hide()
        bar.addWidget(self.reset_button)

        self.note = QLabel()
        self.note.setObjectName("error")
        self.note.setWordWrap(True)
        self.note.hide()

        # The node list: who is compared, and the fleet's other nodes to add.
        self.node_list = QListWidget()
        self.node_list.setAccessibleName("Nodes compared")
        self.node_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.add_combo = QComboBox()
        self.add_combo.setAccessibleName("Node to add")
        self.add_button = QPushButton("Add")
        self.add_button.clicked.connect(self._add_chosen)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self._remove_selected)
        self.count_label = QLabel()
        side = QVBoxLayout()
        side.addWidget(self.count_label)
        side.addWidget(self.node_list, 1)
        adder = QHBoxLayout()
        adder.addWidget(self.add_combo, 1)
        adder.addWidget(self.add_button)
        side.addLayout(adder)
        side.addWidget(self.remove_button)
        side_box = QWidget()
        side_box.setLayout(side)
        side_box.setMaximumWidth(260)

        self.chart = self._make_chart()
        self.body = QHBoxLayout()
        self.body.addWidget(self.chart, 1)
        self.body.addWidget(side_box)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.addLayout(bar)
        outer.addWidget(self.note)
        outer.addLayout(self.body, 1)

        self.nodes.sample_received.connect(self._sample)
        self.nodes.node_changed.connect(self._node_changed)
        ctx.themes.theme_changed.connect(self._theme_changed)
        self._fill_add_combo()
        self.set_nodes(node_ids)

    # ------------------------------------------------------------ nodes

    @property
    def metric_name(self) -> str:
        return str(self.metric_box.currentData())

    @property
    def field(self) -> mt.Field:
        return mt.FIELDS_BY_NAME[self.metric_name]

    def set_nodes(self, node_ids: Sequence[int]) -> bool:
        """Compare exactly these nodes (the first MAX_NODES; False and a message if there were more)."""
        wanted = list(dict.fromkeys(node_ids))
        ok = len(wanted) <= MAX_NODES
        self.node_ids = wanted[:MAX_NODES]
        self.chart.clear()
        self._fill_list()
        self.show_note("" if ok else f"{len(wanted)} nodes selected. {TOO_MANY}")
        self.load()
        return ok

    def add_node(self, node_id: int) -> bool:
        """Add a node to the comparison; refused (False, with a message) past MAX_NODES."""
        if node_id in self.node_ids:
            return True
        if len(self.node_ids) >= MAX_NODES:
            self.show_note(TOO_MANY)
            return False
        self.node_ids.append(node_id)
        self.show_note("")
        self._fill_list()
        self.load()
        return True

    def remove_node(self, node_id: int) -> None:
        if node_id in self.node_ids:
            self.node_ids.remove(node_id)
            self.chart.remove_series(node_id)
            self.show_note("")
            self._fill_list()

    def show_note(self, text: str) -> None:
        self.note.setText(text)
        self.note.setVisible(bool(text))

    def name(self, node_id: int) -> str:
        return self.nodes.name(node_id)

    def _fill_list(self) -> None:
        self.node_list.clear()
        for node_id in self.node_ids:
            item = QListWidgetItem(self.name(node_id))
            item.setData(Qt.ItemDataRole.UserRole, node_id)
            self.node_list.addItem(item)
        self.count_label.setText(f"Nodes ({len(self.node_ids)} of at most {MAX_NODES})")
        self._fill_add_combo()

    def _fill_add_combo(self) -> None:
        self.add_combo.clear()
        for key, _node in sorted(self.nodes.nodes(), key=lambda kn: self.name(kn[0]).lower()):
            if key not in self.node_ids:
                self.add_combo.addItem(self.name(key), key)
        self.add_button.setEnabled(self.add_combo.count() > 0)

    def _add_chosen(self) -> None:
        node_id = self.add_combo.currentData()
        if node_id is not None:
            self.add_node(int(node_id))

    def _remove_selected(self) -> None:
        for item in self.node_list.selectedItems():
            self.remove_node(int(item.data(Qt.ItemDataRole.UserRole)))

    def _node_changed(self, node_id: int) -> None:
        # A rename shows in the legend and the list; a new node becomes addable.
        if node_id in self.chart.lines:
            x, y = self.chart.data(node_id)
            self.chart.set_series(node_id, self.name(node_id), x, y)
        if node_id in self.node_ids:
            self._fill_list()
        elif self.add_combo.findData(node_id) < 0 and self.nodes.node(node_id) is not None:
            self._fill_add_combo()

    # ------------------------------------------------------------ metric and ranges

    def _make_chart(self) -> CompareChart:
        f = self.field
        chart = CompareChart(f.unit, f.label, dark=self.ctx.themes.dark)
        chart.setAccessibleName("Compare chart")
        chart.rangeSelected.connect(self._on_user_zoom)
        chart.resetRequested.connect(self.reset_zoom)
        return chart

    def _metric_changed(self) -> None:
        # Another metric may have another unit, so another axis: a new chart.
        old = self.chart
        self.chart = self._make_chart()
        self.body.replaceWidget(old, self.chart)
        old.deleteLater()
        self.load()

    def _theme_changed(self, dark: bool) -> None:
        self.chart.set_theme(dark)

    @property
    def current_range(self) -> ChartRange:
        return self._range

    def select_range(self, rng: ChartRange) -> None:
        self._range = rng
        button = self.range_buttons.get(rng.key)
        if button is not None:
            button.setChecked(True)
        self.load()

    def open_custom_dialog(self) -> CustomRangeDialog:
        now = self._now()
        start, end = (
            (self._range.start, self._range.end)
            if self._range.start is not None and self._range.end is not None
            else (now - 86400.0, now)
        )
        dialog = CustomRangeDialog(start, end, now, self)
        dialog.accepted.connect(lambda: self.select_range(ChartRange.custom(*dialog.selected_range())))
        dialog.rejected.connect(lambda: self.range_buttons[self._range.key].setChecked(True))
        self.custom_dialog = dialog
        dialog.open()
        return dialog

    def _update_range_label(self) -> None:
        r = self._pending
        text = self._range.label if not self._range.is_custom or r is None else "Custom"
        if r is not None:
            text += f" · {r.resolution}"
        if self.zoomed:
            text += " · zoomed, not following live" if self._range.live else " · zoomed"
        self.range_label.setText(text)
        self.reset_button.setText("Back to live" if self._range.live else "Reset zoom")
        self.reset_button.setVisible(self.zoomed)

    def _on_user_zoom(self, _start: float, _end: float) -> None:
        if not self.zoomed:
            self.zoomed = True
            self._update_range_label()

    def reset_zoom(self) -> None:
        if not self.zoomed:
            return
        self.zoomed = False
        if self._range.live:
            end = self.chart.newest() or self._now()
            self.chart.set_x_range(end - LIVE_WINDOW, end)
            self.chart.follow_tail = True
        elif self._pending is not None:
            self.chart.set_x_range(self._pending.start, self._pending.end)
        self._update_range_label()

    # ------------------------------------------------------------ data

    def load(self) -> None:
        """Fetch the current range for every node compared; supersedes a load in flight."""
        if self._task is not None:
            self._task.cancel()
        self.zoomed = False
        self.chart.follow_tail = self._range.live
        self._pending = request_for(self._range, self._now())
        self._update_range_label()
        if self.node_ids and self.nodes.signed_in():
            self._task = self.ctx.aio.spawn(self._load(self._pending, list(self.node_ids)), "compare")

    async def _load(self, r: HistoryRequest, node_ids: list[int]) -> None:
        metric = self.metric_name
        answers = await asyncio.gather(
            *(self.nodes.history(n, r, [metric]) for n in node_ids),
            return_exceptions=True,
        )
        failed: list[str] = []
        for node_id, answer in zip(node_ids, answers, strict=True):
            if node_id not in self.node_ids:
                continue  # removed while the request was in flight
            if isinstance(answer, CoreError):
                failed.append(f"{self.name(node_id)}: {answer.message}")
                continue
            if isinstance(answer, BaseException):
                raise answer
            node = self.nodes.node(node_id)
            self.chart.set_series(node_id, self.name(node_id), np.asarray(answer.ts), answer.avg.get(metric))
            self.chart.set_gap_after(node_id, gap_after(answer, node.interval if node else None))
        if failed:
            self.show_note("History unavailable for " + "; ".join(failed))
        end = r.end
        if r.resolution == "raw" and self._range.live:
            end = max(end, self.chart.newest() or end)
            self.chart.set_x_range(end - LIVE_WINDOW, end)
        else:
            self.chart.set_x_range(r.start, r.end)
        self.history_loads += 1

    def _sample(self, node_id: int, sample: mt.Sample) -> None:
        if self._range.live and node_id in self.node_ids:
            self.chart.append_live(node_id, sample.ts, mt.scalar(sample.metrics, self.metric_name))

    def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for signal, slot in (
            (self.nodes.sample_received, self._sample),
            (self.nodes.node_changed, self._node_changed),
            (self.ctx.themes.theme_changed, self._theme_changed),
        ):
            with contextlib.suppress(RuntimeError, TypeError):
                signal.disconnect(slot)
