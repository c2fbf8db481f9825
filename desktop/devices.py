"""A node's per-device history (disk mounts, block devices, network interfaces, temperature sensors): a device picker and its charts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from servermanager.common import rest as m
from servermanager.common.metric_table import Unit
from servermanager.common.series import DEVICE_PREFIX
from servermanager.desktop.charts.families import ChartFamily
from servermanager.desktop.charts.panel import ChartPanel
from servermanager.desktop.charts.ranges import LAST_1H, HistoryRequest
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.widgets import scrolled

# The label that names the device in each kind of device series (core/store/devices.py), the
# word the picker shows before it, and the order kinds are listed in.
KINDS = (("mount", "Disk"), ("disk", "Disk I/O"), ("iface", "Interface"), ("sensor", "Sensor"))
# Each device series (without the prefix): its chart, the chart's title and unit, and its legend label.
CHARTS: dict[str, tuple[str, str, Unit, str]] = {
    "disk_pct": ("usage", "Usage", Unit.PERCENT, "used %"),
    "disk_used_bytes": ("used", "Used space", Unit.BYTES, "used"),
    "disk_read_bps": ("io", "Throughput", Unit.BYTES_PER_S, "read"),
    "disk_write_bps": ("io", "Throughput", Unit.BYTES_PER_S, "written"),
    "disk_read_iops": ("iops", "Operations", Unit.PER_S, "reads"),
    "disk_write_iops": ("iops", "Operations", Unit.PER_S, "writes"),
    "net_rx_bps": ("traffic", "Traffic", Unit.BYTES_PER_S, "received"),
    "net_tx_bps": ("traffic", "Traffic", Unit.BYTES_PER_S, "sent"),
    "temp_celsius": ("temp", "Temperature (°C)", Unit.PLAIN, "°C"),
}


@dataclass(frozen=True, slots=True)
class Device:
    """One disk mount, interface or sensor, and the selectors of its series."""

    kind: str  # a KINDS label: mount, disk, iface, sensor
    name: str
    selectors: tuple[tuple[str, str], ...]  # (series name without the prefix, selector)

    @property
    def title(self) -> str:
        return f"{dict(KINDS)[self.kind]} {self.name}"


def devices_of(series: Sequence[m.SeriesInfo]) -> list[Device]:
    """The devices a node's device series name, kind by kind, each kind's in name order."""
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for s in series:
        short = s.name.removeprefix(DEVICE_PREFIX)
        if short not in CHARTS:
            continue  # a device series of a newer core: not charted here
        for kind, _word in KINDS:
            if kind in s.labels:
                found.setdefault((kind, s.labels[kind]), []).append((short, s.selector))
                break
    order = {kind: i for i, (kind, _word) in enumerate(KINDS)}
    return [
        Device(kind, name, tuple(sorted(sels)))
        for (kind, name), sels in sorted(found.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    ]


def families_of(device: Device) -> list[ChartFamily]:
    """The device's charts: its series grouped by CHARTS (received and sent on one chart)."""
    grouped: dict[str, tuple[str, Unit, list[str], list[str]]] = {}
    for short, selector in device.selectors:
        key, title, unit, label = CHARTS[short]
        entry = grouped.setdefault(key, (title, unit, [], []))
        entry[2].append(selector)
        entry[3].append(label)
    return [
        ChartFamily(key, title, tuple(fields), tuple(labels), unit)
        for key, (title, unit, fields, labels) in grouped.items()
    ]


def merged(histories: Sequence[m.History]) -> m.History:
    """One history of several series' answers (one field each), on the first one's times.

    The series of one device come from the same samples, so their times match; a point one lacks
    is drawn as a gap (None) rather than shifting the others.
    """
    first = histories[0]
    ts = first.ts

    def aligned(h: m.History, values: list[float | None]) -> list[float | None]:
        if h.ts == ts:
            return values
        at = dict(zip(h.ts, values, strict=True))
        return [at.get(t) for t in ts]

    def column(which: str) -> dict[str, list[float | None]] | None:
        out: dict[str, list[float | None]] = {}
        for h in histories:
            d = getattr(h, which)
            if d is None:
                return None
            for f, values in d.items():
                out[f] = aligned(h, values)
        return out

    avg = column("avg")
    assert avg is not None
    return m.History(
        node_id=first.node_id,
        resolution=first.resolution,
        from_=first.from_,
        to=first.to,
        fields=[f for h in histories for f in h.fields],
        ts=ts,
        avg=avg,
        min=column("min"),
        max=column("max"),
    )


