"""Tray state with a real core behind it: nodes going offline and back, bursts, pauses."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from servermanager.desktop.context import AppContext
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.tray import Level, TrayState
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
