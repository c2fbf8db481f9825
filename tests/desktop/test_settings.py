"""Settings persist through QSettings, apart from window geometry."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRect, QSettings
from PySide6.QtWidgets import QApplication, QComboBox

from servermanager.desktop.context import AppContext
from servermanager.desktop.dialogs import SettingsDialog
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
        "core_unreachable_after",
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


def test_the_unreachable_warning_is_a_setting_the_tray_follows(
    ctx: AppContext, settings_file: Path, run: Run
) -> None:
    win = MainWindow(ctx)
    try:
        assert ctx.settings.get("core_unreachable_after") == 60 and win.tray_state.watch.after == 60
        dialog = SettingsDialog(ctx.settings, win)
        combo = dialog.editors["core_unreachable_after"]
        assert isinstance(combo, QComboBox)
        assert combo.currentText() == "1 minute" and combo.itemText(0) == "Never"
        combo.setCurrentIndex(combo.findData(300))
        assert ctx.settings.get("core_unreachable_after") == 300 and win.tray_state.watch.after == 300
        combo.setCurrentIndex(combo.findData(0))
        assert win.tray_state.watch.after == 0
        ctx.store_sync()
        assert "core_unreachable_after=0" in settings_file.read_text()
        ctx.settings.store.setValue("settings/core_unreachable_after", "-5")  # edited by hand
        assert ctx.settings.get("core_unreachable_after") == 60
        dialog.close()
    finally:
        win._quitting = True
        win.close()
