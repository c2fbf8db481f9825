"""Window life: closing without a tray quits; a demo login signs in without a dialog."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from servermanager.core.datadir import initial_admin_password
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, until


def test_closing_without_a_tray_quits(window: MainWindow, qtbot: QtBot) -> None:
    assert not window.tray.available  # offscreen has no tray
    window.show()
    with qtbot.waitSignal(window.quit_requested, timeout=1000):
        window.close()
    assert not window.isVisible()


def test_demo_login_signs_in_without_a_dialog(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    password = initial_admin_password(cores.c.data_dir)
    window.start(core_url=cores.c.url, demo_password=password)
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "demo sign-in"))
    assert window.connection_dialog is None
    assert window.user_label.text() == "admin (admin)"
    assert ctx.signin.profile is not None and ctx.signin.profile.name == "Demo"
