"""The firing alerts of every core in the window, in one list that names each alert's core."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QModelIndex
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from servermanager.common.alerts import Alert
from servermanager.desktop.alerts import since, value_text
from servermanager.desktop.cores import CoreSet
from servermanager.desktop.models.records import RecordsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.widgets import record_table

OPERATOR_HINT = "Acknowledging needs the operator role on that alert's core."


@dataclass(frozen=True)
class CoreAlert:
    """An alert with the core it is from (alert ids are per core: two cores' alert 1 differ)."""

    slot: int
    core: str
    alert: Alert


class MergedAlertsModel(RecordsModel[CoreAlert]):
    """The firing alerts of every core, worst and newest first; live events update rows in place."""

    columns = (
        ("Core", lambda r: r.core),
        ("Severity", lambda r: r.alert.severity),
        ("State", lambda r: r.alert.state + (" (silenced)" if r.alert.silenced else "")),
        ("Node", lambda r: r.alert.node),
        ("Rule", lambda r: r.alert.rule),
        ("Value", lambda r: value_text(r.alert)),
        ("Since", lambda r: since(r.alert)),
        ("Acked by", lambda r: r.alert.acked_by or ""),
    )

    def fill(self, records: list[CoreAlert]) -> None:
        self.set_records(
            sorted(records, key=lambda r: (r.alert.severity != "critical", -(r.alert.fired_at or 0.0)))
        )

    def upsert(self, record: CoreAlert) -> None:
        row = next(
            (i for i, r in enumerate(self.records) if (r.slot, r.alert.id) == (record.slot, record.alert.id)),
            None,
        )
        firing = record.alert.state == "firing"
        if row is not None and firing:
            self.records[row] = record
            self.dataChanged.emit(self.index(row, 0), self.index(row, self.columnCount() - 1))
        elif row is not None:
            self.beginRemoveRows(QModelIndex(), row, row)
            del self.records[row]
            self.endRemoveRows()
        elif firing:
            self.beginInsertRows(QModelIndex(), 0, 0)
            self.records.insert(0, record)
            self.endInsertRows()


class MergedAlertsPanel(QWidget):
    """The "All alerts" tab: what fires on any core of the window, with its core; acknowledge
    goes to that alert's core with that core's sign-in."""

    def __init__(self, cores: CoreSet, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cores = cores
        self.model = MergedAlertsModel(self)
        self.table = record_table(self.model)
        self.table.setAccessibleName("Firing alerts of every core")
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._update_ack())
        self.status = QLabel()
        self.ack_button = QPushButton("Acknowledge")
        self.ack_button.setEnabled(False)
        self.ack_button.clicked.connect(self.acknowledge_selected)
        bar = QHBoxLayout()
        bar.addWidget(self.status, 1)
        bar.addWidget(self.ack_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)
        for signal in (self.model.rowsInserted, self.model.rowsRemoved, self.model.modelReset):
            signal.connect(self._count_changed)
        cores.firing_changed.connect(self.reload)
        cores.alert_on.connect(self._alert)
        self.reload()

    def reload(self) -> None:
        """Every core's firing alerts as the cores last listed them."""
        self.model.fill(
            [
                CoreAlert(slot, self.cores.name(slot), a)
                for slot, alerts in self.cores.firing.items()
                for a in alerts
            ]
        )
        self._update_ack()

    def _alert(self, slot: int, alert: Alert) -> None:
        self.model.upsert(CoreAlert(slot, self.cores.name(slot), alert))
        self._update_ack()

    def _count_changed(self, *_args: object) -> None:
        n = self.model.rowCount()
        on = len({r.slot for r in self.model.records})
        self.status.setText(
            f"{n} firing alert{'s' if n != 1 else ''}"
            + (f" on {on} core{'s' if on != 1 else ''}" if n else "")
        )

    def selected(self) -> CoreAlert | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.record(rows[0].row()) if rows else None

    def _can_ack(self, record: CoreAlert) -> bool:
        ctx = self.cores.contexts.get(record.slot)
        session = ctx.rest.session if ctx is not None else None
        return session is not None and session.can_edit

    def _update_ack(self) -> None:
        record = self.selected()
        can = record is not None and self._can_ack(record)
        self.ack_button.setEnabled(can and record is not None and record.alert.acked_by is None)
        self.ack_button.setToolTip("" if record is None or can else OPERATOR_HINT)

    def acknowledge_selected(self) -> None:
        record = self.selected()
        ctx = self.cores.contexts.get(record.slot) if record is not None else None
        if record is not None and ctx is not None and self._can_ack(record):
            self.ack_button.setEnabled(False)
            ctx.aio.spawn(self._ack(record), "alert-ack")

    async def _ack(self, record: CoreAlert) -> None:
        ctx = self.cores.contexts.get(record.slot)
        if ctx is None:
            return
        try:
            alert = await ctx.rest.ack_alert(record.alert.id)
        except CoreError as exc:
            self.status.setText(f"Could not acknowledge on {record.core}: {exc.message}")
            self._update_ack()
            return
        ctx.model.alert_changed(alert)
        self.cores.alert_event(record.slot, alert)

    def shutdown(self) -> None:
        """Nothing of its own runs; its connections go with it."""
