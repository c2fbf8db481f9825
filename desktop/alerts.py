"""The Alerts tab: the core's alerts as a live table model, filters, acknowledge, and one alert's
history and incident snapshot."""

from __future__ import annotations

import contextlib
import time

from PySide6.QtCore import QItemSelection, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import rest as m
from servermanager.common.alerts import OFFLINE, Alert
from servermanager.common.incidents import summary
from servermanager.desktop.context import AppContext
from servermanager.desktop.format import fmt_ago, fmt_time, format_metric
from servermanager.desktop.models.records import RecordsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import Session
from servermanager.desktop.snapshot import SnapshotView
from servermanager.desktop.widgets import record_table

Index = QModelIndex | QPersistentModelIndex

# (label, the `state` the core is asked for; None for every state)
FILTERS: tuple[tuple[str, str | None], ...] = (
    ("Firing", "firing"),
    ("Pending", "pending"),
    ("Resolved", "resolved"),
    ("All", None),
)
OPERATOR_HINT = "Acknowledging needs the operator role."


def metric_value(metric: str, v: float | None) -> str:
    """A value of this metric as the rest of the app shows it (by its unit)."""
    return format_metric(metric, v)


def value_text(alert: Alert) -> str:
    """'cpu_pct 97.0% > 90.0%': what the rule watches, the value that moved it, and its threshold."""
    if alert.metric == OFFLINE:
        return "offline"
    fmt = lambda v: metric_value(alert.metric, v)  # noqa: E731
    return f"{alert.metric} {fmt(alert.value)} {alert.op} {fmt(alert.threshold)}"


def since(alert: Alert, now: float | None = None) -> str:
    if alert.state == "resolved":
        return f"resolved {fmt_ago(alert.resolved_at, now)}"
    return fmt_ago(alert.fired_at if alert.state == "firing" else alert.started_at, now)


class AlertsModel(RecordsModel[Alert]):
    """Alerts, newest first; live events update a row in place, add it, or drop it from the filter."""

    columns = (
        ("Severity", lambda a: a.severity),
        ("State", lambda a: a.state + (" (silenced)" if a.silenced else "")),
        ("Node", lambda a: a.node),
        ("Rule", lambda a: a.rule),
        ("Value", value_text),
        ("Since", since),
        ("Acked by", lambda a: a.acked_by or ""),
    )

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state: str | None = "firing"

    def upsert(self, alert: Alert) -> None:
        """Apply one alert as it is now: the filter decides whether it belongs in the table."""
        row = next((i for i, a in enumerate(self.records) if a.id == alert.id), None)
        keep = self.state is None or alert.state == self.state
        if row is not None and keep:
            self.records[row] = alert
            self.dataChanged.emit(self.index(row, 0), self.index(row, self.columnCount() - 1))
        elif row is not None:
            self.beginRemoveRows(QModelIndex(), row, row)
            del self.records[row]
            self.endRemoveRows()
        elif keep:
            self.beginInsertRows(QModelIndex(), 0, 0)
            self.records.insert(0, alert)
            self.endInsertRows()


