"""The system tray: TrayState decides colour, tooltip and notifications; Tray renders it when a tray exists."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import StrEnum

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from servermanager.common.alerts import Alert
from servermanager.desktop.format import fmt_duration
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.themes import icon


class Level(StrEnum):
    UP = "up"  # connected, every node online, nothing firing
    WARNING = "warning"  # a warning alert is firing
    DOWN = "down"  # connected, some node offline
    CRITICAL = "critical"  # a critical alert is firing
    DISCONNECTED = "disconnected"  # no working link to the core


_LIVE = {LinkState.CONNECTED.value, LinkState.POLLING.value}
# Signed in, and neither the live socket nor polling gets an answer from the core.
_FAILING = {LinkState.RECONNECTING.value, LinkState.OFFLINE.value}


class CoreWatch(QObject):
    """Decides when the core counts as unreachable, and when it is back.

    An outage starts when the link stops working (no live socket, no successful poll) and ends
    when either works again. One that lasts longer than `after` seconds is announced once
    (`lost`); its end is announced once (`back`), and only if it was announced. Shorter outages,
    signing out, or switching to another core say nothing. `after` 0 never announces.

    `clock` is wall time in seconds (the "since" shown is a time of day); tests pass their own
    and call check() instead of waiting for the timer.
    """

    lost = Signal()  # the current outage just passed `after`
    back = Signal(float)  # an announced outage ended: how long it lasted, in seconds

    def __init__(
        self, after: float = 60.0, clock: Callable[[], float] = time.time, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.after = max(0.0, float(after))
        self.clock = clock
        self.url = ""  # the core being watched
        self.reason = ""  # why the link failed, as it last said
        self.down_since: float | None = None  # clock() when the link stopped working
        self.announced = False  # `lost` was emitted for this outage
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self.check)

    def set_after(self, seconds: float) -> None:
        """A new threshold applies to an outage already under way (0 turns warnings off)."""
        self.after = max(0.0, float(seconds))
        self.check()

    def update(self, state: str, detail: str = "", url: str = "") -> None:
        """The link's state (a LinkState value), its detail and the session's core URL."""
        if state == LinkState.IDLE.value or (url and self.url and url != self.url):
            self._reset()  # signed out, or now watching another core: not this core coming back
        if url:
            self.url = url
        if state in _LIVE:
            if self.announced and self.down_since is not None:
                lasted = max(0.0, self.clock() - self.down_since)
                self._reset()
                self.back.emit(lasted)
            else:
                self._reset()
        elif state in _FAILING:
            if detail:
                self.reason = detail
            if self.down_since is None:
                self.down_since = self.clock()
                self.check()
        # CONNECTING: the first attempt after signing in is neither an outage nor its end.

    def check(self) -> None:
        """Announce the outage if it is due, else wait for the rest of it (the timer calls this too)."""
        self._timer.stop()
        if self.down_since is None or self.announced or self.after <= 0:
            return
        remaining = self.down_since + self.after - self.clock()
        if remaining > 0:
            self._timer.start(math.ceil(remaining * 1000))
            return
        self.announced = True
        self.lost.emit()

    def _reset(self) -> None:
        self._timer.stop()
        self.down_since = None
        self.announced = False
        self.reason = ""


class TrayState(QObject):
    """Everything the tray shows, computed from the link state, node counts and transitions.

    Pure state: no QSystemTrayIcon here, so it works (and is tested) where no tray exists.
    Transitions arriving close together are sent as one notification, so a core restart
    that flips ten nodes does not pop ten bubbles.
    """

    changed = Signal()  # level or tooltip changed
    notify = Signal(str, str)  # title, message: a notification to show

    def __init__(
        self,
        coalesce_ms: int = 400,
        parent: QObject | None = None,
        *,
        unreachable_after: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(parent)
        self.link = LinkState.IDLE.value
        self.watch = CoreWatch(unreachable_after, clock, self)
        self.watch.lost.connect(self._core_lost)
        self.watch.back.connect(self._core_back)
        self.up = 0
        self.down = 0
        self.enabled = True  # the user's "notifications" setting
        self.paused = False  # the tray menu's "pause notifications"
        self._pending: list[tuple[str, bool]] = []
        self.firing: dict[int, Alert] = {}  # by alert id: what colours the icon
        self.cores_down: list[str] = []  # the names of the window's other cores that are unreachable
        self.cores_live = 0  # how many of the window's other cores are live (socket or polling)
        self._pending_alerts: list[Alert] = []
        self._flush = QTimer(self)
        self._flush.setSingleShot(True)
        self._flush.setInterval(coalesce_ms)
        self._flush.timeout.connect(self._send)
        self.sent: list[tuple[str, str]] = []  # every notification sent, newest last

    @property
    def level(self) -> Level:
        if self.link not in _LIVE and not (self.link == LinkState.IDLE.value and self.cores_live):
            return Level.DISCONNECTED
        severities = {a.severity for a in self.firing.values()}
        if "critical" in severities:
            return Level.CRITICAL
        if self.down or self.cores_down:
            return Level.DOWN
        return Level.WARNING if severities else Level.UP

    @property
    def tooltip(self) -> str:
        if self.link == LinkState.IDLE.value and not self.cores_live:
            return "Server Manager: not signed in"
        if self.watch.announced:
            return f"Server Manager: core unreachable since {self._since()}: {self.watch.reason}"
        if self.link not in _LIVE and self.link != LinkState.IDLE.value:
            return f"Server Manager: disconnected ({self.link})"
        text = f"Server Manager: {self.up} online, {self.down} offline"
        if self.firing:
            text += f", {len(self.firing)} alert{'s' if len(self.firing) != 1 else ''} firing"
        text += " (polling)" if self.link == LinkState.POLLING.value else ""
        if self.cores_down:
            text += f"; unreachable: {', '.join(self.cores_down)}"
        return text

    def set_link(self, state: str, detail: str = "", url: str = "") -> None:
        """The link's state (a LinkState value), its detail and the core's URL, as the live link says."""
        before = (self.link, self.tooltip)
        self.link = state
        self.watch.update(state, detail, url)
        if (self.link, self.tooltip) != before:  # the tooltip also tells a new reason for an outage
            self.changed.emit()

    def set_cores_down(self, names: list[str]) -> None:
        """The window's other cores that cannot be reached now (their nodes count as offline)."""
        if names != self.cores_down:
            self.cores_down = list(names)
            self.changed.emit()

    def set_cores_live(self, count: int) -> None:
        """How many of the window's other cores are live: signed out of the first, the tray still
        watches those."""
        if count != self.cores_live:
            self.cores_live = count
            self.changed.emit()

    def set_unreachable_after(self, seconds: float) -> None:
        """The user's "warn when the core is unreachable for" setting; 0 never warns."""
        self.watch.set_after(seconds)

    def set_counts(self, up: int, down: int) -> None:
        if (up, down) != (self.up, self.down):
            self.up, self.down = up, down
            self.changed.emit()

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = bool(enabled)

    def set_paused(self, paused: bool) -> None:
        self.paused = bool(paused)
        if paused:
            self._pending.clear()

    def set_alerts(self, alerts: list[Alert]) -> None:
        """The firing alerts as the core lists them (at sign-in, after a reconnect): no notifications."""
        firing = {a.id: a for a in alerts if a.state == "firing"}
        if firing != self.firing:
            self.firing = firing
            self.changed.emit()

    def alert_changed(self, alert: Alert) -> None:
        """An alert event: a newly firing alert is notified unless silenced, acked or muted."""
        was = alert.id in self.firing
        if alert.state == "firing":
            self.firing[alert.id] = alert
            if not was and not alert.silenced and alert.acked_by is None and self.enabled and not self.paused:
                self._pending_alerts.append(alert)
                self._flush.start()
        elif was:
            del self.firing[alert.id]
        self.changed.emit()

    def node_transition(self, _node: object, name: str, online: bool) -> None:
        """A node went offline or came back: queue a notification unless muted."""
        if not self.enabled or self.paused:
            return
        self._pending.append((name, online))
        self._flush.start()

    def _since(self) -> str:
        since = self.watch.down_since
        return time.strftime("%H:%M", time.localtime(since)) if since is not None else "?"

    def _core_lost(self) -> None:
        """Once per outage: the tooltip says so until it ends, and a notification unless paused."""
        self.changed.emit()
        self._say(
            "Core unreachable",
            f"Core {self.watch.url} unreachable since {self._since()}: {self.watch.reason}",
        )

    def _core_back(self, lasted: float) -> None:
        self._say("Core reachable again", f"Core {self.watch.url} is back after {fmt_duration(lasted)}.")

    def _say(self, title: str, message: str) -> None:
        if self.paused:
            return
        self.sent.append((title, message))
        self.notify.emit(title, message)

    def _send(self) -> None:
        alerts, self._pending_alerts = self._pending_alerts, []
        if alerts:
            self._send_alerts(alerts)
        pending, self._pending = self._pending, []
        if not pending:
            return
        down = [n for n, online in pending if not online]
        back = [n for n, online in pending if online]
        if len(pending) == 1:
            name, online = pending[0]
            title = f"{name} is back online" if online else f"{name} went offline"
            message = "It is reporting again." if online else "Server Manager stopped hearing from it."
        else:
            title = f"{len(pending)} nodes changed state"
            parts = []
            if down:
                parts.append("Offline: " + ", ".join(down))
            if back:
                parts.append("Back online: " + ", ".join(back))
            message = "\n".join(parts)
        self.sent.append((title, message))
        self.notify.emit(title, message)

    def _send_alerts(self, alerts: list[Alert]) -> None:
        if len(alerts) == 1:
            a = alerts[0]
            title = f"{a.severity.capitalize()}: {a.rule} on {a.node}"
            message = f"{a.metric} {a.value:g} {a.op} {a.threshold:g}" if a.value is not None else a.metric
        else:
            title = f"{len(alerts)} alerts firing"
            message = "\n".join(f"{a.rule} on {a.node}" for a in alerts)
        self.sent.append((title, message))
        self.notify.emit(title, message)


