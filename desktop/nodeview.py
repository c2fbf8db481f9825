"""The node view: host facts, current gauges, history charts, services and top processes of one node."""

from __future__ import annotations

import asyncio
import contextlib
import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from servermanager.desktop.charts.panel import ChartPanel
from servermanager.desktop.charts.ranges import (
    LAST_1H,
    LIVE_5M,
    PRESET_RANGES,
    ChartRange,
    HistoryRequest,
    preset,
)
from servermanager.desktop.containers import ContainersPanel
from servermanager.desktop.context import AppContext
from servermanager.desktop.devices import DevicesPanel
from servermanager.desktop.format import NA, fmt_ago, fmt_bytes, fmt_duration, fmt_time
from servermanager.desktop.logview import LogsPanel
from servermanager.desktop.meters import MeterBox
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.processes import ProcessesPanel
from servermanager.desktop.series import SeriesPanel
from servermanager.desktop.services import ServicesPanel
from servermanager.desktop.widgets import scrolled


def _initial_range(ctx: AppContext, node: p.NodeInfo | None) -> ChartRange:
    """The user's range once they chose one; until then one that fits the node's age: a node
    younger than an hour would show an hour of mostly empty charts, so it opens live."""
    key = ctx.settings.get("chart_range")
    if ctx.settings.is_set("chart_range") and key in {r.key for r in PRESET_RANGES}:
        return preset(key)
    young = node is not None and time.time() - node.created_at < 3600.0
    return LIVE_5M if young else LAST_1H


