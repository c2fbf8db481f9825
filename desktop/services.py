"""A node's services: a table model, and the panel with refresh, filter and start/stop/… actions."""

from __future__ import annotations

import contextlib

from PySide6.QtCore import (
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import protocol as p
from servermanager.desktop.context import AppContext
from servermanager.desktop.models.records import RecordsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import Session

ACTIONS = ("start", "stop", "restart", "enable", "disable")
VIEWER_HINT = "Managing services needs the operator role."

Index = QModelIndex | QPersistentModelIndex


class ServicesModel(RecordsModel[p.ServiceInfo]):
    """Rows of p.ServiceInfo: name, active, enabled, description."""

    columns = (
        ("Name", lambda s: s.name),
        ("Active", lambda s: s.active),
        ("Enabled", lambda s: s.enabled or ""),
        ("Description", lambda s: s.description),
    )

    def set_services(self, services: list[p.ServiceInfo]) -> None:
        self.set_records(sorted(services, key=lambda s: s.name))

    def service(self, row: int) -> p.ServiceInfo | None:
        return self.record(row)


class ServicesPanel(QWidget):
    """The Services tab of a node view. Loads on first show or Refresh; actions ask first."""

    message = Signal(str)

    def __init__(self, ctx: AppContext, node_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.node_id = node_id
        self.can_edit = False
        self.loads = 0  # completed list loads; tests wait on it
        self.busy = False
        self.model = ServicesModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.proxy.setFilterKeyColumn(-1)

        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter services…")
        self.filter.setAccessibleName("Filter services")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.buttons: dict[str, QPushButton] = {}
        bar = QHBoxLayout()
        bar.addWidget(self.filter, 1)
        bar.addWidget(self.refresh_button)
        for action in ACTIONS:
            button = QPushButton(action.capitalize())
            button.clicked.connect(lambda _checked=False, a=action: self.ask(a))
            self.buttons[action] = button
            bar.addWidget(button)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.table = QTableView()
        self.table.setAccessibleName("Services")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)

        ctx.rest.session_changed.connect(self._session_changed)
        self._session_changed(ctx.rest.session)

    def _session_changed(self, session: Session | None) -> None:
        self.can_edit = session is not None and session.can_edit
        if not self.can_edit:
            self.status.setText(VIEWER_HINT)
        self._update_buttons()

    def _update_buttons(self) -> None:
        selected = self.selected() is not None
        self.refresh_button.setEnabled(self.can_edit and not self.busy)
        for button in self.buttons.values():
            button.setEnabled(self.can_edit and selected and not self.busy)
            button.setToolTip("" if self.can_edit else VIEWER_HINT)

    def selected(self) -> p.ServiceInfo | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.model.service(self.proxy.mapToSource(rows[0]).row())

    def select(self, name: str) -> bool:
        for row in range(self.proxy.rowCount()):
            if self.proxy.index(row, 0).data() == name:
                self.table.selectRow(row)
                return True
        return False

    def refresh(self) -> None:
        if not self.can_edit or self.busy:
            return
        self.busy = True
        self._update_buttons()
        self.status.setText("Loading services…")
        self.ctx.aio.spawn(self._load(), "list-services")

    async def _load(self) -> None:
        try:
            services = await self.ctx.rest.services(self.node_id)
        except CoreError as exc:
            self.status.setText(f"Could not list services: {exc.message}")
        else:
            selected = self.selected()
            self.model.set_services(services)
            if selected is not None:
                self.select(selected.name)
            self.status.setText(f"{len(services)} services")
        finally:
            self.busy = False
            self.loads += 1
            self._update_buttons()

    def ask(self, action: str) -> QMessageBox | None:
        """Confirm an action on the selected service (non-blocking), then run it."""
        service = self.selected()
        if service is None or not self.can_edit or self.busy:
            return None
        box = QMessageBox(
            QMessageBox.Icon.Question,
            f"{action.capitalize()} service",
            f"{action.capitalize()} {service.name}?",
            QMessageBox.StandardButton.Cancel,
            self,
        )
        ok = box.addButton(action.capitalize(), QMessageBox.ButtonRole.AcceptRole)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.buttonClicked.connect(lambda button: self._start(action, service.name) if button is ok else None)
        box.open()
        return box

    def _start(self, action: str, name: str) -> None:
        self.busy = True
        self._update_buttons()
        self.status.setText(f"{action.capitalize()} {name}…")
        self.ctx.aio.spawn(self._act(action, name), f"service-{action}")

    async def _act(self, action: str, name: str) -> None:
        try:
            info = await self.ctx.rest.service_action(self.node_id, name, action)
        except CoreError as exc:
            text = f"{action.capitalize()} {name} failed: {exc.message}"
        else:
            run = info.runs[0] if info.runs else None
            if run is not None and run.status == "ok":
                text = f"{action.capitalize()} {name}: done."
            else:
                why = (run.message or run.stderr.strip() or run.status) if run else info.status
                text = f"{action.capitalize()} {name} failed: {why}"
        self.busy = False
        self.status.setText(text)
        self.message.emit(text)
        self._update_buttons()

    def shutdown(self) -> None:
        with contextlib.suppress(RuntimeError, TypeError):
            self.ctx.rest.session_changed.disconnect(self._session_changed)
