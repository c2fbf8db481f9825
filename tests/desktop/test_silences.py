"""The silence form: matchers, a preset or typed duration, and a required comment."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from servermanager.common import rest as m
from servermanager.desktop.silences import SilenceDialog, SilencesModel, matchers_text


def test_a_silence_from_the_form(qtbot: QtBot) -> None:
    dialog = SilenceDialog()
    qtbot.addWidget(dialog)
    dialog.node.setText("4")
    dialog.tag.setText("db")
    dialog.duration.setCurrentIndex(1)  # 4 hours
    dialog.comment.setText("disk swap")
    assert dialog.body() == m.SilenceCreate(node=4, tag="db", duration=4 * 3600.0, comment="disk swap")
    dialog.duration.setEditText("90m")
    assert dialog.body().duration == 5400.0


@pytest.mark.parametrize(
    ("fill", "message"),
    [
        ({}, "Say what to silence"),
        ({"rule": "x"}, "Rule: an id is a positive number"),
        ({"node": "2", "duration": "forever"}, "For: not a duration"),
        ({"node": "2", "comment": ""}, "a comment is required"),
    ],
)
def test_what_is_wrong_is_said(qtbot: QtBot, fill: dict[str, str], message: str) -> None:
    dialog = SilenceDialog()
    qtbot.addWidget(dialog)
    dialog.comment.setText("why")
    for field, text in fill.items():
        if field == "duration":
            dialog.duration.setEditText(text)
        else:
            getattr(dialog, field).setText(text)
    sent: list[object] = []
    dialog.submitted.connect(sent.append)
    dialog._submit()
    assert sent == [] and message in dialog.error.text()


def test_the_list_says_what_a_silence_matches(qtmodeltester: object) -> None:
    s = m.Silence(id=1, rule=3, node=None, group="web", tag=None, starts_at=0.0, ends_at=1.0,
                  comment="deploy", created_by="bob")  # fmt: skip
    assert matchers_text(s) == "rule 3, group web"
    model = SilencesModel()
    model.set_records([s])
    assert model.index(0, 1).data().endswith("(ended)")
    qtmodeltester.check(model)  # type: ignore[attr-defined]
