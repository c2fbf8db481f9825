"""The command palette and the window's shortcuts: filtering, Enter opens a node, role filtering, keys in menus."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from devkit.cores import RunningCore
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.nodeview import NodeView
from servermanager.desktop.palette import PaletteEntry, PaletteModel, match_score
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Run, enrolled, profile_for, sign_in, until


def test_match_score_prefers_substrings_then_letters_in_order() -> None:
    assert match_score("", "Alerts") == 0
    assert match_score("log", "Audit log") is not None
    assert match_score("aulo", "Audit log") is not None
    assert match_score("alog", "Audit log") is not None
    assert match_score("gol", "Audit log") is None
    assert match_score("db", "Open node web-1") is None  # letters in order are not enough
    substring = match_score("web", "Open node web-1")
    pieces = match_score("web", "Open node w-e-b")
    assert substring is not None and pieces is not None and substring < pieces


def test_model(qtmodeltester: Any) -> None:
    model = PaletteModel()
    model.set_entries(
        [
            PaletteEntry("node:1", "Node", "Open node web-1"),
            PaletteEntry("node:2", "Node", "Open node db-1"),
            PaletteEntry("view:alerts", "View", "Alerts", "Ctrl+Shift+A"),
        ]
    )
    qtmodeltester.check(model)
    model.set_filter("db")
    qtmodeltester.check(model)
    assert [e.key for e in model.entries()] == ["node:2"]
    model.set_filter("zzz")
    assert model.rowCount() == 0


def test_ctrl_k_filters_and_enter_opens_the_node(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, qtbot: QtBot
) -> None:
    web = run(enrolled(core, "web-1"))
    run(enrolled(core, "db-1"))
    run(sign_in(ctx, core))
    run(until(lambda: ctx.model.rowCount() == 2, "two nodes"))
    window.show()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    window.fleet.search.setFocus()  # Ctrl+K is a line edit's own key too: the palette must still win
    qtbot.keyClick(window.fleet.search, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.palette_popup is not None and window.palette_popup.isVisible())
    palette = window.palette_popup
    assert palette is not None
    texts = [e.text for e in palette.model.entries()]
    assert "Open node web-1" in texts and "Open node db-1" in texts and "Alerts" in texts
    qtbot.keyClicks(palette.filter, "web")
    assert palette.model.entries()[0].text == "Open node web-1"
    assert all("db-1" not in e.text for e in palette.model.entries())
    qtbot.keyClick(palette.filter, Qt.Key.Key_Return)
    assert web.node_id is not None
    qtbot.waitUntil(lambda: web.node_id in window.node_views)
    assert window.tabs.currentWidget() is window.node_views[web.node_id]
    assert window.palette_popup is None

    # Down then Enter runs the second match; Esc closes without running anything.
    palette = window.open_palette()
    qtbot.keyClicks(palette.filter, "audit")
    assert palette.list.currentIndex().row() == 0
    qtbot.keyClick(palette.filter, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: window.palette_popup is None)
    assert window.audit is None


def test_the_palette_lists_only_what_the_role_can_use(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    run(enrolled(core, "web-1"))
    run(core.user_token("vera", "viewer"))
    run(ctx.signin.sign_in(profile_for(core, "vera"), "password123"))
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "live link"))
    run(until(lambda: ctx.model.rowCount() == 1, "the node"))
    viewer = {e.text for e in window.palette_entries()}
    assert {"Open node web-1", "Alerts", "Refresh", "Fleet"} <= viewer
    assert not {"Console", "Audit log", "Users", "Add server…"} & viewer
    # Even a key typed by hand runs nothing the role cannot do.
    window.run_palette_entry("view:audit")
    assert window.audit is None

    run(sign_in(ctx, core))
    admin = {e.text for e in window.palette_entries()}
    assert {"Console", "Audit log", "Users", "Add server…"} <= admin


def test_shortcuts_exist_and_menus_show_them(
    window: MainWindow, ctx: AppContext, run: Run, core: RunningCore, qtbot: QtBot
) -> None:
    must = {
        window.connect_action,
        window.settings_action,
        window.signout_action,
        window.fleet.refresh_action,
        window.alerts_action,
        window.console_action,
        window.audit_action,
        window.users_action,
        window.add_server_action,
        window.sessions_action,
        window.palette_action,
        window.next_tab_action,
        window.previous_tab_action,
        window.close_tab_action,
        window.quit_action,
        *window.batch.actions,
    }
    in_menus = {a for menu in window.menus for a in menu.actions()}
    assert must <= in_menus
    keys = [a.shortcut().toString(QKeySequence.SequenceFormat.NativeText) for a in must]
    assert all(keys), keys
    assert len(set(keys)) == len(keys)  # no two actions share a key
    assert window.alerts_action.toolTip().endswith("(Ctrl+Shift+A)")
    assert {m.title() for m in window.menus} == {"&File", "&View", "&Nodes", "&Account"}

    web = run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    assert "(Ctrl+Shift+X)" in window.console_action.toolTip()  # kept when the session changes it
    window.show()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    assert web.node_id is not None
    view = window.open_node(web.node_id)
    assert isinstance(view, NodeView)
    qtbot.keyClick(window, Qt.Key.Key_Tab, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentWidget() is window.fleet
    qtbot.keyClick(window, Qt.Key.Key_Tab, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentWidget() is view
    qtbot.keyClick(window, Qt.Key.Key_W, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: web.node_id not in window.node_views)
    qtbot.keyClick(window, Qt.Key.Key_W, Qt.KeyboardModifier.ControlModifier)  # the Fleet tab stays
    assert window.tabs.count() == 1
    qtbot.keyClick(
        window, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    )
    qtbot.waitUntil(lambda: window.alerting is not None)
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert window.tabs.currentWidget() is window.fleet
    qtbot.waitUntil(lambda: QApplication.focusWidget() is window.fleet.search)
    # A key without modifiers: Qt keeps the last key event's modifiers as "held", which would turn
    # the next test's selectRow into a Ctrl+click.
    qtbot.keyClick(window.fleet.search, Qt.Key.Key_End)
    assert QApplication.keyboardModifiers() == Qt.KeyboardModifier.NoModifier
