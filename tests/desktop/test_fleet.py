"""The fleet table against a real core and real agents: snapshot, live samples, filters, selection, edits."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt

from servermanager.desktop.client import LinkState
from servermanager.desktop.context import AppContext
from servermanager.desktop.fleet import Col, NodeIdRole, PercentRole, SortRole
from servermanager.desktop.fleetview import VIEWER_HINT
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Run, enrolled, profile_for, sign_in, until
from tests.helpers.core import RunningCore


def _cell(window: MainWindow, node_id: int, col: Col, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
    model = window.ctx.model
    row = model.row_of(node_id)
    assert row is not None, f"node {node_id} is not in the table"
    return model.index(row, col).data(role)


def _visible_names(window: MainWindow) -> list[str]:
    proxy = window.fleet.proxy
    return sorted(proxy.index(r, Col.NAME).data() for r in range(proxy.rowCount()))


class Changes:
    """Counts what the model told its views, to prove updates are in place."""

    def __init__(self, model: Any) -> None:
        self.inserted = self.removed = self.resets = 0
        self.changed: list[tuple[int, int, int]] = []
        model.rowsInserted.connect(lambda *_: self._add("inserted"))
        model.rowsRemoved.connect(lambda *_: self._add("removed"))
        model.modelReset.connect(lambda: self._add("resets"))
        model.dataChanged.connect(lambda a, b, *_: self.changed.append((a.row(), a.column(), b.column())))

    def _add(self, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)


def test_table_fills_from_snapshot_and_updates_live(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    web = run(enrolled(core, "web-1", cpu=12.0))
    db = run(enrolled(core, "db-1", cpu=55.0, mem_pct=81.0))
    run(sign_in(ctx, core))
    assert ctx.model.rowCount() == 2
    assert web.node_id is not None and db.node_id is not None
    assert _cell(window, web.node_id, Col.CPU) == "12%"
    assert _cell(window, db.node_id, Col.MEM) == "81%"
    assert _cell(window, db.node_id, Col.MEM, PercentRole) == 81.0
    assert _cell(window, web.node_id, Col.STATUS) == "Online"
    assert _cell(window, web.node_id, Col.OS) == "Linux 12"
    assert _cell(window, web.node_id, Col.NET_IN) == "5 B/s"
    assert window.counts_label.text() == "2 online · 0 offline"

    window.show()
    assert window.fleet.select_node(db.node_id)
    changes = Changes(ctx.model)
    run(db.send_samples(db.make(1, cpu=97.0, mem_pct=81.0)))
    run(until(lambda: _cell(window, db.node_id, Col.CPU) == "97%", "the live sample in the table"))
    # In place: one dataChanged for that row's CPU cell, no inserts, removes or resets.
    assert (changes.inserted, changes.removed, changes.resets) == (0, 0, 0)
    row = ctx.model.row_of(db.node_id)
    assert (row, Col.CPU, Col.CPU) in changes.changed
    assert all(r == row for r, _, _ in changes.changed)
    assert not any(first <= Col.MEM <= last for _, first, last in changes.changed)
    assert window.fleet.selected_node_id() == db.node_id

    # A node enrolled now arrives as a real insert.
    run(enrolled(core, "cache-1"))
    run(until(lambda: ctx.model.rowCount() == 3, "the new node"))
    assert changes.inserted == 1 and changes.resets == 0
    assert window.fleet.selected_node_id() == db.node_id


def test_search_and_filters(window: MainWindow, ctx: AppContext, core: RunningCore, run: Run) -> None:
    web1 = run(enrolled(core, "web-1"))
    web2 = run(enrolled(core, "web-2"))
    db = run(enrolled(core, "db-1"))
    run(sign_in(ctx, core))
    assert web1.node_id and web2.node_id and db.node_id
    run(ctx.client.patch_node(web1.node_id, group="frontend", tags=["eu", "prod"]))
    run(ctx.client.patch_node(web2.node_id, group="frontend", tags=["us"]))
    run(ctx.client.patch_node(db.node_id, group="storage", tags=["eu"]))
    panel = window.fleet
    run(until(lambda: panel.tag_filter.count() == 4, "tag facets from node_updated events"))
    assert [panel.group_filter.itemText(i) for i in range(panel.group_filter.count())] == [
        "All groups",
        "frontend",
        "storage",
    ]

    panel.search.setText("web")
    assert _visible_names(window) == ["web-1", "web-2"]
    panel.search.setText("eu")  # matches tags too
    assert _visible_names(window) == ["db-1", "web-1"]
    panel.search.setText("")

    panel.group_filter.setCurrentText("storage")
    assert _visible_names(window) == ["db-1"]
    panel.group_filter.setCurrentIndex(0)
    panel.tag_filter.setCurrentText("eu")
    assert _visible_names(window) == ["db-1", "web-1"]
    panel.tag_filter.setCurrentIndex(0)

    run(web2.close())
    run(until(lambda: ctx.model.counts() == (2, 1), "web-2 offline"))
    panel.status_filter.setCurrentText("Offline")
    assert _visible_names(window) == ["web-2"]
    panel.status_filter.setCurrentText("Online")
    assert _visible_names(window) == ["db-1", "web-1"]
    panel.status_filter.setCurrentIndex(0)
    assert _visible_names(window) == ["db-1", "web-1", "web-2"]


def test_selection_and_scroll_survive_updates_and_resorting(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    agents = [run(enrolled(core, f"node-{i:02d}", cpu=float(i))) for i in range(40)]
    run(sign_in(ctx, core))
    window.show()
    table = window.fleet.table
    table.sortByColumn(Col.CPU, Qt.SortOrder.DescendingOrder)
    target = agents[20]
    assert target.node_id is not None
    assert window.fleet.select_node(target.node_id)
    table.scrollTo(table.selectionModel().selectedRows()[0])
    scroll = table.verticalScrollBar().value()
    assert scroll > 0

    # Samples for other nodes change cells but not the order: selection and scroll stay put.
    for agent in agents[:5]:
        run(agent.send_samples(agent.make(1, cpu=float(agents.index(agent)) + 0.5)))
    run(until(lambda: _cell(window, agents[4].node_id or 0, Col.CPU, SortRole) == 4.5, "samples applied"))
    assert window.fleet.selected_node_id() == target.node_id
    assert table.verticalScrollBar().value() == scroll

    # The selected node's own update moves it to the top of the CPU sort; it stays selected.
    run(target.send_samples(target.make(1, cpu=99.0)))
    run(until(lambda: window.fleet.proxy.index(0, Col.NAME).data() == "node-20", "resort"))
    assert window.fleet.selected_node_id() == target.node_id


def test_models_pass_the_model_tester(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, qtmodeltester: Any
) -> None:
    a = run(enrolled(core, "a", cpu=5.0))
    b = run(enrolled(core, "b", cpu=6.0))
    run(sign_in(ctx, core))
    qtmodeltester.check(ctx.model)
    qtmodeltester.check(window.fleet.proxy)
    # The testers stay attached: live inserts, changes and removes are checked as they happen.
    window.fleet.search.setText("a")
    run(a.send_samples(a.make(1, cpu=70.0)))
    c = run(enrolled(core, "c"))
    run(until(lambda: ctx.model.rowCount() == 3, "c"))
    assert b.node_id is not None and c.node_id is not None
    run(ctx.client.delete_node(b.node_id))
    run(until(lambda: ctx.model.rowCount() == 2, "b removed"))
    window.fleet.search.setText("")
    window.fleet.status_filter.setCurrentText("Offline")
    run(c.close())
    run(until(lambda: window.fleet.proxy.rowCount() == 1, "c offline and shown"))
    ctx.model.clear()
    assert window.fleet.proxy.rowCount() == 0


def test_double_click_opens_the_node_view(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    agent = run(enrolled(core, "web-1", cpu=42.0))
    run(sign_in(ctx, core))
    window.show()
    index = window.fleet.proxy.index(0, Col.NAME)
    window.fleet.table.doubleClicked.emit(index)
    assert agent.node_id is not None
    view = window.node_views[agent.node_id]
    assert window.tabs.currentWidget() is view
    assert view.title.text() == "web-1"
    assert view.meters["cpu"].text.startswith("42%")
    assert view.fact_labels["hostname"].text() == "web-1"
    assert view.fact_labels["cpu"].text() == "Test CPU (2 cores)"
    run(agent.send_samples(agent.make(1, cpu=64.0)))
    run(until(lambda: view.meters["cpu"].text.startswith("64%"), "the live gauge"))


def test_viewer_sees_edit_controls_disabled(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    run(enrolled(core, "web-1"))
    run(core.user_token("vera", "viewer"))
    run(ctx.signin.sign_in(profile_for(core, "vera"), "password123"))
    run(until(lambda: ctx.client.state == LinkState.CONNECTED, "live link"))
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
    run(until(lambda: _cell(window, agent.node_id or 0, Col.NAME) == "frontend-1", "rename"))
    assert _cell(window, agent.node_id, Col.GROUP) == "frontend"
    assert _cell(window, agent.node_id, Col.TAGS) == "eu, prod"
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


def test_selection_model_survives_a_removed_neighbour(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    agents = [run(enrolled(core, f"n{i}")) for i in range(3)]
    run(sign_in(ctx, core))
    table = window.fleet.table
    proxy = window.fleet.proxy
    last = proxy.index(2, 0)
    table.selectionModel().select(
        last, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
    )
    chosen = last.data(NodeIdRole)
    first_id = proxy.index(0, 0).data(NodeIdRole)
    run(ctx.client.delete_node(first_id))
    run(until(lambda: ctx.model.rowCount() == 2, "removal"))
    assert window.fleet.selected_node_id() == chosen
    assert len(agents) == 3 and proxy.parent(QModelIndex()) == QModelIndex()
