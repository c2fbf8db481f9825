"""Notification channels: the list (secrets redacted by the core), the channel editor and "send test"."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLineEdit,
    QWidget,
)

from servermanager.common import rest as m
from servermanager.desktop.context import AppContext
from servermanager.desktop.listpanel import ListPanel
from servermanager.desktop.models.records import RecordsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import Session
from servermanager.desktop.widgets import FormDialog

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


class ChannelDialog(FormDialog):
    """A dumb form for one channel (emits m.ChannelCreate, or m.ChannelPatch when editing); a
    secret left empty when editing keeps the stored one."""

    def __init__(self, channel: m.Channel | None = None, parent: QWidget | None = None) -> None:
        super().__init__(f"Edit channel {channel.name}" if channel else "New channel", parent)
        self.channel_id = channel.id if channel is not None else None
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
        self.lay_out(self.form)

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


class ChannelsPanel(ListPanel[m.Channel]):
    """The Channels tab: admins add, edit, delete and test channels; others see them redacted."""

    noun = "channel"
    denied_hint = ADMIN_HINT

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, ChannelsModel(), parent)
        self.model.setParent(self)
        self.dialog: ChannelDialog | None = None
        self.add_button("New channel…", lambda: self.open_editor(None), needs_selection=False)
        self.edit_button = self.add_button("Edit…", lambda: self.open_editor(self.selected()))
        self.test_button = self.add_button("Send test", self.test_selected)
        self.delete_button = self.add_button("Delete", self.delete_selected)
        self.finish_bar()

    def may_edit(self, session: Session) -> bool:
        return session.role == "admin"

    async def fetch(self) -> list[m.Channel]:
        return await self.ctx.rest.channels()

    def open_editor(self, channel: m.Channel | None) -> ChannelDialog | None:
        if not self.can_edit:
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
        if channel is not None and self.can_edit:
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
        if channel is not None and self.can_edit:
            self.act(f"delete {channel.name}", lambda: self.ctx.rest.delete_channel(channel.id))

    def shutdown(self) -> None:
        super().shutdown()
        if self.dialog is not None:
            self.dialog.close()
