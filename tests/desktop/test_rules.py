"""The rule editor's form and the rules list's text; the editor saving through a real core, and its refusals."""

from __future__ import annotations

from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox
from pytestqt.qtbot import QtBot

from devkit.cores import RunningCore
from servermanager.common import rest as m
from servermanager.common.metrics import ContainerInfo, GpuInfo, Hardware
from servermanager.common.series import SeriesPoint
from servermanager.desktop.context import AppContext
from servermanager.desktop.rules import RuleDialog, RulesModel, RulesPanel, condition_text, targets_text
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, enrolled, sign_in, until
from tests.helpers.wait import wait_until

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
    # Per-item metrics by their own unit; a named series as a number.
    dev = rule(metric='dev:disk_pct{mount="/"}', critical_threshold=None, for_=0.0)
    assert condition_text(dev) == 'dev:disk_pct{mount="/"} > 90.0%'
    mem = rule(metric="container:mem_used", threshold=2**30, critical_threshold=None, for_=0.0)
    assert condition_text(mem) == "container:mem_used > 1.00 GiB"
    hot = rule(metric='gpu:temp_celsius{index="0"}', threshold=85, critical_threshold=None, for_=0.0)
    assert condition_text(hot) == 'gpu:temp_celsius{index="0"} > 85 °C'
    down = rule(
        metric='container:running{name="web"}', op="<", threshold=1, critical_threshold=None, for_=0.0
    )
    assert condition_text(down) == 'container:running{name="web"} < 1'
    assert condition_text(rule(metric="series:queue_depth", critical_threshold=None, for_=0.0)) == (
        "series:queue_depth > 90"
    )
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


def _check(dialog: RuleDialog, channel: str, on: bool = True) -> None:
    for i in range(dialog.channels.count()):
        item = dialog.channels.item(i)
        if item.text().startswith(f"{channel} ("):
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            return
    raise AssertionError(f"no channel {channel} in the editor")


def _new_rule(rules: RulesPanel, name: str) -> RuleDialog:
    """Open the editor from the Rules page's New button and fill in a rule for tag web."""
    assert rules.new_button is not None and rules.new_button.isEnabled()
    rules.new_button.click()
    dialog = rules.dialog
    assert dialog is not None and dialog.isVisible() and dialog.windowTitle() == "New alert rule"
    dialog.name.setText(name)
    dialog.metric_box.setCurrentIndex(dialog.metric_box.findData("cpu_pct"))
    dialog.op.setCurrentText(">")
    dialog.threshold.setValue(90)
    dialog.clear_threshold.setText("80")
    dialog.for_.setText("5m")
    dialog.target_kind.setCurrentIndex(dialog.target_kind.findData("tag"))
    dialog.target_value.setText("web")
    return dialog


def _save_refused(dialog: RuleDialog, cores: Cores, run: Run, message: str) -> None:
    """Save; the core answers 400 and its message shows under the form, which stays open."""
    run(until(lambda: dialog.fleet_listed, "the editor's picker filled (its own requests)"))
    asked = len(cores.requests)
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    run(until(lambda: dialog.error.isVisible(), "the core's answer"))
    assert cores.requests[asked:] == ["/api/v1/alert-rules"]  # it did go to the core
    assert dialog.error.text() == message
    assert dialog.isVisible() and dialog.result() != QDialog.DialogCode.Accepted


def _rules_on(core: RunningCore, run: Run, token: str) -> list[dict[str, Any]]:
    status, body = run(core.request("GET", "/api/v1/alert-rules", token))
    assert status == 200, body
    return list(body["rules"])


