"""Notification channels: the list (secrets redacted by the core), the channel editor and "send test"."""

from __future__ import annotations

import contextlib

from PySide6.QtCore import QItemSelection, Signal
from PySide6.QtWidgets import (
    QCheckBox,
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
from servermanager.desktop.context import AppContext
from servermanager.desktop.models.records import RecordsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import Session
from servermanager.desktop.widgets import record_table

ADMIN_HINT = "Only admins add, change or test channels."
KINDS = (
    ("webhook", "Webhook (JSON POST)"),
    ("email", "Email (SMTP)"),
    ("apprise", "Apprise URL (Slack, Telegram, ntfy, …)"),
)
URL_HINTS = {
    "webhook": "https://hooks.example.com/servermanager",
    "email": "smtp://user:password@mail.example.com:587",
    "apprise": "tgram://bottoken/ChatID, ntfy://topic, slack://…",
}


class ChannelsModel(RecordsModel[m.Channel]):
    columns = (
        ("Name", lambda c: c.name),
        ("Kind", lambda c: c.kind),
        ("Where", lambda c: c.url if c.kind != "email" else f"{', '.join(c.to)} via {c.url}"),
        ("Quiet hours", lambda c: c.quiet_hours or ""),
        ("Enabled", lambda c: "yes" if c.enabled else "no"),
    )


class ChannelDialog(QDialog):
    """A dumb form for one channel; a secret left empty when editing keeps the stored one."""

    submitted = Signal(object)  # m.ChannelCreate

    def __init__(self, channel: m.Channel | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.channel_id = channel.id if channel is not None else None
        self.setWindowTitle(f"Edit channel {channel.name}" if channel else "New channel")
        self.name = QLineEdit(channel.name if channel else "")
        self.kind = QComboBox()
        for key, label in KINDS:
            self.kind.addItem(label, key)
        self.url = QLineEdit()
        self.secret = QLineEdit()
        self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        self.to = QLineEdit()
        self.to.setPlaceholderText("ops@example.com, oncall@example.com")
        self.from_addr = QLineEdit()
        self.starttls = QCheckBox("STARTTLS (port 587); smtps:// URLs use TLS from the start")
        self.starttls.setChecked(True)
        self.quiet_hours = QLineEdit()
        self.quiet_hours.setPlaceholderText("e.g. 22:00-07:00 (the core's local time); empty: none")
        self.enabled = QCheckBox("Enabled")
        self.enabled.setChecked(True)
        if channel is not None:
            self.kind.setCurrentIndex(self.kind.findData(channel.kind))
            self.kind.setEnabled(False)  # a channel keeps its kind; make a new one instead
            # The core shows the URL redacted; it is entered again only to change it.
            self.url.setPlaceholderText(f"unchanged: {channel.url}")
            self.secret.setPlaceholderText("unchanged" if channel.has_secret else "none")
            self.to.setText(", ".join(channel.to))
            self.from_addr.setText(channel.from_addr or "")
            self.starttls.setChecked(channel.starttls)
            self.quiet_hours.setText(channel.quiet_hours or "")
            self.enabled.setChecked(channel.enabled)
        self.kind.currentIndexChanged.connect(lambda _i: self._kind_changed())
        self.form = QFormLayout()
        self.form.addRow("Name", self.name)
        self.form.addRow("Kind", self.kind)
        self.form.addRow("URL", self.url)
        self.form.addRow("Signing secret", self.secret)
        self.form.addRow("To", self.to)
        self.form.addRow("From", self.from_addr)
        self.form.addRow("", self.starttls)
        self.form.addRow("Quiet hours", self.quiet_hours)
        self.form.addRow("", self.enabled)
        self._kind_changed()
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.error.hide()
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self._submit)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)

    def _kind_changed(self) -> None:
        kind = self.kind.currentData()
        if self.channel_id is None:
            self.url.setPlaceholderText(URL_HINTS[kind])
        for widget, shown in (
            (self.secret, kind == "webhook"),
            (self.to, kind == "email"),
            (self.from_addr, kind == "email"),
            (self.starttls, kind == "email"),
        ):
            self.form.setRowVisible(widget, shown)

    def body(self) -> m.ChannelCreate | m.ChannelPatch:
        """The form as a new channel, or as the changes to an existing one; ValueError says what is missing."""
        name = self.name.text().strip()
        if not name:
            raise ValueError("A channel needs a name.")
        kind = self.kind.currentData()
        url = self.url.text().strip()
        to = [a.strip() for a in self.to.text().split(",") if a.strip()]
        common = dict(
            name=name,
            to=to,
            from_addr=self.from_addr.text().strip() or None,
            starttls=self.starttls.isChecked(),
            quiet_hours=self.quiet_hours.text().strip() or None,
            enabled=self.enabled.isChecked(),
        )
        secret = self.secret.text() or None
        if self.channel_id is not None:
            return m.ChannelPatch(url=url or None, secret=secret, **common)  # type: ignore[arg-type]
        if not url:
            raise ValueError("A channel needs a URL.")
        if kind == "email" and not to:
            raise ValueError("An email channel needs at least one address to send to.")
        return m.ChannelCreate(kind=kind, url=url, secret=secret, **common)  # type: ignore[arg-type]

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


