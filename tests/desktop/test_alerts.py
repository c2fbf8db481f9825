"""The Alerts tab: its model follows live events and its filter; against a real core, a rule fires and is acked."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QItemSelectionModel

from devkit.cores import RunningCore
from servermanager.common import rest as m
from servermanager.common.alerts import Alert, AlertTransition, Delivery
from servermanager.desktop.alerts import AlertsModel, describe, since, value_text
from servermanager.desktop.context import AppContext
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Run, enrolled, sign_in, until
from tests.helpers.wait import wait_until

NOW = 1_700_000_000.0


def alert(id: int = 1, state: str = "firing", **over: Any) -> Alert:
    values: dict[str, Any] = dict(
        id=id, rule_id=1, rule="cpu high", node_id=1, node="web-1", metric="cpu_pct", op=">",
        threshold=90.0, state=state, severity="warning", value=97.0, peak=98.5,
        started_at=NOW - 120, fired_at=NOW - 60,
    )  # fmt: skip
    values.update(over)
    return Alert(**values)


def test_the_model_follows_live_alerts_within_its_filter(qtmodeltester: Any) -> None:
    model = AlertsModel()
    model.state = "firing"
    model.set_records([alert(1)])
    model.upsert(alert(2))  # a new firing alert comes in on top
    assert [a.id for a in model.records] == [2, 1]
    model.upsert(alert(1, acked_by="alice"))  # updated in place
    assert model.index(1, 6).data() == "alice"
    model.upsert(alert(2, state="resolved", resolved_at=NOW))  # leaves the "firing" view
    assert [a.id for a in model.records] == [1]
    model.upsert(alert(3, state="pending", fired_at=None))  # not firing: not shown
    assert [a.id for a in model.records] == [1]
    model.state = None  # "All" shows every state
    model.upsert(alert(3, state="pending", fired_at=None))
    assert [a.id for a in model.records] == [3, 1]
    qtmodeltester.check(model)


def test_values_read_in_their_metrics_unit() -> None:
    assert value_text(alert()) == "cpu_pct 97.0% > 90.0%"
    assert value_text(alert(metric="net_rx_bps", value=3 * 2**20, threshold=2**20)) == (
        "net_rx_bps 3.00 MiB/s > 1.00 MiB/s"
    )
    assert value_text(alert(metric="offline", value=None)) == "offline"
    assert since(alert(), now=NOW) == "1m 0s ago"
    assert since(alert(state="resolved", resolved_at=NOW - 3600), now=NOW) == "resolved 1h 0m ago"


def test_an_alerts_story_lists_transitions_and_notifications() -> None:
    detail = m.AlertDetail(
        alert=alert(acked_by="alice", acked_at=NOW - 30),
        transitions=[
            AlertTransition(ts=NOW - 120, state="pending", severity="warning", value=95.0),
            AlertTransition(ts=NOW - 60, state="firing", severity="warning", value=97.0),
        ],
        deliveries=[
            Delivery(id=1, channel_id=1, channel="ops-hook", status="firing", state="retrying",
                     attempts=2, created_at=NOW - 60, last_error="connection refused"),
        ],
    )  # fmt: skip
    text = describe(detail, now=NOW)
    assert text.startswith("WARNING cpu high on web-1: cpu_pct 97.0% > 90.0%")
    assert "acknowledged by alice" in text
    assert "peak 98.5%" in text
    assert "pending  warning  95.0%" in text and "firing   warning  97.0%" in text
    assert "ops-hook: firing retrying after 2 attempt(s) (connection refused)" in text


def test_a_rule_fires_live_into_the_alerts_tab_and_is_acknowledged_there(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, qtmodeltester: Any
) -> None:
    web = run(enrolled(core, "web-1", cpu=10.0))
    run(sign_in(ctx, core))
    window.show()
    token = run(core.admin_token())
    rule = {"name": "cpu high", "metric": "cpu_pct", "op": ">", "threshold": 90, "targets": {"all": True}}
    status, body = run(core.request("POST", "/api/v1/alert-rules", token, json=rule))
    assert status == 201, body

    view = window.open_alerting()
    assert view is not None
    panel = view.alerts
    run(until(lambda: panel.loads >= 1, "the alert list"))
    assert panel.model.rowCount() == 0

    run(web.send_samples(web.make(1, cpu=97.0, ts=time.time())))
    run(until(lambda: panel.model.rowCount() == 1, "the firing alert, pushed live"))
    row = panel.model.record(0)
    assert row is not None and (row.node, row.rule, row.state) == ("web-1", "cpu high", "firing")
    assert panel.status.text() == "1 firing alert"  # counted as pushed, not as last loaded
    qtmodeltester.check(panel.model)

    panel.table.selectionModel().select(
        panel.model.index(0, 0),
        QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
    )
    run(until(lambda: "Transitions:" in panel.detail.toPlainText(), "the alert's story"))
    assert panel.ack_button.isEnabled()
    panel.ack_button.click()
    run(until(lambda: (r := panel.model.record(0)) is not None and r.acked_by == "admin", "the ack"))
    assert not panel.ack_button.isEnabled()  # once is enough

    # Snoozed from the tray: a silence of this rule on this node, for an hour.
    window.snooze_alert(row, 3600.0)

    async def silences() -> list[dict[str, Any]]:
        return list((await core.request("GET", "/api/v1/silences", token))[1]["silences"])

    (silence,) = run(wait_until(silences, lambda found: len(found) == 1, what="the silence"))
    assert (silence["rule"], silence["node"]) == (row.rule_id, row.node_id)
    assert 3590 < silence["ends_at"] - silence["starts_at"] <= 3600


def test_the_rules_silences_and_channels_pages_list_and_act_on_the_core(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    run(sign_in(ctx, core))
    token = run(core.admin_token())
    view = window.open_alerting("rules")
    assert view is not None
    rules = view.rules
    run(until(lambda: rules.loads >= 1, "the rules"))
    assert rules.model.rowCount() == 0 and rules.status.text() == "0 rules"
    hook = {"name": "ops", "kind": "webhook", "url": "http://127.0.0.1:9/nobody-listens"}
    status, channel = run(core.request("POST", "/api/v1/channels", token, json=hook))
    assert status == 201, channel
    rule = {
        "name": "load",
        "metric": "load1",
        "threshold": 8,
        "targets": {"all": True},
        "channels": [channel["id"]],
    }
    assert run(core.request("POST", "/api/v1/alert-rules", token, json=rule))[0] == 201
    rules.refresh()
    run(until(lambda: rules.loads >= 2, "the reload"))
    assert rules.status.text() == "1 rule" and [c.name for c in rules.channels] == ["ops"]
    assert not rules.delete_button.isEnabled()  # nothing selected
    rules.table.selectRow(0)
    assert rules.delete_button.isEnabled()
    rules.delete_button.click()
    run(until(lambda: rules.model.rowCount() == 0, "the deleted rule gone"))

    view.show_page("channels")
    channels = view.channels
    run(until(lambda: channels.loads >= 1, "the channels"))
    channels.table.selectRow(0)
    channels.test_button.click()
    run(until(lambda: channels.status.text().startswith("Test to ops failed"), "the test's verdict"))

    silence = {"tag": "db", "duration": "1h", "comment": "maintenance"}
    assert run(core.request("POST", "/api/v1/silences", token, json=silence))[0] == 201
    view.show_page("silences")
    silences = view.silences
    run(until(lambda: silences.loads >= 1, "the silences"))
    assert silences.status.text() == "1 active silence"
    silences.table.selectRow(0)
    silences.expire_button.click()
    run(until(lambda: silences.status.text() == "0 active silences", "the silence expired"))
