"""The fleet model against a real core and real agents, and its columns from the metric table."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt
from pytestqt.qtbot import QtBot

from devkit.cores import RunningCore
from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from servermanager.common.alerts import Alert
from servermanager.desktop.context import AppContext
from servermanager.desktop.models.fleet import (
    AlertRole,
    NodeIdRole,
    NodesModel,
    PercentRole,
    SortRole,
    fleet_columns,
)
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import WITH_GPU, Run, enrolled, sign_in, until, with_gpu
from tests.helpers.core import host_facts, metrics


def cell(window: MainWindow, node_id: int, key: str, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
    """What the fleet table shows for a node in the column with this key."""
    model = window.ctx.model
    row = model.row_of(node_id)
    assert row is not None, f"node {node_id} is not in the table"
    return model.index(row, model.column(key)).data(role)


def visible_names(window: MainWindow) -> list[str]:
    proxy = window.fleet.proxy
    name = window.ctx.model.column("name")
    return sorted(proxy.index(r, name).data() for r in range(proxy.rowCount()))


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
    assert cell(window, web.node_id, "cpu_pct") == "12%"
    assert cell(window, db.node_id, "mem_pct") == "81%"
    assert cell(window, db.node_id, "mem_pct", PercentRole) == 81.0
    assert cell(window, web.node_id, "status") == "Online"
    assert cell(window, web.node_id, "os") == "Linux 12"
    assert cell(window, web.node_id, "net_rx_bps") == "5 B/s"
    assert window.counts_label.text() == "2 online · 0 offline"

    window.show()
    assert window.fleet.select_node(db.node_id)
    changes = Changes(ctx.model)
    run(db.send_samples(db.make(1, cpu=97.0, mem_pct=81.0)))
    run(until(lambda: cell(window, db.node_id, "cpu_pct") == "97%", "the live sample in the table"))
    # In place: one dataChanged for that row's CPU cell, no inserts, removes or resets.
    assert (changes.inserted, changes.removed, changes.resets) == (0, 0, 0)
    row = ctx.model.row_of(db.node_id)
    cpu, mem = ctx.model.column("cpu_pct"), ctx.model.column("mem_pct")
    assert (row, cpu, cpu) in changes.changed
    assert all(r == row for r, _, _ in changes.changed)
    assert not any(first <= mem <= last for _, first, last in changes.changed)
    assert window.fleet.selected_node_id() == db.node_id

    # A node enrolled now arrives as a real insert.
    run(enrolled(core, "cache-1"))
    run(until(lambda: ctx.model.rowCount() == 3, "the new node"))
    assert changes.inserted == 1 and changes.resets == 0
    assert window.fleet.selected_node_id() == db.node_id


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
    run(ctx.rest.delete_node(b.node_id))
    run(until(lambda: ctx.model.rowCount() == 2, "b removed"))
    window.fleet.search.setText("")
    window.fleet.status_filter.setCurrentText("Offline")
    run(c.close())
    run(until(lambda: window.fleet.proxy.rowCount() == 1, "c offline and shown"))
    ctx.model.clear()
    assert window.fleet.proxy.rowCount() == 0


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
    run(ctx.rest.delete_node(first_id))
    run(until(lambda: ctx.model.rowCount() == 2, "removal"))
    assert window.fleet.selected_node_id() == chosen
    assert len(agents) == 3 and proxy.parent(QModelIndex()) == QModelIndex()


# ---------------------------------------------------------------- columns from the metric table


def test_the_table_gives_the_columns_as_they_were() -> None:
    columns = fleet_columns()
    assert [c.header for c in columns] == [
        "Status",
        "Name",
        "Group",
        "Tags",
        "OS",
        "CPU",
        "Memory",
        "Disk",
        "Net in",
        "Net out",
        "Load",
        "Uptime",
        "Containers",
        "Last seen",
    ]
    # OS stretches (None) and "Last seen" is fixed, so it stays in sight at 1280 px (test_fleetview).
    # Status is widened by the view to fit its words in its font (widgets.status_width).
    assert [c.width for c in columns] == [90, 130, 90, 100, None, 84, 84, 84, 84, 84, 60, 80, 90, 104]
    assert [c.header for c in columns if c.bar] == ["CPU", "Memory", "Disk"]
    assert [c.header for c in columns if c.numeric] == [
        "CPU",
        "Memory",
        "Disk",
        "Net in",
        "Net out",
        "Load",
        "Uptime",
        "Containers",
        "Last seen",
    ]


def test_metric_cells_read_as_their_unit() -> None:
    node = p.NodeInfo(
        1,
        "web-1",
        "",
        [],
        True,
        time.time(),
        0.0,
        latest=mt.Sample(1, time.time(), metrics(cpu=12.4, load1=1.5, uptime=3 * 86400 + 7200.0)),
    )
    by_key = {c.key: c.cell(node, time.time()) for c in fleet_columns()}
    assert by_key["cpu_pct"] == ("12%", 12.4)
    assert by_key["disk_pct"] == ("40%", 40.0)  # derived: the fullest mount
    assert by_key["net_rx_bps"] == ("5 B/s", 5.0)
    assert by_key["load1"] == ("1.50", 1.5)
    assert by_key["uptime"] == ("3d 2h", 3 * 86400 + 7200.0)
    empty = p.NodeInfo(2, "new", "", [], False, None, 0.0)
    cells = {c.key: c.cell(empty, 0.0) for c in fleet_columns()}
    assert cells["cpu_pct"] == ("\N{EN DASH}", None)
    # No engine (or [containers] off) is not "0 running": a dash, sorted below every count.
    assert cells["containers"] == ("\N{EN DASH}", -1)
    assert by_key["containers"] == ("\N{EN DASH}", -1)
    counted = msgspec.structs.replace(empty, containers=0)
    assert {c.key: c.cell(counted, 0.0) for c in fleet_columns()}["containers"] == ("0", 0)


def test_one_more_row_is_one_more_column(qtbot: QtBot, qtmodeltester: Any) -> None:
    model = NodesModel(columns=fleet_columns(WITH_GPU))
    headers = [model.headerData(i, Qt.Orientation.Horizontal) for i in range(model.columnCount())]
    assert len(headers) == len(fleet_columns()) + 1
    assert headers[5:7] == ["CPU", "GPU"]  # the row's chart family puts it beside CPU
    qtmodeltester.check(model)
    reading = with_gpu(metrics(cpu=10.0), 77.0)
    node = p.NodeInfo(
        1, "gpu-1", "", [], True, time.time(), 0.0, host_facts("gpu-1"), latest=mt.Sample(1, 1.0, reading)
    )
    model.apply_snapshot([node])
    gpu = model.index(0, model.column("gpu_pct"))
    assert gpu.data() == "77%" and gpu.data(PercentRole) == 77.0 and gpu.data(SortRole) == 77.0


def _alert(id: int, node_id: int, severity: str = "warning", state: str = "firing") -> Alert:
    return Alert(
        id=id, rule_id=id, rule=f"rule {id}", node_id=node_id, node=f"n{node_id}", metric="cpu_pct", op=">",
        threshold=90.0, state=state, severity=severity, value=95.0, peak=95.0, started_at=0.0,
    )  # fmt: skip


def test_firing_alerts_show_in_the_status_column_and_sort_first(qtmodeltester: Any) -> None:
    model = NodesModel()
    now = time.time()
    model.apply_snapshot([p.NodeInfo(i, f"n{i}", "", [], True, now, 0.0) for i in (1, 2, 3)])
    status = model.column("status")
    changes = Changes(model)
    model.set_alerts(
        [_alert(10, 2), _alert(11, 3, "critical"), _alert(12, 3), _alert(13, 1, state="resolved")]
    )
    assert [model.index(r, status).data() for r in range(3)] == [
        "Online",
        "Online · 1 alert",
        "Online · 2 alerts",
    ]
    assert [model.index(r, status).data(AlertRole) for r in range(3)] == [None, "warning", "critical"]
    assert "critical: rule 11" in model.index(2, status).data(Qt.ItemDataRole.ToolTipRole)
    keys = sorted(range(3), key=lambda r: model.index(r, status).data(SortRole))
    assert keys == [2, 1, 0]  # online nodes with the worst alerts first
    assert {(r, c) for r, c, _ in changes.changed} == {(1, status), (2, status)}  # in place
    model.alert_changed(_alert(11, 3, "critical", state="resolved"))
    assert (
        model.index(2, status).data() == "Online · 1 alert"
        and model.index(2, status).data(AlertRole) == "warning"
    )
    model.alert_changed(_alert(10, 2, state="resolved"))
    model.alert_changed(_alert(99, 2, state="resolved"))  # never seen firing: nothing to do
    assert model.index(1, status).data() == "Online" and model.firing(2) == []
    qtmodeltester.check(model)
