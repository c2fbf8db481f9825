"""Tray state with a real core behind it: nodes going offline and back, bursts, pauses."""

from __future__ import annotations

import time
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


class Clock:
    """Wall time that moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _hhmm(ts: float) -> str:
    return time.strftime("%H:%M", time.localtime(ts))


URL = "https://core.example:8760"
CUT = "Cannot reach the core at core.example:8760. Check the address and that the core is running."


def test_the_core_watch_speaks_once_per_outage_longer_than_the_setting(qtbot: QtBot) -> None:
    clock = Clock(1_750_000_000.0)
    state = TrayState(unreachable_after=60, clock=clock)
    watch = state.watch
    state.set_link(LinkState.CONNECTING.value, "", URL)
    state.set_link(LinkState.CONNECTED.value, "live updates", URL)

    # A flap shorter than the setting says nothing, however it ends.
    state.set_link(LinkState.RECONNECTING.value, "the core closed the live connection", URL)
    state.set_link(LinkState.OFFLINE.value, CUT, URL)
    clock.now += 59.9
    watch.check()
    state.set_link(LinkState.POLLING.value, "live updates unavailable; polling every 10s", URL)
    clock.now += 120
    watch.check()
    assert state.sent == [] and not watch.announced

    # A real outage: timed from the moment the link stopped working, not from the last failure.
    start = clock.now
    state.set_link(LinkState.RECONNECTING.value, "the core closed the live connection", URL)
    clock.now += 30
    state.set_link(LinkState.OFFLINE.value, CUT, URL)
    clock.now += 29.9
    watch.check()
    assert state.sent == [] and state.tooltip == "Server Manager: disconnected (offline)"
    clock.now += 0.1
    with qtbot.waitSignal(state.notify, timeout=1000) as lost:
        watch.check()
    assert lost.args == ["Core unreachable", f"Core {URL} unreachable since {_hhmm(start)}: {CUT}"]
    assert state.level == Level.DISCONNECTED
    assert state.tooltip == f"Server Manager: core unreachable since {_hhmm(start)}: {CUT}"

    # Once: more failures, new reasons, a new threshold and the timer say nothing more.
    clock.now += 600
    watch.check()
    with qtbot.waitSignal(state.changed, timeout=1000):  # the tray shows the new reason
        state.set_link(LinkState.OFFLINE.value, "The core at core.example:8760 did not answer in time.", URL)
    state.set_unreachable_after(15)
    state.set_link(LinkState.CONNECTING.value, "", URL)
    assert len(state.sent) == 1
    assert state.tooltip.endswith("did not answer in time.")

    with qtbot.waitSignal(state.notify, timeout=1000) as back:
        state.set_link(LinkState.CONNECTED.value, "live updates", URL)
    assert back.args == ["Core reachable again", f"Core {URL} is back after 11m 0s."]
    state.set_link(LinkState.CONNECTED.value, "", URL)  # a latency update
    state.set_link(LinkState.POLLING.value, "", URL)
    assert len(state.sent) == 2 and state.tooltip.startswith("Server Manager: 0 online")


def test_the_core_watch_is_quiet_when_off_signed_out_or_switched_to_another_core(qtbot: QtBot) -> None:
    clock = Clock(1_750_000_000.0)
    state = TrayState(unreachable_after=0, clock=clock)
    watch = state.watch
    state.set_link(LinkState.OFFLINE.value, CUT, URL)
    clock.now += 86400
    watch.check()
    assert state.sent == []  # 0: never

    state.set_unreachable_after(60)  # turned on during an outage: counts from its start
    assert watch.announced and len(state.sent) == 1

    # Signing out is not the core coming back, nor is another core answering.
    state.set_link(LinkState.IDLE.value, "Your session has expired. Please sign in again.")
    assert not watch.announced and watch.down_since is None
    state.set_link(LinkState.OFFLINE.value, CUT, URL)
    clock.now += 61
    watch.check()
    assert len(state.sent) == 2
    state.set_link(LinkState.CONNECTED.value, "live updates", "http://other.example:8760")
    assert len(state.sent) == 2 and not watch.announced

    # Paused: the tooltip still tells, the bubble does not; nor does the "back" of an outage it did not tell.
    state.set_paused(True)
    state.set_link(LinkState.OFFLINE.value, CUT, URL)
    clock.now += 61
    watch.check()
    assert watch.announced and state.tooltip.startswith("Server Manager: core unreachable since")
    state.set_link(LinkState.CONNECTED.value, "", URL)
    assert len(state.sent) == 2


def test_the_tray_says_once_that_a_real_core_is_unreachable_and_once_that_it_is_back(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run, qtbot: QtBot
) -> None:
    state = window.tray_state
    ctx.settings.set("core_unreachable_after", 15)  # the setting reaches the watch
    assert state.watch.after == 15
    run(sign_in(ctx, cores.c))
    url, port = cores.c.url, cores.c.port

    # A restart shorter than the setting: nothing to say.
    run(cores.stop())
    run(until(lambda: ctx.live.state == LinkState.OFFLINE, "offline"))
    assert state.watch.down_since is not None
    run(cores.start(port))
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "live again"))
    assert state.watch.down_since is None and state.sent == []

    # Longer than the setting (shorter than any the dialog offers, to keep the test quick).
    state.set_unreachable_after(0.5)
    said_at: list[float] = []
    state.notify.connect(lambda *_: said_at.append(time.time()))
    with qtbot.waitSignal(state.notify, timeout=8000) as lost:
        run(cores.stop())
    assert ctx.live.state == LinkState.OFFLINE  # neither the socket nor polling gets through
    since = state.watch.down_since
    assert since is not None and said_at[0] - since >= 0.5
    reason = f"Cannot reach the core at 127.0.0.1:{port}. Check the address and that the core is running."
    assert lost.args == ["Core unreachable", f"Core {url} unreachable since {_hhmm(since)}: {reason}"]
    assert state.level == Level.DISCONNECTED
    assert state.tooltip == f"Server Manager: core unreachable since {_hhmm(since)}: {reason}"
    ctx.live.reconnect_now()  # more failed attempts while the outage lasts
    with qtbot.assertNotEmitted(state.notify, wait=1000):
        pass

    with qtbot.waitSignal(state.notify, timeout=8000) as back:
        run(cores.start(port))
    assert back.args[0] == "Core reachable again"
    assert back.args[1].startswith(f"Core {url} is back after ") and back.args[1].endswith("s.")
    assert ctx.live.state in (LinkState.CONNECTED, LinkState.POLLING)
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "live again"))
    with qtbot.assertNotEmitted(state.notify, wait=600):
        pass
    assert [title for title, _ in state.sent] == ["Core unreachable", "Core reachable again"]
    assert state.tooltip == "Server Manager: 0 online, 0 offline"
