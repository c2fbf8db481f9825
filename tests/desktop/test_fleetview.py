"""The fleet panel against a real core: search and filters, selection, opening a node, editing by role."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QToolBar, QToolButton
from pytestqt.qtbot import QtBot

from devkit.cores import RunningCore
from servermanager.desktop.context import AppContext
from servermanager.desktop.fleetview import FIT_ORDER, VIEWER_HINT
from servermanager.desktop.models.fleet import SortRole
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.settings import WindowState
from servermanager.desktop.widgets import STATUS_DOT, STATUS_GAP, STATUS_LEFT, STATUS_RIGHT
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Run, enrolled, profile_for, sign_in, until
from tests.desktop.models.test_fleet import cell, visible_names
from tests.desktop.test_tray import _alert


def test_search_and_filters(window: MainWindow, ctx: AppContext, core: RunningCore, run: Run) -> None:
    web1 = run(enrolled(core, "web-1"))
    web2 = run(enrolled(core, "web-2"))
    db = run(enrolled(core, "db-1"))
    run(sign_in(ctx, core))
    assert web1.node_id and web2.node_id and db.node_id
    run(ctx.rest.patch_node(web1.node_id, group="frontend", tags=["eu", "prod"]))
    run(ctx.rest.patch_node(web2.node_id, group="frontend", tags=["us"]))
    run(ctx.rest.patch_node(db.node_id, group="storage", tags=["eu"]))
    panel = window.fleet
    run(until(lambda: panel.tag_filter.count() == 4, "tag facets from node_updated events"))
    assert [panel.group_filter.itemText(i) for i in range(panel.group_filter.count())] == [
        "All groups",
        "frontend",
        "storage",
    ]

    panel.search.setText("web")
    assert visible_names(window) == ["web-1", "web-2"]
    panel.search.setText("eu")  # matches tags too
    assert visible_names(window) == ["db-1", "web-1"]
    panel.search.setText("")

    panel.group_filter.setCurrentText("storage")
    assert visible_names(window) == ["db-1"]
    panel.group_filter.setCurrentIndex(0)
    panel.tag_filter.setCurrentText("eu")
    assert visible_names(window) == ["db-1", "web-1"]
    panel.tag_filter.setCurrentIndex(0)

    run(web2.close())
    run(until(lambda: ctx.model.counts() == (2, 1), "web-2 offline"))
    panel.status_filter.setCurrentText("Offline")
    assert visible_names(window) == ["web-2"]
    panel.status_filter.setCurrentText("Online")
    assert visible_names(window) == ["db-1", "web-1"]
    panel.status_filter.setCurrentIndex(0)
    assert visible_names(window) == ["db-1", "web-1", "web-2"]


def test_selection_and_scroll_survive_updates_and_resorting(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    agents = [run(enrolled(core, f"node-{i:02d}", cpu=float(i))) for i in range(40)]
    run(sign_in(ctx, core))
    window.show()
    table = window.fleet.table
    table.sortByColumn(ctx.model.column("cpu_pct"), Qt.SortOrder.DescendingOrder)
    target = agents[20]
    assert target.node_id is not None
    assert window.fleet.select_node(target.node_id)
    table.scrollTo(table.selectionModel().selectedRows()[0])
    scroll = table.verticalScrollBar().value()
    assert scroll > 0

    # Samples for other nodes change cells but not the order: selection and scroll stay put.
    for agent in agents[:5]:
        run(agent.send_samples(agent.make(1, cpu=float(agents.index(agent)) + 0.5)))
    run(until(lambda: cell(window, agents[4].node_id or 0, "cpu_pct", SortRole) == 4.5, "samples applied"))
    assert window.fleet.selected_node_id() == target.node_id
    assert table.verticalScrollBar().value() == scroll

    # The selected node's own update moves it to the top of the CPU sort; it stays selected.
    run(target.send_samples(target.make(1, cpu=99.0)))
    name = ctx.model.column("name")
    run(until(lambda: window.fleet.proxy.index(0, name).data() == "node-20", "resort"))
    assert window.fleet.selected_node_id() == target.node_id


def test_double_click_opens_the_node_view(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    agent = run(enrolled(core, "web-1", cpu=42.0))
    run(sign_in(ctx, core))
    window.show()
    index = window.fleet.proxy.index(0, ctx.model.column("name"))
    window.fleet.table.doubleClicked.emit(index)
    assert agent.node_id is not None
    view = window.node_views[agent.node_id]
    assert window.tabs.currentWidget() is view
    assert view.title.text() == "web-1"
    assert view.meters["cpu_pct"].text.startswith("42%")
    assert view.fact_labels["hostname"].text() == "web-1"
    assert view.fact_labels["cpu"].text() == "Test CPU (2 cores)"
    run(agent.send_samples(agent.make(1, cpu=64.0)))
    run(until(lambda: view.meters["cpu_pct"].text.startswith("64%"), "the live gauge"))


def test_viewer_sees_edit_controls_disabled(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    run(enrolled(core, "web-1"))
    run(core.user_token("vera", "viewer"))
    run(ctx.signin.sign_in(profile_for(core, "vera"), "password123"))
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "live link"))
    panel = window.fleet
    window.show()
    panel.table.selectRow(0)
    assert panel.selected_node_id() is not None
    assert not panel.edit_button.isEnabled() and not panel.remove_button.isEnabled()
    assert panel.edit_button.toolTip() == VIEWER_HINT
    assert panel.edit_selected() is None and panel.remove_selected() is None
    assert window.user_label.text() == "vera (viewer)"


def test_operator_renames_regroups_tags_and_removes(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    agent = run(enrolled(core, "web-1"))
    other = run(enrolled(core, "web-2"))
    run(sign_in(ctx, core))
    panel = window.fleet
    window.show()
    assert agent.node_id is not None and other.node_id is not None
    panel.select_node(agent.node_id)
    assert panel.edit_button.isEnabled()
    dialog = panel.edit_selected()
    assert dialog is not None
    dialog.name_edit.setText("frontend-1")
    dialog.group_box.setCurrentText("frontend")
    dialog.tags_edit.setText("eu, prod bad tag!")
    dialog._submit()
    assert dialog.error.text().startswith("Tags may hold")
    dialog.tags_edit.setText("eu, prod")
    dialog._submit()
    run(until(lambda: cell(window, agent.node_id or 0, "name") == "frontend-1", "rename"))
    assert cell(window, agent.node_id, "group") == "frontend"
    assert cell(window, agent.node_id, "tags") == "eu, prod"
    status, body = run(core.request("GET", f"/api/v1/nodes/{agent.node_id}", run(core.admin_token())))
    assert (status, body["name"], body["group"], body["tags"]) == (
        200,
        "frontend-1",
        "frontend",
        ["eu", "prod"],
    )

    panel.select_node(other.node_id)
    box = panel.remove_selected()
    assert box is not None
    remove = next(b for b in box.buttons() if b.text() == "Remove")
    remove.click()
    run(until(lambda: ctx.model.node(other.node_id or 0) is None, "removal"))
    status, _ = run(core.request("GET", f"/api/v1/nodes/{other.node_id}", run(core.admin_token())))
    assert status == 404
    assert panel.selected_node_id() is None or panel.selected_node_id() == agent.node_id


def test_last_seen_is_in_sight_at_the_default_size(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    window.resize(1280, 760)
    window.show()
    table = window.fleet.table
    run(until(lambda: ctx.model.rowCount() == 1, "the node listed"))
    header = table.horizontalHeader()
    last = ctx.model.column("last_seen")
    run(until(lambda: header.sectionViewportPosition(last) > 0, "the header laid out"))
    assert table.horizontalScrollBar().maximum() == 0  # no scrolling sideways
    right = header.sectionViewportPosition(last) + header.sectionSize(last)
    assert right <= table.viewport().width()
    assert header.sectionSize(last) >= header.sectionSizeHint(last)  # "Last seen" is not cut


def test_f5_refreshes_the_fleet_and_enter_opens_a_node(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, qtbot: QtBot
) -> None:
    web = run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    window.show()
    qtbot.waitExposed(window)
    assert web.node_id is not None
    run(until(lambda: ctx.model.node(web.node_id or 0) is not None, "the node listed"))
    refresh = window.fleet.refresh_action
    assert refresh.shortcut().toString() == "F5" and refresh in window.actions()
    # A row the app lost track of comes back on F5, without waiting for the live link.
    ctx.model.remove_node(web.node_id)
    window.activateWindow()
    qtbot.keyClick(window.fleet.table, Qt.Key.Key_F5)
    run(until(lambda: window.fleet.refreshes == 1, "the refresh"))
    assert ctx.model.node(web.node_id) is not None

    table = window.fleet.table
    assert window.fleet.select_node(web.node_id)
    table.setCurrentIndex(table.model().index(0, 1))
    table.setFocus()
    qtbot.keyClick(table, Qt.Key.Key_Return)
    assert web.node_id in window.node_views
    assert window.tabs.currentWidget() is window.node_views[web.node_id]


def test_nodes_with_the_same_name_are_told_apart(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    one = run(enrolled(core, "vm"))
    two = run(enrolled(core, "vm"))
    other = run(enrolled(core, "db-1"))
    run(sign_in(ctx, core))
    assert one.node_id and two.node_id and other.node_id
    run(until(lambda: ctx.model.rowCount() == 3, "three nodes"))
    names = sorted(visible_names(window))
    assert names == sorted(["db-1", f"vm (#{one.node_id})", f"vm (#{two.node_id})"])
    console = window.open_console([one.node_id, two.node_id])
    assert console is not None
    text = console.targets_label.text()
    assert f"vm (#{one.node_id})" in text and f"vm (#{two.node_id})" in text
    view = window.open_node(two.node_id)
    assert window.tabs.tabText(window.tabs.indexOf(view)) == f"vm (#{two.node_id})"
    assert view.title.text() == f"vm (#{two.node_id})"
    # Renamed apart, both drop the id again.
    run(ctx.rest.patch_node(two.node_id, name="vm-2"))
    run(until(lambda: "vm" in visible_names(window), "the twin's id dropped"))


def test_status_with_an_alert_fits_in_both_themes_and_sizes(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    web = run(enrolled(core, "web-1"))
    gone = run(enrolled(core, "db-1"))
    run(gone.close())
    run(sign_in(ctx, core))
    assert web.node_id is not None and gone.node_id is not None
    run(until(lambda: (n := ctx.model.node(gone.node_id or 0)) is not None and not n.online, "db-1 offline"))
    ctx.model.set_alerts(
        [_alert(1, node_id=web.node_id), _alert(2, node_id=gone.node_id), _alert(3, node_id=gone.node_id)]
    )
    window.show()
    table = window.fleet.table
    status = ctx.model.column("status")
    texts = {ctx.model.index(r, status).data() for r in range(ctx.model.rowCount())}
    assert texts == {"Online · 1 alert", "Offline · 2 alerts"}
    for theme in ("dark", "light"):
        ctx.settings.set("theme", theme)
        for width, height in ((1024, 640), (1920, 1080)):
            window.resize(width, height)
            run(until(lambda: table.viewport().width() > 0, "laid out"))
            room = table.horizontalHeader().sectionSize(status) - (
                STATUS_LEFT + STATUS_DOT + STATUS_GAP + STATUS_RIGHT
            )
            widest = max(table.fontMetrics().horizontalAdvance(t) for t in texts)
            assert widest <= room, (theme, width, widest, room)


def test_the_account_menu_is_shown_once(window: MainWindow) -> None:
    """The menu bar has Account; the toolbar no longer repeats it (it showed the same menu twice)."""
    toolbar = window.findChild(QToolBar, "mainToolbar")
    assert isinstance(toolbar, QToolBar)
    toolbar_texts = [a.text() for a in toolbar.actions()]
    assert "Account" not in toolbar_texts
    assert not [b for b in window.findChildren(QToolButton) if b.menu() is window.account_menu]
    titles = [a.text() for a in window.menuBar().actions()]
    assert titles.count("&Account") == 1


def test_a_narrow_window_drops_the_least_needed_columns_until_the_user_chooses(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, settings_file: Path
) -> None:
    run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    panel = window.fleet
    table = panel.table
    header = table.horizontalHeader()
    last = ctx.model.column("last_seen")
    window.resize(1024, 640)
    window.show()
    run(until(lambda: ctx.model.rowCount() == 1, "the node listed"))
    run(until(lambda: "tags" in panel.hidden_columns(), "the columns fitted to 1024 px"))
    hidden = panel.hidden_columns()
    assert hidden <= set(FIT_ORDER)
    assert "cpu_pct" not in hidden and "last_seen" not in hidden
    run(until(lambda: header.sectionViewportPosition(last) > 0, "the header laid out"))
    assert table.horizontalScrollBar().maximum() == 0  # no scrolling sideways
    assert header.sectionViewportPosition(last) + header.sectionSize(last) <= table.viewport().width()
    assert not panel._column_actions["tags"].isChecked() and panel.fit_action.isChecked()

    window.resize(1920, 1080)
    run(until(lambda: table.viewport().width() > 1800, "the window widened"))
    run(until(lambda: not panel.hidden_columns(), "every column back at 1920 px"))

    # Once the user picks, their choice decides whatever the width, and it is kept.
    view_menu = window.menus[1]
    assert panel.columns_menu.menuAction() in view_menu.actions()
    panel._column_actions["uptime"].trigger()
    assert panel.hidden_columns() == {"uptime"}
    assert not panel.fit_action.isChecked()
    window.resize(1024, 640)
    run(until(lambda: table.viewport().width() < 1024, "the window narrowed"))
    assert panel.hidden_columns() == {"uptime"}
    ctx.window_state.store.sync()
    kept = WindowState(QSettings(str(settings_file), QSettings.Format.IniFormat))
    assert kept.hidden_columns() == {"uptime"}

    panel.fit_action.trigger()  # back to what fits
    assert "tags" in panel.hidden_columns()
    ctx.window_state.store.sync()
    kept.store.sync()
    assert kept.hidden_columns() is None
