"""The channel editor's form: what it sends for a new channel and for changes, and what it refuses."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from servermanager.common import rest as m
from servermanager.desktop.channels import ChannelDialog, ChannelsModel

HOOK = m.Channel(
    id=3, name="ops", kind="webhook", url="https://hooks.example/***", has_secret=True, to=[],
    from_addr=None, starttls=True, quiet_hours="22:00-07:00", enabled=True, created_at=0.0,
)  # fmt: skip
MAIL = m.Channel(
    id=4, name="mail", kind="email", url="smtp://ops:***@mail.example:587", has_secret=False,
    to=["a@example.com", "b@example.com"], from_addr="sm@example.com", starttls=True,
    quiet_hours=None, enabled=False, created_at=0.0,
)  # fmt: skip


def test_the_list_shows_where_each_channel_goes(qtmodeltester: object) -> None:
    model = ChannelsModel()
    model.set_records([HOOK, MAIL])
    assert model.index(0, 2).data() == "https://hooks.example/***"
    assert model.index(1, 2).data() == "a@example.com, b@example.com via smtp://ops:***@mail.example:587"
    assert [model.index(r, 4).data() for r in range(2)] == ["yes", "no"]
    qtmodeltester.check(model)  # type: ignore[attr-defined]


def test_a_new_webhook_and_a_new_mailbox(qtbot: QtBot) -> None:
    dialog = ChannelDialog()
    qtbot.addWidget(dialog)
    dialog.name.setText("ops")
    dialog.url.setText("https://hooks.example/sm")
    dialog.secret.setText("s3cret")
    body = dialog.body()
    assert isinstance(body, m.ChannelCreate)
    assert (body.kind, body.url, body.secret, body.to) == (
        "webhook",
        "https://hooks.example/sm",
        "s3cret",
        [],
    )
    dialog.kind.setCurrentIndex(dialog.kind.findData("email"))
    dialog.url.setText("smtp://mail.example:25")
    with pytest.raises(ValueError, match="at least one address"):
        dialog.body()
    dialog.to.setText("a@example.com,  b@example.com")
    body = dialog.body()
    assert isinstance(body, m.ChannelCreate) and body.to == ["a@example.com", "b@example.com"]


def test_editing_keeps_the_secret_and_url_unless_retyped(qtbot: QtBot) -> None:
    dialog = ChannelDialog(HOOK)
    qtbot.addWidget(dialog)
    assert not dialog.kind.isEnabled() and dialog.url.text() == ""  # redacted: never shown back
    dialog.quiet_hours.setText("")
    body = dialog.body()
    assert isinstance(body, m.ChannelPatch)
    assert body.url is None and body.secret is None and body.name == "ops" and body.quiet_hours is None
    sent: list[object] = []
    dialog.submitted.connect(sent.append)
    dialog.name.setText("  ")
    dialog._submit()
    assert sent == [] and "needs a name" in dialog.error.text()