def test_the_rule_editor_saves_through_a_real_core_and_shows_its_refusals(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    core = cores.c
    run(sign_in(ctx, core))
    token = run(core.admin_token())
    channels = {}
    for name in ("ops", "spare"):
        hook = {"name": name, "kind": "webhook", "url": f"http://127.0.0.1:9/{name}"}
        status, channel = run(core.request("POST", "/api/v1/channels", token, json=hook))
        assert status == 201, channel
        channels[name] = channel["id"]
    view = window.open_alerting("rules")
    assert view is not None
    rules = view.rules
    run(until(lambda: rules.loads >= 1, "the rules and the channels they may notify"))
    assert [c.name for c in rules.channels] == ["ops", "spare"]

    dialog = _new_rule(rules, "cpu hot")
    _check(dialog, "ops")
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    run(until(lambda: not dialog.isVisible(), "the saved rule's editor to close"))
    assert dialog.result() == QDialog.DialogCode.Accepted and not dialog.error.isVisible()
    run(until(lambda: rules.model.rowCount() == 1, "the rule listed"))
    (saved,) = _rules_on(core, run, token)
    assert (saved["name"], saved["metric"], saved["op"]) == ("cpu hot", "cpu_pct", ">")
    assert (saved["threshold"], saved["clear_threshold"], saved["for"]) == (90.0, 80.0, 300.0)
    assert saved["targets"] == {"tag": "web"} and saved["channels"] == [channels["ops"]]
    assert saved["created_by"] == "admin" and saved["enabled"] is True

    # The editor's channel list is from when the page loaded; one deleted since is the core's to refuse.
    dialog = _new_rule(rules, "cpu hotter")
    status, _ = run(core.request("DELETE", f"/api/v1/channels/{channels['spare']}", token))
    assert status == 204
    _check(dialog, "spare")
    _save_refused(dialog, cores, run, f"Unknown channel(s): [{channels['spare']}].")

    # Bounds the form cannot know: the core's words, as precise as it gives them.
    _check(dialog, "spare", on=False)
    dialog.for_.setText("31d")
    _save_refused(dialog, cores, run, "For must be from 0 to 30d, got 2678400.0.")

    # A negative duration is not a duration: the form names the field and asks nothing.
    asked = len(cores.requests)
    dialog.for_.setText("-5m")
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    assert dialog.error.text().startswith("For at least: not a duration: '-5m'")
    assert cores.requests[asked:] == [] and dialog.isVisible()

    dialog.for_.setText("10m")
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    run(until(lambda: not dialog.isVisible(), "the corrected rule's editor to close"))
    run(until(lambda: rules.model.rowCount() == 2, "both rules listed"))
    assert [(r["name"], r["for"], r["channels"]) for r in _rules_on(core, run, token)] == [
        ("cpu hot", 300.0, [channels["ops"]]),
        ("cpu hotter", 600.0, []),
    ]


def test_the_picker_offers_the_fleets_series_and_a_series_rule_saves_and_fires(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    core = cores.c
    extra: dict[str, Any] = dict(
        series=[SeriesPoint("check_up", 1.0, {"check": "web"})],
        containers=[ContainerInfo(name="app", state="running")],
        hardware=Hardware(gpus=[GpuInfo(index=0, name="T4", util_pct=5.0)]),
    )
    agent = run(enrolled(core, "web-1", **extra))
    run(sign_in(ctx, core))
    token = run(core.admin_token())
    view = window.open_alerting("rules")
    assert view is not None
    rules = view.rules
    run(until(lambda: rules.loads >= 1, "the rules page"))
    assert rules.new_button is not None
    rules.new_button.click()
    dialog = rules.dialog
    assert dialog is not None
    run(until(lambda: dialog.fleet_listed, "the fleet's metrics in the picker"))
    box = dialog.metric_box
    offered = {box.itemData(i) for i in range(box.count())}
    for metric in (
        "cpu_pct",
        "offline",
        "dev:disk_pct",  # every mount
        'series:check_up{check="web"}',
        'dev:disk_pct{mount="/"}',
        'dev:net_rx_bps{iface="eth0"}',
        'container:running{name="app"}',
        'gpu:util_pct{index="0"}',
    ):
        assert metric in offered, metric
    assert (
        box.itemText(box.findData('series:check_up{check="web"}'))
        == 'series:check_up{check="web"}  (on web-1)'
    )
    assert box.itemText(box.findData('dev:disk_pct{mount="/"}')) == 'dev:disk_pct{mount="/"}  (%, on web-1)'

    # Picked from the list: the selector line follows, and that is what is saved.
    dialog.name.setText("web check down")
    box.setCurrentIndex(box.findData('series:check_up{check="web"}'))
    assert dialog.selector.text() == 'series:check_up{check="web"}'
    dialog.op.setCurrentText("<")
    dialog.threshold.setValue(1)
    dialog.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    run(until(lambda: not dialog.isVisible(), "the saved rule's editor to close"))
    (saved,) = _rules_on(core, run, token)
    assert (saved["metric"], saved["op"], saved["threshold"]) == ('series:check_up{check="web"}', "<", 1.0)

    # Typed: a label matcher the list does not have; a wrong name gets the core's precise refusal.
    rules.new_button.click()
    typed = rules.dialog
    assert typed is not None and typed is not dialog
    typed.name.setText("any disk")
    typed.selector.setText("dev:disk_full")
    _save_refused(
        typed,
        cores,
        run,
        "Metric: unknown metric 'dev:disk_full'; dev: are: dev:disk_used_bytes, dev:disk_pct, "
        "dev:disk_read_bps, dev:disk_write_bps, dev:disk_read_iops, dev:disk_write_iops, "
        "dev:net_rx_bps, dev:net_tx_bps, dev:temp_celsius.",
    )
    typed.selector.setText('dev:disk_pct{ mount = "/" }')
    typed.threshold.setValue(90)
    typed.buttons.button(QDialogButtonBox.StandardButton.Save).click()
    run(until(lambda: not typed.isVisible(), "the typed rule's editor to close"))
    assert [r["metric"] for r in _rules_on(core, run, token)] == [
        'series:check_up{check="web"}',
        'dev:disk_pct{mount="/"}',
    ]

    # The saved series rule is live: the check going down fires it.
    run(agent.send_samples(agent.make(1, series=[SeriesPoint("check_up", 0.0, {"check": "web"})])))

    async def firing() -> list[Any]:
        status, body = await core.request("GET", "/api/v1/alerts?state=firing", token)
        assert status == 200, body
        return list(body["alerts"])

    alerts = run(wait_until(firing, lambda a: len(a) == 1, what="the series rule firing"))
    assert alerts[0]["rule"] == "web check down" and alerts[0]["value"] == 0


def test_an_edited_series_rule_shows_its_selector(qtbot: QtBot) -> None:
    dialog = RuleDialog([], rule(metric='dev:temp_celsius{sensor="acpitz"}', critical_threshold=None))
    qtbot.addWidget(dialog)
    assert (
        dialog.selector.text() == 'dev:temp_celsius{sensor="acpitz"}'
        and dialog.metric_box.currentIndex() == -1
    )
    dialog.add_metrics([('dev:temp_celsius{sensor="acpitz"}', "acpitz (on db-1)")])
    assert dialog.metric_box.currentData() == 'dev:temp_celsius{sensor="acpitz"}'
    assert dialog.body().metric == 'dev:temp_celsius{sensor="acpitz"}'
    dialog.selector.setText("")
    with pytest.raises(ValueError, match="Pick a metric, or type a selector"):
        dialog.body()
    dialog.selector.setText("offline")
    assert not dialog.threshold.isEnabled()
