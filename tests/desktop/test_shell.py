"""Tray state, themes, settings persistence and window life, with a real core behind them."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRect, QSettings
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication, QComboBox
from pytestqt.qtbot import QtBot

from servermanager.desktop.context import AppContext
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.settings import SCHEMA, Settings
from servermanager.desktop.themes import DARK, LIGHT
from servermanager.desktop.tray import Level, TrayState
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, enrolled, make_ctx, reconnected, sign_in, until


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


def test_theme_switches_live(window: MainWindow, ctx: AppContext, qapp: QApplication, qtbot: QtBot) -> None:
    dialog = window.open_settings()
    combo = dialog.editors["theme"]
    assert isinstance(combo, QComboBox)
    window.show()
    with qtbot.waitSignal(ctx.themes.theme_changed, timeout=1000) as blocker:
        combo.setCurrentIndex(combo.findData("dark"))
    assert blocker.args == [True]
    assert qapp.palette().color(QPalette.ColorRole.Window).name() == DARK[QPalette.ColorRole.Window]
    assert "Dark theme" in qapp.styleSheet()
    # Widgets already on screen repaint with the new palette; no restart.
    assert window.fleet.table.palette().color(QPalette.ColorRole.Base).name() == DARK[QPalette.ColorRole.Base]
    image = window.fleet.table.viewport().grab().toImage()
    assert image.pixelColor(5, 5).name() == DARK[QPalette.ColorRole.Base]

    with qtbot.waitSignal(ctx.themes.theme_changed, timeout=1000):
        combo.setCurrentIndex(combo.findData("light"))
    assert qapp.palette().color(QPalette.ColorRole.Window).name() == LIGHT[QPalette.ColorRole.Window]
    assert ctx.settings.get("theme") == "light"


def test_settings_persist_and_geometry_is_kept_apart(
    qapp: QApplication, ctx: AppContext, settings_file: Path, run: Run
) -> None:
    seen: list[tuple[str, object]] = []
    ctx.settings.changed.connect(lambda key, value: seen.append((key, value)))
    ctx.settings.set("refresh_interval", 30)
    ctx.settings.set("refresh_interval", 30)  # no change, no signal
    ctx.settings.set("chart_range", "7d")
    ctx.settings.set("refresh_interval", 7)  # not offered: falls back to the default
    assert seen == [("refresh_interval", 30), ("chart_range", "7d"), ("refresh_interval", 10)]
    assert ctx.live.poll_interval == 10

    win = MainWindow(ctx)
    win.setGeometry(QRect(40, 50, 700, 500))
    win.save_state()
    ctx.store_sync()

    # Another run reads the same file.
    again = Settings(QSettings(str(settings_file), QSettings.Format.IniFormat))
    assert again.get("chart_range") == "7d"
    assert {s.key for s in SCHEMA} == {
        "theme",
        "refresh_interval",
        "notifications",
        "start_minimized",
        "chart_range",
    }
    text = settings_file.read_text()
    assert "[settings]" in text and "[window]" in text
    ctx2 = make_ctx(qapp, settings_file)
    win2 = MainWindow(ctx2)
    try:
        assert (win2.size().width(), win2.size().height()) == (700, 500)
    finally:
        win._quitting = win2._quitting = True
        win.close()
        win2.close()
        run(ctx2.close())


def test_closing_without_a_tray_quits(window: MainWindow, qtbot: QtBot) -> None:
    assert not window.tray.available  # offscreen has no tray
    window.show()
    with qtbot.waitSignal(window.quit_requested, timeout=1000):
        window.close()
    assert not window.isVisible()


def test_demo_login_signs_in_without_a_dialog(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    password = (cores.c.data_dir / "initial-admin-password").read_text().strip()
    window.start(core_url=cores.c.url, demo_password=password)
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "demo sign-in"))
    assert window.connection_dialog is None
    assert window.user_label.text() == "admin (admin)"
    assert ctx.signin.profile is not None and ctx.signin.profile.name == "Demo"
