"""Silences: alerts matching them change state but notify nobody until they end; list, add, expire."""

from __future__ import annotations

import contextlib
import time

from PySide6.QtCore import QItemSelection, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import rest as m
from servermanager.common.settings import parse_duration
from servermanager.desktop.context import AppContext
from servermanager.desktop.format import fmt_time
from servermanager.desktop.models.records import RecordsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import Session
from servermanager.desktop.widgets import record_table

OPERATOR_HINT = "Adding and expiring silences needs the operator role."
DURATIONS = (("1 hour", "1h"), ("4 hours", "4h"), ("1 day", "1d"), ("1 week", "7d"))


def matchers_text(s: m.Silence) -> str:
    parts = [
        f"rule {s.rule}" if s.rule is not None else "",
        f"node {s.node}" if s.node is not None else "",
        f"group {s.group}" if s.group is not None else "",
        f"tag {s.tag}" if s.tag is not None else "",
    ]
    return ", ".join(p for p in parts if p)


class SilencesModel(RecordsModel[m.Silence]):
    columns = (
        ("Matches", matchers_text),
        ("Until", lambda s: fmt_time(s.ends_at) + ("" if s.ends_at > time.time() else " (ended)")),
        ("Comment", lambda s: s.comment),
        ("By", lambda s: s.created_by),
    )


class SilenceDialog(QDialog):
    """A dumb form for a new silence: at least one matcher, how long, and why."""

    submitted = Signal(object)  # m.SilenceCreate

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New silence")
        self.rule = QLineEdit()
        self.rule.setPlaceholderText("rule id")
        self.node = QLineEdit()
        self.node.setPlaceholderText("node id")
        self.group = QLineEdit()
        self.tag = QLineEdit()
        self.duration = QComboBox()
        self.duration.setEditable(True)
        for label, value in DURATIONS:
            self.duration.addItem(label, value)
        self.comment = QLineEdit()
        self.comment.setPlaceholderText("why, e.g. planned maintenance of the database")
        form = QFormLayout()
        form.addRow("Rule", self.rule)
        form.addRow("Node", self.node)
        form.addRow("Group", self.group)
        form.addRow("Tag", self.tag)
        form.addRow("For", self.duration)
        form.addRow("Comment", self.comment)
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.hide()
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self._submit)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)

    def body(self) -> m.SilenceCreate:
        def ident(edit: QLineEdit, what: str) -> int | None:
            text = edit.text().strip()
            if not text:
                return None
            if not text.isdigit() or int(text) < 1:
                raise ValueError(f"{what}: an id is a positive number, not {text!r}")
            return int(text)

        rule, node = ident(self.rule, "Rule"), ident(self.node, "Node")
        group, tag = self.group.text().strip() or None, self.tag.text().strip() or None
        if rule is None and node is None and group is None and tag is None:
            raise ValueError("Say what to silence: a rule, a node, a group or a tag.")
        raw = self.duration.currentText().strip()
        i = self.duration.findText(raw)
        text = str(self.duration.itemData(i)) if i >= 0 else raw  # a preset, or typed: "90m", "2d"
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise ValueError(f"For: {exc}") from None
        if seconds <= 0:
            raise ValueError("For: a silence must last a while.")
        comment = self.comment.text().strip()
        if not comment:
            raise ValueError("Say why, so others know (a comment is required).")
        return m.SilenceCreate(rule=rule, node=node, group=group, tag=tag, duration=seconds, comment=comment)

    def _submit(self) -> None:
        try:
            body = self.body()
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.show_error("")
        self.submitted.emit(body)

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))


class SilencesPanel(QWidget):
    """The Silences tab: every role sees them; operators and admins add and expire them."""

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.can_edit = False
        self.loads = 0  # completed loads; tests wait on it
        self.dialog: SilenceDialog | None = None
        self.model = SilencesModel(self)
        self.new_button = QPushButton("New silence…")
        self.new_button.clicked.connect(self.open_editor)
        self.expire_button = QPushButton("Expire now")
        self.expire_button.clicked.connect(self.expire_selected)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        bar = QHBoxLayout()
        bar.addWidget(self.new_button)
        bar.addWidget(self.expire_button)
        bar.addStretch(1)
        bar.addWidget(self.refresh_button)
        self.status = QLabel()
        self.table = record_table(self.model)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(bar)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        ctx.rest.session_changed.connect(self._session_changed)
        self._session_changed(ctx.rest.session)

    def selected(self) -> m.Silence | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.record(rows[0].row()) if rows else None

    def _session_changed(self, session: Session | None) -> None:
        self.can_edit = session is not None and session.can_edit
        self.new_button.setEnabled(self.can_edit)
        self.new_button.setToolTip("" if self.can_edit or session is None else OPERATOR_HINT)
        self.refresh_button.setEnabled(session is not None)
        self._selection_changed()
        if session is None:
            self.model.set_records([])
            self.status.setText("Not signed in.")

    def _selection_changed(self, *_args: QItemSelection) -> None:
        s = self.selected()
        self.expire_button.setEnabled(self.can_edit and s is not None and s.ends_at > time.time())

    def refresh(self) -> None:
        if self.ctx.rest.session is not None:
            self.status.setText("Loading…")
            self.ctx.aio.spawn(self._load(), "silences")

    async def _load(self) -> None:
        try:
            silences = await self.ctx.rest.silences()
        except CoreError as exc:
            self.status.setText(f"Could not load the silences: {exc.message}")
            self.loads += 1
            return
        self.model.set_records(silences)
        active = sum(1 for s in silences if s.ends_at > time.time())
        self.status.setText(f"{active} active silence(s)")
        self._selection_changed()
        self.loads += 1

    def open_editor(self) -> SilenceDialog | None:
        if not self.can_edit:
            return None
        dialog = SilenceDialog(self)
        dialog.submitted.connect(lambda body: self.ctx.aio.spawn(self._save(dialog, body), "silence-save"))
        self.dialog = dialog
        dialog.show()
        return dialog

    async def _save(self, dialog: SilenceDialog, body: m.SilenceCreate) -> None:
        try:
            await self.ctx.rest.create_silence(body)
        except CoreError as exc:
            dialog.show_error(exc.message)
            return
        dialog.accept()
        await self._load()

    def expire_selected(self) -> None:
        silence = self.selected()
        if silence is not None and self.can_edit:
            self.ctx.aio.spawn(self._expire(silence.id), "silence-expire")

    async def _expire(self, silence_id: int) -> None:
        try:
            await self.ctx.rest.delete_silence(silence_id)
        except CoreError as exc:
            self.status.setText(f"Could not expire the silence: {exc.message}")
            return
        await self._load()

    def shutdown(self) -> None:
        with contextlib.suppress(RuntimeError, TypeError):
            self.ctx.rest.session_changed.disconnect(self._session_changed)
        if self.dialog is not None:
            self.dialog.close()