class NodeView(QWidget):
    """One node in detail; follows the fleet model, so it updates live like the table.

    Facts and gauges take the height they need; the charts get the rest of the tab.
    """

    def __init__(self, ctx: AppContext, node_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.node_id = node_id
        self.core_url = ctx.rest.session.url if ctx.rest.session else ""
        self._uptime: float | None = None
        outer = QVBoxLayout(self)
        outer.setContentsMargins(16, 12, 16, 12)
        outer.setSpacing(12)

        self.title = QLabel()
        font = QFont(self.title.font())
        font.setPointSizeF(font.pointSizeF() * 1.5)
        font.setBold(True)
        self.title.setFont(font)
        self.subtitle = QLabel()
        self.subtitle.setObjectName("factKey")
        outer.addWidget(self.title)
        outer.addWidget(self.subtitle)

        row = QHBoxLayout()
        row.setSpacing(12)
        self.now = MeterBox()
        self.meters = self.now.meters  # by metric row name
        row.addWidget(self.now, 5)  # the meters need the width more than the host facts (which wrap)

        host_box = QGroupBox("Host")
        self.facts = QFormLayout(host_box)
        self.facts.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
        self.facts.setVerticalSpacing(3)
        self.fact_labels: dict[str, QLabel] = {}
        for key, label in [
            ("hostname", "Hostname"),
            ("os", "System"),
            ("kernel", "Kernel"),
            ("cpu", "CPU"),
            ("mem", "Memory"),
            ("boot", "Booted"),
            ("agent", "Agent"),
            ("enrolled", "Enrolled"),
            ("gpu", "GPU"),
            ("smart", "SMART"),
        ]:
            key_label = QLabel(label)
            key_label.setObjectName("factKey")
            value = QLabel(NA)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setWordWrap(True)
            self.facts.addRow(key_label, value)
            self.fact_labels[key] = value
        row.addWidget(host_box, 2)
        outer.addLayout(row)

        # ---- HISTORY CHARTS -----------------------------------------------------------------
        # desktop/charts/ (ChartPanel of HistoryChart, dumb pyqtgraph widgets) is placed here by
        # _build_charts(); it gets history from the core and the live tail from the model.
        self.charts_box = QGroupBox("History")
        self.charts_layout = QVBoxLayout(self.charts_box)
        self._build_charts()
        # ---- END HISTORY CHARTS -------------------------------------------------------------
        # History, Services and Processes share the rest of the tab; each loads when first shown.
        self.services = ServicesPanel(ctx, node_id)
        self.processes = ProcessesPanel(ctx, node_id)
        self.sections = QTabWidget()
        self.sections.setDocumentMode(True)
        self.sections.addTab(self.charts_box, "History")
        self.sections.addTab(self.services, "Services")
        self.sections.addTab(self.processes, "Processes")
        # A point clicked on a chart: the processes at that moment.
        self.charts.pointClicked.connect(self.show_processes_at)
        self.logs = LogsPanel(ctx, node_id)
        self.sections.addTab(self.logs, "Logs")
        self.containers = ContainersPanel(ctx, node_id)
        self.sections.addTab(self.containers, "Containers")
        # Named series of the agent's [[custom]], [[scrape]] and [[check]] entries.
        self.custom = SeriesPanel(ctx, node_id)
        self.sections.addTab(self.custom, "Custom")
        # History per disk mount, interface and sensor, one device at a time.
        self.devices = DevicesPanel(ctx, node_id)
        self.sections.addTab(self.devices, "Devices")
        self.sections.currentChanged.connect(self._section_changed)
        outer.addWidget(self.sections, 1)

        # "last seen 7s ago" is relative: while offline it is redrawn every second, not frozen.
        self._ticker = QTimer(self)
        self._ticker.setInterval(1000)
        self._ticker.timeout.connect(self._tick)
        ctx.model.node_changed.connect(self._node_changed)
        self.refresh()

    def _build_charts(self) -> None:
        """History from REST for the chosen range, plus the live tail from pushed samples."""
        self.charts = ChartPanel(
            dark=self.ctx.themes.dark, initial=_initial_range(self.ctx, self.node), columns=3
        )
        # No fixed minimum height: the charts' own minimums set the scrolled height, so a chart
        # never overflows the area (in two or three columns).
        self.chart_note = QLabel()
        self.chart_note.setObjectName("error")
        self.chart_note.hide()
        self.charts_layout.addWidget(self.chart_note)
        # On a short window the charts scroll rather than being cut off below the window's edge.
        self.charts_scroll = scrolled(self.charts)
        self.charts_layout.addWidget(self.charts_scroll, 1)
        self._fields = sorted({f for chart in self.charts.charts.values() for f in chart.fields})
        self._history: asyncio.Task[None] | None = None
        self.history_loads = 0  # responses drawn; tests and the screenshot script wait on it
        self.charts.rangeRequested.connect(self.load_history)
        self.charts.rangeRequested.connect(self._remember_range)
        self.ctx.themes.theme_changed.connect(self.charts.set_theme)
        self.ctx.model.sample_received.connect(self._sample)
        self.load_history(self.charts.current_request())

    def load_history(self, request: HistoryRequest) -> None:
        """Fetch what request asks for; a newer request supersedes one still in flight."""
        if self._history is not None:
            self._history.cancel()
        self._history = self.ctx.aio.spawn(self._load(request), f"history-{self.node_id}")

    def _remember_range(self, _request: HistoryRequest) -> None:
        # A range picked on a chart is the next node view's too (the settings dialog's default).
        rng = self.charts.current_range
        if not rng.is_custom:
            self.ctx.settings.set("chart_range", rng.key)

    async def _load(self, r: HistoryRequest) -> None:
        try:
            history = await self.ctx.rest.history(
                self.node_id, r.start, r.end, r.resolution, self._fields, points=r.points
            )
        except CoreError as exc:
            self.chart_note.setText(f"History unavailable: {exc.message}")
            self.chart_note.show()
            return
        self.chart_note.hide()
        if self.charts.set_history(history):
            self.history_loads += 1

    def _sample(self, node_id: int, sample: mt.Sample) -> None:
        if node_id == self.node_id:
            self.charts.append_sample(sample)

    def shutdown(self) -> None:
        """Stop listening and fetching before the view is deleted."""
        self.services.shutdown()
        self.logs.shutdown()
        self.processes.shutdown()
        self.containers.shutdown()
        self.custom.shutdown()
        self.devices.shutdown()
        if self._history is not None:
            self._history.cancel()
        self._ticker.stop()
        for signal, slot in (
            (self.ctx.model.node_changed, self._node_changed),
            (self.ctx.model.sample_received, self._sample),
            (self.ctx.themes.theme_changed, self.charts.set_theme),
        ):
            with contextlib.suppress(RuntimeError, TypeError):
                signal.disconnect(slot)

    def show_services(self) -> ServicesPanel:
        self.sections.setCurrentWidget(self.services)
        return self.services

    def show_logs(self) -> LogsPanel:
        self.sections.setCurrentWidget(self.logs)
        return self.logs

    def show_processes(self) -> ProcessesPanel:
        self.sections.setCurrentWidget(self.processes)
        return self.processes

    def show_custom(self) -> SeriesPanel:
        self.sections.setCurrentWidget(self.custom)
        return self.custom

    def show_devices(self) -> DevicesPanel:
        self.sections.setCurrentWidget(self.devices)
        return self.devices

    def show_processes_at(self, ts: float) -> None:
        self.processes.show_at(ts)
        self.sections.setCurrentWidget(self.processes)

    def show_containers(self) -> ContainersPanel:
        self.sections.setCurrentWidget(self.containers)
        return self.containers

    def _section_changed(self, index: int) -> None:
        if self.sections.widget(index) is self.containers:
            self.containers.refresh()
        if self.sections.widget(index) is self.logs and self.logs.loads == 0:
            self.logs.refresh_sources()
        if self.sections.widget(index) is self.custom:
            self.custom.refresh()
        if self.sections.widget(index) is self.devices:
            self.devices.refresh()
        if self.sections.widget(index) is self.processes and self.processes.live:
            self.processes.refresh()
        if (
            self.sections.widget(index) is self.services
            and self.services.loads == 0
            and not self.services.busy
        ):
            self.services.refresh()

    @property
    def node(self) -> p.NodeInfo | None:
        return self.ctx.model.node(self.node_id)

    def _node_changed(self, node_id: int) -> None:
        if node_id == self.node_id:
            self.refresh()

    def refresh(self) -> None:
        node = self.node
        if node is None:
            self.title.setText(self.title.text() or f"Node {self.node_id}")
            self.subtitle.setText("This node is not in the fleet any more (removed, or not signed in).")
            self.now.show_missing()
            return
        self.title.setText(self.ctx.model.display_name(node.id))
        self._show_status(node)
        self.charts.set_interval(node.interval)
        self._show_metrics(node)
        self._show_host(node)

    def _show_status(self, node: p.NodeInfo) -> None:
        """The subtitle; while offline, "last seen" keeps counting and the core's reason is shown."""
        if node.online:
            status = "Online"
        else:
            status = f"Offline — last seen {fmt_ago(node.last_seen)}"
            if node.offline_reason:
                status += f" ({node.offline_reason})"
        where = [f"group {node.group}" if node.group else "no group"]
        if node.tags:
            where.append("tags " + ", ".join(node.tags))
        self.subtitle.setText(f"{status}  ·  {'  ·  '.join(where)}  ·  id {node.id}")
        if node.online:
            self._ticker.stop()
        elif not self._ticker.isActive():
            self._ticker.start()

    def _tick(self) -> None:
        node = self.node
        if node is not None:
            self._show_status(node)

    def _show_metrics(self, node: p.NodeInfo) -> None:
        m = node.latest.metrics if node.latest is not None else None
        if m is None:
            self.now.show_missing("no data yet")
            return
        self.now.show_reading(m, dim=not node.online)
        self._uptime = m.uptime

    def _show_host(self, node: p.NodeInfo) -> None:
        h = node.host
        f = self.fact_labels
        f["enrolled"].setText(fmt_time(node.created_at))
        if h is None:
            return
        f["hostname"].setText(h.hostname)
        f["os"].setText(f"{h.os} {h.os_version}")
        f["kernel"].setText(f"{h.kernel} ({h.arch})")
        f["cpu"].setText(f"{h.cpu_model} ({h.cpu_count} cores)")
        f["mem"].setText(fmt_bytes(h.mem_total))
        up = f" (up {fmt_duration(self._uptime)})" if self._uptime is not None else ""
        f["boot"].setText(fmt_time(h.boot_time) + up)
        every = f", every {node.interval:g} s" if node.interval else ""
        f["agent"].setText(f"{h.agent_version}{every}")
        gpu, smart = hardware_lines(node.hardware)
        f["gpu"].setText(gpu)
        f["smart"].setText(smart)


def hardware_lines(hw: mt.Hardware | None) -> tuple[str, str]:
    """The node header's GPU and SMART lines: what the agent read, or why it read nothing."""
    if hw is None:
        return "not reported (an older agent, or [hardware] off)", "not reported"
    gpus = [
        f"{g.name}"
        + (f" {g.util_pct:.0f} %" if g.util_pct is not None else "")
        + (
            f", {fmt_bytes(g.mem_used)} of {fmt_bytes(g.mem_total)}"
            if g.mem_used is not None and g.mem_total
            else ""
        )
        + (f", {g.temp:.0f} °C" if g.temp is not None else "")
        for g in hw.gpus
    ]
    disks = []
    for d in hw.smart:
        verdict = (d.note or "no SMART") if d.passed is None else ("PASSED" if d.passed else "FAILING")
        extra = (f", {d.temp:.0f} °C" if d.temp is not None else "") + (
            f", {d.power_on_hours} h on" if d.power_on_hours is not None else ""
        )
        disks.append(f"{' '.join(x for x in (d.device, d.model) if x)}: {verdict}{extra}")
    return "; ".join(gpus) or (hw.gpu_note or "none"), "; ".join(disks) or (hw.smart_note or "none")
