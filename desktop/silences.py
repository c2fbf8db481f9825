"""Silences: alerts matching them change state but notify nobody until they end; list, add, expire."""

from __future__ import annotations

import time

from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLineEdit,
    QWidget,
)

from servermanager.common import rest as m
from servermanager.common.settings import parse_duration
from servermanager.desktop.context import AppContext
from servermanager.desktop.format import fmt_time
from servermanager.desktop.listpanel import ListPanel
from servermanager.desktop.models.records import RecordsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.widgets import FormDialog

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


class SilenceDialog(FormDialog):
    """A dumb form for a new silence: at least one matcher, how long, and why (emits m.SilenceCreate)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("New silence", parent)
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
        self.lay_out(form)

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


class SilencesPanel(ListPanel[m.Silence]):
    """The Silences tab: every role sees them; operators and admins add and expire them."""

    noun = "silence"
    denied_hint = OPERATOR_HINT

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, SilencesModel(), parent)
        self.model.setParent(self)
        self.dialog: SilenceDialog | None = None
        self.add_button("New silence…", self.open_editor, needs_selection=False)
        self.expire_button = self.add_button("Expire now", self.expire_selected)
        self.finish_bar()

    async def fetch(self) -> list[m.Silence]:
        return await self.ctx.rest.silences()

    def selection_allows(self, record: m.Silence) -> bool:
        return record.ends_at > time.time()  # an ended silence has nothing left to expire

    def summary(self, records: list[m.Silence]) -> str:
        active = sum(1 for s in records if s.ends_at > time.time())
        return f"{active} active silence{'s' if active != 1 else ''}"

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
            self.act("expire the silence", lambda: self.ctx.rest.delete_silence(silence.id))

    def shutdown(self) -> None:
        super().shutdown()
        if self.dialog is not None:
            self.dialog.close()