class Tray(QObject):
    """Renders a TrayState into a QSystemTrayIcon, if the desktop has a tray at all."""

    show_requested = Signal()
    quit_requested = Signal()
    pause_toggled = Signal(bool)
    ack_requested = Signal(object)  # alert id (a key of core and id: may not fit a C++ int)
    snooze_requested = Signal(object, float)  # Alert, seconds: silence its rule on its node

    SNOOZES: tuple[tuple[str, float], ...] = (("1 hour", 3600.0), ("4 hours", 4 * 3600.0), ("1 day", 86400.0))
    MAX_LISTED = 10  # firing alerts in the menu; the Alerts tab has the rest

    def __init__(self, state: TrayState, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.available = QSystemTrayIcon.isSystemTrayAvailable()
        self.icon: QSystemTrayIcon | None = None
        self.pause_action = QAction("Pause notifications", self)
        self.pause_action.setCheckable(True)
        self.pause_action.toggled.connect(self._pause)
        # The menus exist with or without a tray, so what they offer is the same everywhere.
        self.alerts_menu = QMenu("Firing alerts")
        self.menu = QMenu()
        show = self.menu.addAction("Show Server Manager")
        show.triggered.connect(self.show_requested)
        self.menu.addMenu(self.alerts_menu)
        self.menu.addAction(self.pause_action)
        self.menu.addSeparator()
        quit_action = self.menu.addAction("Quit")
        quit_action.triggered.connect(self.quit_requested)
        state.changed.connect(self._fill_alerts_menu)
        self._fill_alerts_menu()
        if not self.available:
            return
        self.icon = QSystemTrayIcon(self)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        state.changed.connect(self.render)
        state.notify.connect(self._notify)
        self.render()
        self.icon.show()

    def _fill_alerts_menu(self) -> None:
        """A submenu per firing alert, worst first: acknowledge it, or snooze it for a while."""
        self.alerts_menu.clear()
        alerts = sorted(
            self.state.firing.values(),
            key=lambda a: (a.severity != "critical", -(a.fired_at or a.started_at)),
        )
        self.alerts_menu.setEnabled(bool(alerts))
        for alert in alerts[: self.MAX_LISTED]:
            sub = self.alerts_menu.addMenu(f"{alert.rule} on {alert.node} ({alert.severity})")
            ack = sub.addAction("Acknowledge")
            ack.setEnabled(alert.acked_by is None)
            ack.triggered.connect(lambda _=False, a=alert: self.ack_requested.emit(a.id))
            for label, seconds in self.SNOOZES:
                snooze = sub.addAction(f"Snooze {label}")
                snooze.triggered.connect(lambda _=False, a=alert, s=seconds: self.snooze_requested.emit(a, s))

    def render(self) -> None:
        if self.icon is None:
            return
        self.icon.setIcon(icon(f"tray-{self.state.level.value}"))
        self.icon.setToolTip(self.state.tooltip)

    def _notify(self, title: str, message: str) -> None:
        self.show_message(title, message)

    def show_message(self, title: str, message: str) -> None:
        if self.icon is not None and self.icon.supportsMessages():
            self.icon.showMessage(title, message, icon(f"tray-{self.state.level.value}"), 8000)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.show_requested.emit()

    def _pause(self, paused: bool) -> None:
        self.state.set_paused(paused)
        self.pause_toggled.emit(paused)

    def hide(self) -> None:
        if self.icon is not None:
            self.icon.hide()