class DevicesPanel(QWidget):
    """The Devices tab of a node view: pick a disk mount, interface or sensor, see its history.

    A tab of its own rather than more charts on History: a host has one CPU but any number of
    mounts, interfaces and sensors, and one device at a time keeps the charts readable. The list
    of devices comes from the core's device series (REST `series?kind=device`) when shown.
    """

    def __init__(self, ctx: AppContext, node_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.node_id = node_id
        self.loads = 0  # completed device list loads; tests wait on them
        self.chart_loads = 0
        self.devices: list[Device] = []
        self.device: Device | None = None  # the charted one
        self._task: asyncio.Task[None] | None = None
        self._chart_task: asyncio.Task[None] | None = None
        self.picker = QComboBox()
        self.picker.setMinimumContentsLength(24)
        self.picker.currentIndexChanged.connect(self._picked)
        self.status = QLabel()
        self.status.setObjectName("error")
        self.status.setWordWrap(True)
        self.status.hide()
        self.empty = QLabel(
            "No per-device history from this node yet: it appears with the node's samples that "
            "carry disk mounts, block devices, network interfaces or temperature sensors."
        )
        self.empty.setWordWrap(True)
        self.empty.hide()
        top = QHBoxLayout()
        top.addWidget(QLabel("Device"))
        top.addWidget(self.picker, 1)
        self.chart_box = QWidget()
        self.chart_layout = QVBoxLayout(self.chart_box)
        self.chart_layout.setContentsMargins(0, 0, 0, 0)
        self.charts: ChartPanel | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.status)
        layout.addWidget(self.empty)
        # In a scroll area: the charts' own minimum height must not make the node view (whose tabs
        # share one height) taller than a 1024x640 window.
        self.charts_scroll = scrolled(self.chart_box)
        layout.addWidget(self.charts_scroll, 1)

    # ------------------------------------------------------------ the devices

    def refresh(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._task = self.ctx.aio.spawn(self._load(), f"devices-{self.node_id}")

    async def _load(self) -> None:
        try:
            result = await self.ctx.rest.series(self.node_id, kind="device")
        except CoreError as exc:
            self.status.setText(f"Devices unavailable: {exc.message}")
            self.status.show()
            return
        self.status.hide()
        self.show_devices(devices_of(result.series))
        self.loads += 1

    def show_devices(self, devices: list[Device]) -> None:
        """Fill the picker, keeping the charted device picked if it is still there."""
        keep = self.device
        self.devices = devices
        self.empty.setVisible(not devices)
        self.picker.blockSignals(True)
        self.picker.clear()
        for d in devices:
            self.picker.addItem(d.title)
        self.picker.blockSignals(False)
        index = next(
            (i for i, d in enumerate(devices) if keep and (d.kind, d.name) == (keep.kind, keep.name)), 0
        )
        if devices:
            self.picker.setCurrentIndex(index)
            if self.device != devices[index]:
                self.chart_device(devices[index])

    def pick(self, title: str) -> None:
        """Pick the device shown as `title` ("Disk /", "Disk I/O sda", "Interface eth0")."""
        self.picker.setCurrentIndex(self.picker.findText(title))

    def _picked(self, index: int) -> None:
        if 0 <= index < len(self.devices) and self.devices[index] != self.device:
            self.chart_device(self.devices[index])

    # ------------------------------------------------------------ the charts

    def chart_device(self, device: Device) -> None:
        """Chart `device`'s series over the range above the charts (an hour at first)."""
        self.device = device
        if self.charts is not None:
            self.charts.deleteLater()
        self.charts = ChartPanel(
            families=families_of(device), dark=self.ctx.themes.dark, columns=1, initial=LAST_1H
        )
        # No fixed minimum height: the charts' own minimums set the scrolled height, so a chart
        # never overflows the area.
        self.charts.rangeRequested.connect(self.load_chart)
        self.chart_layout.addWidget(self.charts, 1)
        self.load_chart(self.charts.current_request())

    def load_chart(self, r: HistoryRequest) -> None:
        if self._chart_task is not None:
            self._chart_task.cancel()
        self._chart_task = self.ctx.aio.spawn(self._load_chart(r), f"devices-chart-{self.node_id}")

    async def _load_chart(self, r: HistoryRequest) -> None:
        device, charts = self.device, self.charts
        if device is None or charts is None:
            return
        try:
            answers = [
                await self.ctx.rest.series_history(self.node_id, selector, r.start, r.end, r.resolution)
                for _short, selector in device.selectors
            ]
        except CoreError as exc:
            self.status.setText(f"{device.title}: history unavailable: {exc.message}")
            self.status.show()
            return
        if charts is self.charts and charts.set_history(merged(answers)):
            self.chart_loads += 1

    def shutdown(self) -> None:
        for task in (self._task, self._chart_task):
            if task is not None:
                task.cancel()
        with contextlib.suppress(RuntimeError):
            self.picker.currentIndexChanged.disconnect(self._picked)
