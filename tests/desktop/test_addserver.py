"""Add server against a real core: an admin makes the one-line installers (token, expiry, pin) and copies
them; the core's refusal is shown in its words; others never see the action."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication

from devkit.cores import RunningCore
from servermanager.desktop.addserver import AddServerDialog
from servermanager.desktop.context import AppContext
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, admin_password, close_agents, profile_for, sign_in, until


def make_line(dialog: AddServerDialog, run: Run) -> None:
    before = dialog.linux.text()
    dialog.make_button.click()
    run(until(lambda: dialog.linux.text() not in ("", before) or dialog.error.isVisible(), "the line"))


def test_an_admin_gets_the_lines_to_paste_with_a_fresh_token(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    run(sign_in(ctx, core))
    window.show()
    assert window.add_server_action.isVisible() and window.add_server_action.isEnabled()
    window.add_server_action.trigger()
    dialog = window.add_server_dialog
    assert dialog is not None and dialog.isVisible() and not dialog.output.isVisible()

    dialog.ttl.setCurrentIndex(dialog.ttl.findText("15 minutes"))
    dialog.uses.setValue(3)
    make_line(dialog, run)
    assert not dialog.error.isVisible(), dialog.error.text()
    words = shlex.split(dialog.linux.text())
    token = words[2]
    assert token.startswith("sme_") and words[-3:] == ["|", "sudo", "sh"]
    assert f"{core.url}/api/v1/agent/install.sh" in words and "--pinnedpubkey" not in words  # plain HTTP
    assert f"$token='{token}'" in dialog.windows.text()
    assert run(core.core.enroll.usable(token))
    listed = run(core.request("GET", "/api/v1/enroll-tokens", run(core.admin_token())))[1]["tokens"]
    [info] = [t for t in listed if t["id"] in dialog.expires.text()]
    assert info["uses_left"] == 3 and 800 < info["expires_at"] - info["created_at"] <= 900
    assert "up to 3 servers" in dialog.expires.text()
    assert dialog.pin.text().startswith("none:")  # and says why that matters

    dialog.copy_linux.click()
    assert QGuiApplication.clipboard().text() == dialog.linux.text()
    dialog.copy_windows.click()
    assert QGuiApplication.clipboard().text() == dialog.windows.text()

    # Another line, another token; a core address the core refuses, in its words.
    first = token
    make_line(dialog, run)
    assert shlex.split(dialog.linux.text())[2] != first
    dialog.core_url.setText("https://core.example/sub/path")
    make_line(dialog, run)
    assert dialog.error.isVisible() and "not a core address" in dialog.error.text()
    # Closed, it forgets the lines; signing out closes it.
    dialog.close()
    assert dialog.linux.text() == "" and dialog.windows.text() == ""
    window.open_add_server()
    assert dialog.isVisible()
    run(ctx.signin.sign_out())
    assert not dialog.isVisible() and not window.add_server_action.isVisible()


def test_operators_do_not_add_servers(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    run(core.user_token("olga", "operator", password="olga-pass-1"))
    run(ctx.signin.sign_in(profile_for(core, "olga"), "olga-pass-1"))
    window.show()
    assert not window.add_server_action.isVisible() and not window.add_server_action.isEnabled()
    assert window.open_add_server() is None and window.add_server_dialog is None


@pytest.fixture
def tls_cores(run: Run, tmp_path: Path) -> Iterator[Cores]:
    box = Cores(tmp_path / "tls-core", tls="on")
    run(box.start())
    try:
        yield box
    finally:
        run(close_agents())
        run(box.stop())


def test_with_tls_the_lines_pin_the_core(
    window: MainWindow, ctx: AppContext, tls_cores: Cores, run: Run
) -> None:
    core = tls_cores.c
    profile = profile_for(core)
    profile.fingerprint = core.fingerprint
    run(ctx.signin.sign_in(profile, admin_password(core)))
    dialog = window.open_add_server()
    assert dialog is not None
    make_line(dialog, run)
    assert not dialog.error.isVisible(), dialog.error.text()
    words = shlex.split(dialog.linux.text())
    assert words[words.index("--pinnedpubkey") + 1].startswith("sha256//")
    assert core.fingerprint.partition(":")[2] in dialog.windows.text()
    assert dialog.pin.text().startswith(core.fingerprint)