class AlertsPanel(QWidget):
    """The Alerts tab: every role reads alerts; operators and admins acknowledge them."""

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.can_ack = False
        self.loads = 0  # completed loads; tests wait on it
        self._generation = 0
        self.model = AlertsModel(self)

        self.filter = QComboBox()
        for label, state in FILTERS:
            self.filter.addItem(label, state)
        self.filter.currentIndexChanged.connect(lambda _i: self.refresh())
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.ack_button = QPushButton("Acknowledge")
        self.ack_button.setEnabled(False)
        self.ack_button.clicked.connect(self.acknowledge_selected)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Show"))
        bar.addWidget(self.filter)
        bar.addStretch(1)
        bar.addWidget(self.ack_button)
        bar.addWidget(self.refresh_button)

        self.status = QLabel()
        self.table = record_table(self.model)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setPlaceholderText("Select an alert to see its transitions and notifications.")
        # What the node was doing when the alert fired, as its agent measured it.
        self.snapshot = SnapshotView()
        self.detail_tabs = QTabWidget()
        self.detail_tabs.addTab(self.detail, "Story")
        self.detail_tabs.addTab(self.snapshot, "Snapshot")
        self.detail_loads = 0  # completed loads of an alert's story; tests wait on it
        self.table.setAccessibleName("Alerts")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(self.detail_tabs)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(bar)
        layout.addWidget(self.status)
        layout.addWidget(split, 1)

        ctx.live.alert.connect(self.model.upsert)
        ctx.live.alert.connect(self._alert_changed)
        # The count follows the rows, which live events add and drop between loads.
        for signal in (self.model.rowsInserted, self.model.rowsRemoved, self.model.modelReset):
            signal.connect(self._count_changed)
        ctx.rest.session_changed.connect(self._session_changed)
        self._session_changed(ctx.rest.session)

    # ------------------------------------------------------------ state

    def _count_changed(self, *_args: object) -> None:
        n = self.model.rowCount()
        state = self.filter.currentData()
        self.status.setText(f"{n} {state + ' ' if state else ''}alert{'s' if n != 1 else ''}")

    def selected(self) -> Alert | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.record(rows[0].row()) if rows else None

    def _session_changed(self, session: Session | None) -> None:
        self.can_ack = session is not None and session.can_edit
        self.filter.setEnabled(session is not None)
        self.refresh_button.setEnabled(session is not None)
        self.ack_button.setToolTip("" if self.can_ack or session is None else OPERATOR_HINT)
        self._update_ack()
        if session is None:
            self.model.set_records([])
            self.status.setText("Not signed in.")

    def _update_ack(self) -> None:
        alert = self.selected()
        self.ack_button.setEnabled(
            self.can_ack and alert is not None and alert.state != "resolved" and alert.acked_by is None
        )

    def _selection_changed(self, _selected: QItemSelection, _deselected: QItemSelection) -> None:
        self._update_ack()
        alert = self.selected()
        if alert is None:
            self.detail.clear()
            self.snapshot.show_snapshot(None, None)
            return
        self.ctx.aio.spawn(self._load_detail(alert.id), "alert-detail")

    def _alert_changed(self, alert: Alert) -> None:
        """The alert shown changed (a transition, an ack, its snapshot came in): reload its story."""
        current = self.selected()
        if current is not None and current.id == alert.id:
            self.ctx.aio.spawn(self._load_detail(alert.id), "alert-detail")

    # ------------------------------------------------------------ actions

    def refresh(self) -> None:
        if self.ctx.rest.session is None:
            return
        state = self.filter.currentData()
        self.model.state = state
        self._generation += 1
        self.status.setText("Loading…")
        self.ctx.aio.spawn(self._load(self._generation, state), "alerts")

    async def _load(self, generation: int, state: str | None) -> None:
        try:
            alerts = await self.ctx.rest.alerts(state=state)
        except CoreError as exc:
            if generation == self._generation:
                self.status.setText(f"Could not load the alerts: {exc.message}")
                self.loads += 1
            return
        if generation != self._generation:
            return  # a newer request replaced this one
        self.model.set_records(alerts)
        self._update_ack()
        self.loads += 1

    def acknowledge_selected(self) -> None:
        alert = self.selected()
        if alert is not None and self.can_ack:
            self.ack_button.setEnabled(False)
            self.ctx.aio.spawn(self._ack(alert.id), "alert-ack")

    async def _ack(self, alert_id: int) -> None:
        try:
            alert = await self.ctx.rest.ack_alert(alert_id)
        except CoreError as exc:
            self.status.setText(f"Could not acknowledge: {exc.message}")
            self._update_ack()
            return
        self.model.upsert(alert)
        self._update_ack()

    async def _load_detail(self, alert_id: int) -> None:
        try:
            detail = await self.ctx.rest.alert(alert_id)
        except CoreError as exc:
            self.detail.setPlainText(f"Could not load the alert: {exc.message}")
            return
        current = self.selected()
        if current is None or current.id != alert_id:
            return  # the selection moved on
        self.detail.setPlainText(describe(detail))
        self.snapshot.show_snapshot(detail.snapshot, detail.snapshot_note)
        self.detail_loads += 1

    def shutdown(self) -> None:
        with contextlib.suppress(RuntimeError, TypeError):
            self.ctx.rest.session_changed.disconnect(self._session_changed)
        with contextlib.suppress(RuntimeError, TypeError):
            self.ctx.live.alert.disconnect(self.model.upsert)
        with contextlib.suppress(RuntimeError, TypeError):
            self.ctx.live.alert.disconnect(self._alert_changed)


def describe(detail: m.AlertDetail, now: float | None = None) -> str:
    """An alert's story as plain text: what, where, what ran then, each transition, each notification."""
    a = detail.alert
    now = time.time() if now is None else now
    if detail.snapshot is not None:
        snapshot = f"Snapshot: {summary(detail.snapshot, a.metric)} (the Snapshot tab has it all)"
    else:
        snapshot = f"Snapshot: {detail.snapshot_note}" if detail.snapshot_note else ""
    lines = [
        f"{a.severity.upper()} {a.rule} on {a.node}: {value_text(a)}",
        f"started {fmt_time(a.started_at, seconds=True)}, peak {metric_value(a.metric, a.peak)}"
        + (f", acknowledged by {a.acked_by} {fmt_ago(a.acked_at, now)}" if a.acked_by else ""),
        *([snapshot] if snapshot else []),
        "",
        "Transitions:",
        *(
            f"  {fmt_time(t.ts, seconds=True)}  {t.state:<8} {t.severity:<8} "
            + (metric_value(a.metric, t.value) if t.value is not None else "")
            for t in detail.transitions
        ),
        "",
        "Notifications:" if detail.deliveries else "Notifications: none",
        *(
            f"  {d.channel}: {d.status} {d.state} after {d.attempts} attempt(s)"
            + (f" at {fmt_time(d.sent_at, seconds=True)}" if d.sent_at else "")
            + (f" ({d.last_error})" if d.last_error else "")
            for d in detail.deliveries
        ),
    ]
    return "\n".join(lines)
