"""The rule editor's form and the rules list's text; against a real core once the API is there."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from servermanager.common import rest as m
from servermanager.desktop.rules import RuleDialog, RulesModel, condition_text, targets_text

CHANNELS = [
    m.Channel(id=3, name="ops", kind="webhook", url="https://hooks.example/***", has_secret=True, to=[],
              from_addr=None, starttls=True, quiet_hours=None, enabled=True, created_at=0.0),
]  # fmt: skip


def rule(**over: Any) -> m.Rule:
    values: dict[str, Any] = dict(
        id=7, name="disk full", metric="disk_pct", op=">", threshold=90.0, clear_threshold=85.0,
        critical_threshold=95.0, for_=300.0, keep_firing_for=0.0, severity="warning",
        targets=m.Targets(tag="db"), channels=[3], enabled=True, created_at=0.0, created_by="alice",
    )  # fmt: skip
    values.update(over)
    return m.Rule(**values)


def test_the_list_says_what_each_rule_watches(qtmodeltester: Any) -> None:
    assert condition_text(rule()) == "disk_pct > 90.0% (critical > 95.0%) for 5m 0s"
    assert condition_text(rule(metric="offline", for_=60.0)) == "offline for 1m 0s"
    assert targets_text(m.Targets(all=True)) == "every node"
    assert targets_text(m.Targets(nodes=[1, 2])) == "nodes 1, 2"
    model = RulesModel()
    model.set_records([rule(), rule(id=8, name="cpu", critical_threshold=None)])
    assert [model.index(r, 2).data() for r in range(2)] == ["warning, critical", "warning"]
    qtmodeltester.check(model)


def test_an_existing_rule_round_trips_through_the_form(qtbot: QtBot) -> None:
    dialog = RuleDialog(CHANNELS, rule())
    qtbot.addWidget(dialog)
    body = dialog.body()
    assert (body.name, body.metric, body.op, body.threshold) == ("disk full", "disk_pct", ">", 90.0)
    assert (body.clear_threshold, body.critical_threshold, body.for_) == (85.0, 95.0, 300.0)
    assert body.targets == m.Targets(tag="db") and body.channels == [3] and body.enabled


def test_a_new_rule_from_the_form(qtbot: QtBot) -> None:
    dialog = RuleDialog(CHANNELS)
    qtbot.addWidget(dialog)
    dialog.name.setText("cpu hot")
    dialog.metric_box.setCurrentIndex(dialog.metric_box.findData("cpu_pct"))
    dialog.threshold.setValue(90)
    dialog.for_.setText("2m")
    dialog.target_kind.setCurrentIndex(dialog.target_kind.findData("nodes"))
    dialog.target_value.setText("1, 4")
    dialog.channels.item(0).setCheckState(Qt.CheckState.Checked)
    with qtbot.waitSignal(dialog.submitted) as saved:
        dialog._submit()
    body: m.RuleCreate = saved.args[0]
    assert (body.metric, body.threshold, body.for_) == ("cpu_pct", 90.0, 120.0)
    assert body.targets == m.Targets(nodes=[1, 4]) and body.channels == [3]


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("name", "", "needs a name"),
        ("for_", "soon", "For at least: not a duration"),
        ("critical_threshold", "lots", "Critical past: not a number"),
        ("target_value", "a, b", "Node ids are numbers"),
    ],
)
def test_a_wrong_field_is_named_and_nothing_is_sent(
    qtbot: QtBot, field: str, text: str, message: str
) -> None:
    dialog = RuleDialog(CHANNELS, rule(targets=m.Targets(nodes=[1])))
    qtbot.addWidget(dialog)
    getattr(dialog, field).setText(text)
    sent: list[object] = []
    dialog.submitted.connect(sent.append)
    dialog._submit()
    assert sent == [] and message in dialog.error.text()


def test_the_preview_reads_as_sentences(qtbot: QtBot) -> None:
    dialog = RuleDialog([])
    qtbot.addWidget(dialog)
    dialog.show_preview(m.RulePreview(from_=0.0, to=86400.0, fired=0, alerts=[]))
    assert dialog.preview.toPlainText() == "Over the last 1d 0h this rule would not have fired."
    dialog.show_preview(
        m.RulePreview(
            from_=0.0, to=86400.0, fired=2,
            alerts=[m.PreviewAlert(1, "web-1", 10.0, 70.0, 700.0, 97.0),
                    m.PreviewAlert(2, "web-2", 80.0, 90.0, None, 99.0)],
        )
    )  # fmt: skip
    text = dialog.preview.toPlainText()
    assert text.startswith("Over the last 1d 0h this rule would have fired 2 time(s):")
    assert "web-2: from" in text and text.endswith("still firing")
