"""Themes switch live: palette, style sheet and widgets already on screen."""

from __future__ import annotations

from collections import Counter

import pytest
from PySide6.QtGui import QColor, QImage, QPalette
from PySide6.QtWidgets import QApplication, QComboBox, QTabBar, QWidget
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


def _luminance(c: QColor) -> float:
    def channel(v: int) -> float:
        x = v / 255
        return x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(c.red()) + 0.7152 * channel(c.green()) + 0.0722 * channel(c.blue())


def contrast(a: QColor, b: QColor) -> float:
    """The WCAG 2 contrast ratio of two colours (1 to 21)."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def text_contrast(image: QImage) -> float:
    """Contrast of a rendered row of text: its most common colour (the background) against the
    colour furthest from it (the glyphs' cores)."""
    pixels = [image.pixelColor(x, y) for y in range(image.height()) for x in range(image.width())]
    background = QColor(Counter(c.rgb() for c in pixels).most_common(1)[0][0])
    return max(contrast(background, c) for c in pixels)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_hovered_item_of_a_drop_down_is_readable(
    window: MainWindow, ctx: AppContext, qapp: QApplication, qtbot: QtBot, theme: str
) -> None:
    ctx.settings.set("theme", theme)
    window.show()
    combo = window.fleet.status_filter
    combo.showPopup()
    view = combo.view()
    qtbot.waitUntil(view.isVisible, timeout=2000)
    hovered = combo.model().index(1, 0)  # "Online", not the current item
    view.setCurrentIndex(hovered)  # what the mouse moving over it does
    rect = view.visualRect(hovered)
    qtbot.waitUntil(lambda: rect.height() > 0, timeout=1000)
    row = view.viewport().grab(rect).toImage()
    assert text_contrast(row) >= 4.5
    # ...and the hover shows: the row is not drawn like the others.
    other = view.viewport().grab(view.visualRect(combo.model().index(2, 0))).toImage()
    assert row.pixelColor(2, 2) != other.pixelColor(2, 2)
    combo.hidePopup()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_tab_close_button_stands_out(
    window: MainWindow, ctx: AppContext, qapp: QApplication, qtbot: QtBot, theme: str
) -> None:
    ctx.settings.set("theme", theme)
    window.show()
    page = QWidget()
    window.tabs.addTab(page, "Closable")
    bar = window.tabs.tabBar()
    button = bar.tabButton(window.tabs.indexOf(page), QTabBar.ButtonPosition.RightSide)
    assert button is not None
    qtbot.waitUntil(button.isVisible, timeout=2000)
    # The cross against the tab behind it (Fusion's own was dark grey on the dark theme's tabs).
    assert text_contrast(button.grab().toImage()) >= 3.0
