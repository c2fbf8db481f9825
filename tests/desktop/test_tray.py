"""Tray state with a real core behind it: nodes going offline and back, bursts, pauses."""

from __future__ import annotations

from typing import Any

from pytestqt.qtbot import QtBot

from servermanager.common.alerts import Alert
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.tray import Level, Tray, TrayState
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, enrolled, reconnected, sign_in, until


def test_tray_state_follows_nodes_going_offline_and_back(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run, qtbot: QtBot
) -> None:
    state = window.tray_state
    assert state.level == Level.DISCONNECTED and state.tooltip == "Server Manager: not signed in"
    web = run(enrolled(cores.c, "web-1"))
    db = run(enrolled(cores.c, "db-1"))
    run(sign_in(ctx, cores.c))
    assert state.level == Level.UP
    assert state.tooltip == "Server Manager: 2 online, 0 offline"
    assert state.sent == []  # the first snapshot is not news

    with qtbot.waitSignal(state.notify, timeout=5000) as blocker:
        run(web.close())
    assert blocker.args == ["web-1 went offline", "Server Manager stopped hearing from it."]
    assert state.level == Level.DOWN
    assert state.tooltip == "Server Manager: 1 online, 1 offline"

    with qtbot.waitSignal(state.notify, timeout=5000) as blocker:
        web2 = run(reconnected(cores.c, web))
    assert blocker.args[0] == "web-1 is back online"
    assert state.level == Level.UP

    # Paused (tray menu) or switched off (settings): transitions change the icon, not the user's day.
    window.tray.pause_action.setChecked(True)
    run(web2.close())
    run(until(lambda: state.level == Level.DOWN, "down again"))
    ctx.settings.set("notifications", False)
    window.tray.pause_action.setChecked(False)
    run(reconnected(cores.c, web))
    run(until(lambda: state.level == Level.UP, "up again"))
    with qtbot.assertNotEmitted(state.notify, wait=600):
        pass
    assert len(state.sent) == 2
    assert db.ws is not None and not db.ws.closed

    run(cores.stop())
    run(until(lambda: state.level == Level.DISCONNECTED, "disconnected"))
    assert state.tooltip.startswith("Server Manager: disconnected")


def test_tray_state_batches_a_burst_of_transitions(qtbot: QtBot) -> None:
    state = TrayState(coalesce_ms=50)
    state.set_link(LinkState.CONNECTED.value)
    state.set_counts(3, 0)
    with qtbot.waitSignal(state.notify, timeout=2000) as blocker:
        state.node_transition(1, "a", False)
        state.node_transition(2, "b", False)
        state.node_transition(3, "c", True)
    assert blocker.args == ["3 nodes changed state", "Offline: a, b\nBack online: c"]


def _alert(id: int, severity: str = "warning", state: str = "firing", **over: Any) -> Alert:
    values: dict[str, Any] = dict(
        id=id, rule_id=1, rule="cpu high", node_id=id, node=f"web-{id}", metric="cpu_pct", op=">",
        threshold=90.0, state=state, severity=severity, value=97.0, peak=97.0, started_at=0.0,
    )  # fmt: skip
    values.update(over)
    return Alert(**values)


def test_tray_colour_follows_the_worst_firing_alert(qtbot: QtBot) -> None:
    state = TrayState(coalesce_ms=50)
    state.set_link(LinkState.CONNECTED.value)
    state.set_counts(2, 0)
    state.set_alerts([_alert(1), _alert(2, state="resolved")])  # as listed at sign-in: no bubble
    assert state.level == Level.WARNING and state.tooltip.endswith("1 alert firing")
    state.set_counts(1, 1)
    assert state.level == Level.DOWN  # a node down outranks a warning
    with qtbot.waitSignal(state.notify, timeout=2000) as blocker:
        state.alert_changed(_alert(3, severity="critical", value=99.5))
    assert state.level == Level.CRITICAL  # and a critical alert outranks both
    assert blocker.args == ["Critical: cpu high on web-3", "cpu_pct 99.5 > 90"]
    state.alert_changed(_alert(3, severity="critical", state="resolved"))
    state.alert_changed(_alert(1, state="resolved"))
    state.set_counts(2, 0)
    assert state.level == Level.UP and state.firing == {}
    assert state.sent == [("Critical: cpu high on web-3", "cpu_pct 99.5 > 90")]  # the sign-in list made none


def test_acked_silenced_or_paused_alerts_make_no_bubble(qtbot: QtBot) -> None:
    state = TrayState(coalesce_ms=10)
    state.set_link(LinkState.CONNECTED.value)
    state.alert_changed(_alert(1, acked_by="alice"))
    state.alert_changed(_alert(2, silenced=True))
    state.set_paused(True)
    state.alert_changed(_alert(3))
    state.set_paused(False)
    with qtbot.waitSignal(state.notify, timeout=2000) as blocker:
        state.alert_changed(_alert(4))
        state.alert_changed(_alert(5))
    assert blocker.args == ["2 alerts firing", "cpu high on web-4\ncpu high on web-5"]
    assert len(state.firing) == 5  # every one still colours the icon


def test_the_tray_menu_offers_ack_and_snooze_for_each_firing_alert(qtbot: QtBot) -> None:
    state = TrayState()
    tray = Tray(state)
    assert not tray.alerts_menu.isEnabled()  # nothing firing
    state.set_link(LinkState.CONNECTED.value)
    state.set_alerts([_alert(1, fired_at=10.0), _alert(2, severity="critical", fired_at=5.0, acked_by="bob")])
    subs = [a.menu() for a in tray.alerts_menu.actions()]
    assert [s.title() for s in subs] == ["cpu high on web-2 (critical)", "cpu high on web-1 (warning)"]
    labels = [a.text() for a in subs[1].actions()]
    assert labels == ["Acknowledge", "Snooze 1 hour", "Snooze 4 hours", "Snooze 1 day"]
    assert not subs[0].actions()[0].isEnabled()  # already acknowledged
    with qtbot.waitSignal(tray.snooze_requested) as snoozed:
        subs[1].actions()[2].trigger()
    assert snoozed.args[0].id == 1 and snoozed.args[1] == 4 * 3600.0
    with qtbot.waitSignal(tray.ack_requested) as acked:
        subs[1].actions()[0].trigger()
    assert acked.args == [1]