class ChannelsPanel(QWidget):
    """The Channels tab: admins add, edit, delete and test channels; others see them redacted."""

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.is_admin = False
        self.loads = 0  # completed loads; tests wait on it
        self.dialog: ChannelDialog | None = None
        self.model = ChannelsModel(self)
        self.new_button = QPushButton("New channel…")
        self.new_button.clicked.connect(lambda: self.open_editor(None))
        self.edit_button = QPushButton("Edit…")
        self.edit_button.clicked.connect(lambda: self.open_editor(self.selected()))
        self.test_button = QPushButton("Send test")
        self.test_button.clicked.connect(self.test_selected)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.delete_selected)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        bar = QHBoxLayout()
        for b in (self.new_button, self.edit_button, self.test_button, self.delete_button):
            bar.addWidget(b)
        bar.addStretch(1)
        bar.addWidget(self.refresh_button)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.table = record_table(self.model)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(bar)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        ctx.rest.session_changed.connect(self._session_changed)
        self._session_changed(ctx.rest.session)

    def selected(self) -> m.Channel | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.record(rows[0].row()) if rows else None

    def _session_changed(self, session: Session | None) -> None:
        self.is_admin = session is not None and session.role == "admin"
        self.new_button.setEnabled(self.is_admin)
        self.new_button.setToolTip("" if self.is_admin or session is None else ADMIN_HINT)
        self.refresh_button.setEnabled(session is not None)
        self._selection_changed()
        if session is None:
            self.model.set_records([])
            self.status.setText("Not signed in.")

    def _selection_changed(self, *_args: QItemSelection) -> None:
        has = self.is_admin and self.selected() is not None
        for b in (self.edit_button, self.test_button, self.delete_button):
            b.setEnabled(has)

    def refresh(self) -> None:
        if self.ctx.rest.session is not None:
            self.status.setText("Loading…")
            self.ctx.aio.spawn(self._load(), "channels")

    async def _load(self) -> None:
        try:
            channels = await self.ctx.rest.channels()
        except CoreError as exc:
            self.status.setText(f"Could not load the channels: {exc.message}")
            self.loads += 1
            return
        self.model.set_records(channels)
        self.status.setText(f"{len(channels)} channel(s)")
        self._selection_changed()
        self.loads += 1

    def open_editor(self, channel: m.Channel | None) -> ChannelDialog | None:
        if not self.is_admin:
            return None
        dialog = ChannelDialog(channel, self)
        dialog.submitted.connect(lambda body: self.ctx.aio.spawn(self._save(dialog, body), "channel-save"))
        self.dialog = dialog
        dialog.show()
        return dialog

    async def _save(self, dialog: ChannelDialog, body: m.ChannelCreate | m.ChannelPatch) -> None:
        try:
            if dialog.channel_id is None:
                assert isinstance(body, m.ChannelCreate)
                await self.ctx.rest.create_channel(body)
            else:
                assert isinstance(body, m.ChannelPatch)
                await self.ctx.rest.update_channel(dialog.channel_id, body)
        except CoreError as exc:
            dialog.show_error(exc.message)
            return
        dialog.accept()
        await self._load()

    def test_selected(self) -> None:
        channel = self.selected()
        if channel is not None and self.is_admin:
            self.status.setText(f"Sending a test to {channel.name}…")
            self.ctx.aio.spawn(self._test(channel), "channel-test")

    async def _test(self, channel: m.Channel) -> None:
        try:
            result = await self.ctx.rest.test_channel(channel.id)
        except CoreError as exc:
            self.status.setText(f"Could not test {channel.name}: {exc.message}")
            return
        verdict = "delivered" if result.ok else "failed"
        self.status.setText(f"Test to {channel.name} {verdict}: {result.message}")

    def delete_selected(self) -> None:
        channel = self.selected()
        if channel is not None and self.is_admin:
            self.ctx.aio.spawn(self._delete(channel), "channel-delete")

    async def _delete(self, channel: m.Channel) -> None:
        try:
            await self.ctx.rest.delete_channel(channel.id)
        except CoreError as exc:
            self.status.setText(f"Could not delete {channel.name}: {exc.message}")
            return
        await self._load()

    def shutdown(self) -> None:
        with contextlib.suppress(RuntimeError, TypeError):
            self.ctx.rest.session_changed.disconnect(self._session_changed)
        if self.dialog is not None:
            self.dialog.close()
