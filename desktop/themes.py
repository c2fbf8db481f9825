"""Dark and light themes (a QPalette plus a small QSS), the resources folder, and icons."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPalette
from PySide6.QtWidgets import QApplication

log = logging.getLogger(__name__)


def _resources() -> Path:
    """resources/ sits next to desktop/ in the source tree; a wheel ships it as desktop/resources."""
    here = Path(__file__).resolve().parent
    packaged = here / "resources"
    return packaged if packaged.is_dir() else here.parent / "resources"


RESOURCES = _resources()

THEMES = ("system", "dark", "light")

# Status colours stay the same in both themes; they are chosen to read on dark and light.
GOOD = QColor("#2e9d58")
WARN = QColor("#e0a030")
BAD = QColor("#d64541")
MUTED = QColor("#8a9099")


def resource(*parts: str) -> Path:
    return RESOURCES.joinpath(*parts)


@functools.cache
def icon(name: str) -> QIcon:
    """An SVG icon from resources/icons; a missing file logs once and gives an empty icon."""
    path = resource("icons", f"{name}.svg")
    if not path.exists():
        log.warning("icon %s not found at %s", name, path)
        return QIcon()
    return QIcon(str(path))


def _palette(colors: dict[QPalette.ColorRole, str], disabled_text: str) -> QPalette:
    pal = QPalette()
    for role, value in colors.items():
        pal.setColor(role, QColor(value))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor(disabled_text))
    return pal


R = QPalette.ColorRole

DARK = {
    R.Window: "#1e2227",
    R.WindowText: "#e3e6ea",
    R.Base: "#16191d",
    R.AlternateBase: "#1c2025",
    R.ToolTipBase: "#2a2f36",
    R.ToolTipText: "#e3e6ea",
    R.PlaceholderText: "#7d8590",
    R.Text: "#e3e6ea",
    R.Button: "#2a2f36",
    R.ButtonText: "#e3e6ea",
    R.BrightText: "#ffffff",
    R.Light: "#3a404a",
    R.Midlight: "#30353d",
    R.Mid: "#262a31",
    R.Dark: "#121417",
    R.Shadow: "#000000",
    R.Highlight: "#2f6fb0",
    R.HighlightedText: "#ffffff",
    R.Link: "#6cb0f0",
    R.LinkVisited: "#b08cf0",
}

LIGHT = {
    R.Window: "#f6f7f9",
    R.WindowText: "#1d232a",
    R.Base: "#ffffff",
    R.AlternateBase: "#f3f5f8",
    R.ToolTipBase: "#ffffe8",
    R.ToolTipText: "#1d232a",
    R.PlaceholderText: "#8a939d",
    R.Text: "#1d232a",
    R.Button: "#eef0f3",
    R.ButtonText: "#1d232a",
    R.BrightText: "#ffffff",
    R.Light: "#ffffff",
    R.Midlight: "#e6e9ed",
    R.Mid: "#c5cbd2",
    R.Dark: "#9aa2ab",
    R.Shadow: "#5a616a",
    R.Highlight: "#2f7fd0",
    R.HighlightedText: "#ffffff",
    R.Link: "#1f6fbf",
    R.LinkVisited: "#6b3fb5",
}


def palette(dark: bool) -> QPalette:
    return _palette(DARK, "#6b737d") if dark else _palette(LIGHT, "#9aa2ab")


def stylesheet(dark: bool) -> str:
    path = resource("themes", "dark.qss" if dark else "light.qss")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        log.warning("theme stylesheet %s unreadable: %s", path, exc)
        return ""
    # QSS resolves url() against the working directory; point it at our icons wherever we run from.
    return text.replace("@icons@", resource("icons").as_posix())


def system_prefers_dark() -> bool:
    return QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark


class ThemeManager(QObject):
    """Applies a theme to the whole application and says when the effective one changes."""

    theme_changed = Signal(bool)  # dark?

    def __init__(self, app: QApplication, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.app = app
        self.name = "system"
        self.dark = False
        # Fusion draws the palette faithfully on every platform; native styles ignore parts of it.
        app.setStyle("Fusion")
        app.styleHints().colorSchemeChanged.connect(self._system_changed)

    def apply(self, name: str) -> None:
        self.name = name if name in THEMES else "system"
        dark = system_prefers_dark() if self.name == "system" else self.name == "dark"
        self.app.setPalette(palette(dark))
        self.app.setStyleSheet(stylesheet(dark))
        changed = dark != self.dark
        self.dark = dark
        if changed:
            self.theme_changed.emit(dark)

    def _system_changed(self, _scheme: Qt.ColorScheme) -> None:
        if self.name == "system":
            self.apply("system")
