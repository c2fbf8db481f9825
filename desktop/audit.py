"""The audit log: a table model of entries and the panel with user/action/node/time filters."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import rest as m
from servermanager.desktop.context import AppContext
from servermanager.desktop.format import fmt_time
from servermanager.desktop.models.records import RecordsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import Session

MAX_COLUMN = 360  # pixels: a column fits its widest cell up to this; the tooltip has the rest
RANGES = (("Last hour", 3600.0), ("Last 24 hours", 86400.0), ("Last 7 days", 7 * 86400.0), ("All", None))
VIEWER_HINT = "The audit log needs the operator role."

Index = QModelIndex | QPersistentModelIndex


def _detail(detail: dict[str, Any] | None) -> str:
    if not detail:
        return ""
    return json.dumps(detail, ensure_ascii=False, separators=(", ", ": "), default=str)


class AuditModel(RecordsModel[m.AuditEntry]):
    """Audit entries, newest first, as the core returns them."""

    columns = (
        ("Time", lambda e: fmt_time(e.ts, seconds=True)),
        ("User", lambda e: e.actor),
        ("Action", lambda e: e.action),
        ("Target", lambda e: e.target or ""),
        ("Result", lambda e: e.result),
        ("Detail", lambda e: _detail(e.detail)),
    )

    def set_entries(self, entries: list[m.AuditEntry]) -> None:
        self.set_records(entries)


class AuditPanel(QWidget):
    """The Audit log tab; operators and admins only."""

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.can_view = False
        self.loads = 0  # completed loads; tests wait on it
        self._generation = 0
        self.model = AuditModel(self)

        self.user = QLineEdit()
        self.user.setPlaceholderText("User")
        self.action = QLineEdit()
        self.action.setPlaceholderText("Action, e.g. command.run")
        self.node = QLineEdit()
        self.node.setPlaceholderText("Node id")
        self.range = QComboBox()
        for label, seconds in RANGES:
            self.range.addItem(label, seconds)
        self.range.setCurrentIndex(1)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        for edit in (self.user, self.action, self.node):
            edit.setClearButtonEnabled(True)
            edit.returnPressed.connect(self.refresh)
        self.range.currentIndexChanged.connect(lambda _i: self.refresh())
        bar = QHBoxLayout()
        bar.addWidget(self.user)
        bar.addWidget(self.action)
        bar.addWidget(self.node)
        bar.addWidget(self.range)
        bar.addWidget(self.refresh_button)
        self.status = QLabel()
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setWordWrap(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(bar)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)

        ctx.rest.session_changed.connect(self._session_changed)
        self._session_changed(ctx.rest.session)

    def _session_changed(self, session: Session | None) -> None:
        self.can_view = session is not None and session.can_edit
        for w in (self.user, self.action, self.node, self.range, self.refresh_button):
            w.setEnabled(self.can_view)
        if not self.can_view:
            self.model.set_entries([])
            self.status.setText(VIEWER_HINT if session is not None else "Not signed in.")

    def refresh(self) -> None:
        if not self.can_view:
            return
        node_text = self.node.text().strip()
        node: int | None = None
        if node_text:
            if not node_text.isdigit():
                self.status.setText("The node filter takes a node id (a number).")
                return
            node = int(node_text)
        seconds = self.range.currentData()
        start = time.time() - float(seconds) if seconds is not None else None
        self._generation += 1
        self.status.setText("Loading…")
        self.ctx.aio.spawn(
            self._load(self._generation, self.user.text().strip(), self.action.text().strip(), node, start),
            "audit-log",
        )

    async def _load(
        self, generation: int, user: str, action: str, node: int | None, start: float | None
    ) -> None:
        try:
            entries = await self.ctx.rest.audit(
                user=user or None, action=action or None, node=node, start=start
            )
        except CoreError as exc:
            if generation == self._generation:
                self.status.setText(f"Could not load the audit log: {exc.message}")
                self.loads += 1
            return
        if generation != self._generation:
            return  # a newer request replaced this one
        self.model.set_entries(entries)
        self.fit_columns()
        self.status.setText(f"{len(entries)} entries")
        self.loads += 1

    def fit_columns(self) -> None:
        """Every column but the last (Detail, which stretches) as wide as its widest cell, capped."""
        header = self.table.horizontalHeader()
        for col in range(self.model.columnCount() - 1):
            self.table.resizeColumnToContents(col)
            header.resizeSection(col, min(header.sectionSize(col), MAX_COLUMN))

    def shutdown(self) -> None:
        with contextlib.suppress(RuntimeError, TypeError):
            self.ctx.rest.session_changed.disconnect(self._session_changed)
