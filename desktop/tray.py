"""The system tray: TrayState decides colour, tooltip and notifications; Tray renders it when a tray exists."""

from __future__ import annotations

from enum import StrEnum

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from servermanager.common.alerts import Alert
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.themes import icon


class Level(StrEnum):
    UP = "up"  # connected, every node online, nothing firing
    WARNING = "warning"  # a warning alert is firing
    DOWN = "down"  # connected, some node offline
    CRITICAL = "critical"  # a critical alert is firing
    DISCONNECTED = "disconnected"  # no working link to the core


_LIVE = {LinkState.CONNECTED.value, LinkState.POLLING.value}


class TrayState(QObject):
    """Everything the tray shows, computed from the link state, node counts and transitions.

    Pure state: no QSystemTrayIcon here, so it works (and is tested) where no tray exists.
    Transitions arriving close together are sent as one notification, so a core restart
    that flips ten nodes does not pop ten bubbles.
    """

    changed = Signal()  # level or tooltip changed
    notify = Signal(str, str)  # title, message: a notification to show

    def __init__(self, coalesce_ms: int = 400, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.link = LinkState.IDLE.value
        self.up = 0
        self.down = 0
        self.enabled = True  # the user's "notifications" setting
        self.paused = False  # the tray menu's "pause notifications"
        self._pending: list[tuple[str, bool]] = []
        self.firing: dict[int, Alert] = {}  # by alert id: what colours the icon
        self._pending_alerts: list[Alert] = []
        self._flush = QTimer(self)
        self._flush.setSingleShot(True)
        self._flush.setInterval(coalesce_ms)
        self._flush.timeout.connect(self._send)
        self.sent: list[tuple[str, str]] = []  # every notification sent, newest last

    @property
    def level(self) -> Level:
        if self.link not in _LIVE:
            return Level.DISCONNECTED
        severities = {a.severity for a in self.firing.values()}
        if "critical" in severities:
            return Level.CRITICAL
        if self.down:
            return Level.DOWN
        return Level.WARNING if severities else Level.UP

    @property
    def tooltip(self) -> str:
        if self.link == LinkState.IDLE.value:
            return "Server Manager: not signed in"
        if self.link not in _LIVE:
            return f"Server Manager: disconnected ({self.link})"
        text = f"Server Manager: {self.up} online, {self.down} offline"
        if self.firing:
            text += f", {len(self.firing)} alert{'s' if len(self.firing) != 1 else ''} firing"
        return text + (" (polling)" if self.link == LinkState.POLLING.value else "")

    def set_link(self, state: str) -> None:
        if state != self.link:
            self.link = state
            self.changed.emit()

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

    def node_transition(self, _node_id: int, name: str, online: bool) -> None:
        """A node went offline or came back: queue a notification unless muted."""
        if not self.enabled or self.paused:
            return
        self._pending.append((name, online))
        self._flush.start()

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
    ack_requested = Signal(int)  # alert id
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
