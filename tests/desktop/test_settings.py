"""Settings persist through QSettings, apart from window geometry."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRect, QSettings
from PySide6.QtWidgets import QApplication

from servermanager.desktop.context import AppContext
from servermanager.desktop.settings import SCHEMA, Settings
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Run, make_ctx


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
