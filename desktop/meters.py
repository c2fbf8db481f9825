"""The node view's "Now" meters: one per meter row of the metric table, then the fullest mounts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QGridLayout, QGroupBox, QWidget

from servermanager.common import metrics as mt
from servermanager.desktop.format import NA, fmt_bytes, fmt_of, fmt_pct, format_value
from servermanager.desktop.widgets import Meter

METER_COLUMNS = 4  # at most; fewer when a meter's label and detail would not fit beside each other
MIN_COLUMNS = 2
MAX_MOUNTS = 7  # the fullest ones; a host with dozens of mounts would push the charts away
# Where the meter rows go in the grid, four to a line: the gauges with a bar first, then the
# rates, then counts. Meter rows not named here follow in table order.
METER_ORDER = (
    "cpu_pct",
    "mem_pct",
    "swap_pct",
    "load1",
    "net_rx_bps",
    "net_tx_bps",
    "disk_read_bps",
    "disk_write_bps",
    "procs",
)


@dataclass(frozen=True)
class Reading:
    """What one meter shows: the bar's fill (0..100, None for no bar), the value and a detail."""

    pct: float | None
    text: str
    detail: str = ""


def _load(m: mt.MetricsBase, r: Reading) -> Reading:
    # The bar shows the 1-minute load per core: 100 % means every core busy.
    cores = max(1, len(m.cpu_per_core))
    return replace(r, pct=min(100.0, m.load1 / cores * 100), detail=f"{m.load5:.2f} · {m.load15:.2f}")


def _swap(m: mt.MetricsBase, r: Reading) -> Reading:
    return replace(r, detail=fmt_bytes(m.swap_used)) if m.swap_total else Reading(None, "no swap")


# What a meter adds to its row's formatted value, by row name: details from the rest of the reading.
EXTRAS: dict[str, Callable[[mt.MetricsBase, Reading], Reading]] = {
    "cpu_pct": lambda m, r: replace(r, detail=f"{len(m.cpu_per_core) or '?'} cores"),
    "mem_pct": lambda m, r: replace(r, detail=fmt_of(m.mem_used, m.mem_total)),
    "swap_pct": _swap,
    "load1": _load,
}


def meter_rows(rows: Sequence[mt.Field] = mt.FIELDS) -> tuple[mt.Field, ...]:
    """The rows shown as meters, in METER_ORDER and then table order."""
    rank = {name: i for i, name in enumerate(METER_ORDER)}
    return tuple(sorted((f for f in rows if f.meter), key=lambda f: rank.get(f.name, len(rank))))


def reading(field: mt.Field, m: mt.MetricsBase) -> Reading:
    """One meter row's reading: a percentage fills the bar; EXTRAS add what the value alone lacks."""
    v = mt.scalar(m, field.name)
    base = Reading(v if field.unit is mt.Unit.PERCENT else None, format_value(field.unit, v))
    extra = EXTRAS.get(field.name)
    return extra(m, base) if extra is not None else base


class MeterBox(QGroupBox):
    """A grid of meters, four to a line: the table's meter rows, then a meter per mount, fullest first."""

    def __init__(self, rows: Sequence[mt.Field] = mt.FIELDS, parent: QWidget | None = None) -> None:
        super().__init__("Now", parent)
        self.setAccessibleName("Current values")
        self.grid = QGridLayout(self)
        self.grid.setHorizontalSpacing(16)
        self.grid.setVerticalSpacing(4)
        self.rows = meter_rows(rows)
        self.meters: dict[str, Meter] = {}  # by row name
        self.columns = METER_COLUMNS
        for field in self.rows:
            self.meters[field.name] = Meter(field.label)
        # Mounts follow the table's meters in the same grid.
        self.disk_meters: dict[str, Meter] = {}
        self._place()

    def _all(self) -> list[Meter]:
        return [*self.meters.values(), *self.disk_meters.values()]

    def _place(self) -> None:
        for i, meter in enumerate(self._all()):
            self.grid.addWidget(meter, i // self.columns, i % self.columns)

    def fitting_columns(self, width: int) -> int:
        """The most columns (up to METER_COLUMNS) in which every meter's label and detail fit."""
        margins = self.grid.contentsMargins()
        avail = width - margins.left() - margins.right()
        spacing = max(0, self.grid.horizontalSpacing())
        need = max((m.head_room()[0] + 8 for m in self._all()), default=0)
        for n in range(METER_COLUMNS, MIN_COLUMNS, -1):
            if (avail - (n - 1) * spacing) / n >= need:
                return n
        return MIN_COLUMNS

    def _reflow(self) -> None:
        columns = self.fitting_columns(self.width())
        if columns != self.columns:
            self.columns = columns
            for meter in self._all():
                self.grid.removeWidget(meter)
            self._place()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._reflow()

    def show_missing(self, text: str = NA) -> None:
        """No reading to show (no sample yet, or no node): every table meter says so, dimmed."""
        for meter in self.meters.values():
            meter.set_value(None, text, dim=True)

    def show_reading(self, m: mt.MetricsBase, *, dim: bool) -> None:
        for field in self.rows:
            r = reading(field, m)
            self.meters[field.name].set_value(r.pct, r.text, detail=r.detail, dim=dim)
        self._show_disks(m.disks, dim)
        self._reflow()  # longer details may need wider meters

    def _show_disks(self, disks: list[mt.DiskUsage], dim: bool) -> None:
        shown = sorted(disks, key=lambda d: d.pct, reverse=True)[:MAX_MOUNTS]
        if list(self.disk_meters) != [d.mount for d in shown]:
            for meter in self.disk_meters.values():
                self.grid.removeWidget(meter)
                meter.deleteLater()
            self.disk_meters = {}
            for i, disk in enumerate(shown, start=len(self.meters)):
                meter = Meter(f"Disk {disk.mount}")
                self.disk_meters[disk.mount] = meter
                self.grid.addWidget(meter, i // self.columns, i % self.columns)
        for disk in shown:
            self.disk_meters[disk.mount].set_value(
                disk.pct, fmt_pct(disk.pct), detail=fmt_of(disk.used, disk.total), dim=dim
            )
