"""Themes switch live: palette, style sheet and widgets already on screen."""

from __future__ import annotations

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication, QComboBox
from pytestqt.qtbot import QtBot

from servermanager.desktop.context import AppContext
from servermanager.desktop.themes import DARK, LIGHT
from servermanager.desktop.window import MainWindow


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
