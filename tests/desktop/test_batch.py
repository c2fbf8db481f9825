"""Batch operations in the app against a real core and real agents: the preview's reasons, the grid
filled with real exit codes, re-run on failed, CSV export, and group and tags edited on many nodes."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from devkit.cores import RunningCore
from servermanager.agent.exec.outbox import DISABLED_MESSAGE
from servermanager.agent.settings import ExecSettings
from servermanager.common import protocol as p
from servermanager.common import rest as m
from servermanager.desktop.batch import BatchDialog, BatchView, BulkEditDialog
from servermanager.desktop.context import AppContext
from servermanager.desktop.models.batch import NodeIdRole
from servermanager.desktop.window import MainWindow
from tests.desktop.agents import Agents
from tests.desktop.conftest import Run, enrolled, profile_for, sign_in, until
from tests.desktop.test_accessibility import unnamed
from tests.desktop.test_console import answer


@pytest.fixture
def agents(run: Run, tmp_path: Path, core: RunningCore) -> Iterator[Agents]:
    box = Agents(run, tmp_path)
    try:
        yield box
    finally:
        box.stop()


def _rename(run: Run, core: RunningCore, node_id: int, name: str) -> None:
    status, _ = run(
        core.request("PATCH", f"/api/v1/nodes/{node_id}", run(core.admin_token()), json={"name": name})
    )
    assert status == 200


def _grid(view: BatchView) -> dict[str, list[str]]:
    model = view.proxy
    return {
        model.index(r, 0).data(): [model.index(r, c).data() for c in range(1, 5)]
        for r in range(model.rowCount())
    }


def test_preview_then_run_then_rerun_on_failed_then_csv(
    window: MainWindow,
    ctx: AppContext,
    core: RunningCore,
    run: Run,
    agents: Agents,
    tmp_path: Path,
    qtbot: QtBot,
) -> None:
    everything = ExecSettings(enabled=True, allow=["*"])
    first = run(agents.start(core, "a", everything))
    second = run(agents.start(core, "b", ExecSettings(enabled=True, allow=["*"])))
    off = run(agents.start(core, "off", ExecSettings(enabled=False)))
    strict = run(agents.start(core, "strict", ExecSettings(enabled=True, allow=["uptime"])))
    for nid, name in ((first, "web-a"), (second, "web-b"), (off, "off"), (strict, "strict")):
        _rename(run, core, nid, name)
    gone = run(enrolled(core, "gone"))
    assert gone.node_id is not None
    run(gone.close())
    run(sign_in(ctx, core))
    window.show()
    ids = [first, second, off, strict, gone.node_id]
    run(until(lambda: all(ctx.model.node(n) is not None for n in ids), "the fleet"))
    run(until(lambda: (n := ctx.model.node(gone.node_id or 0)) is not None and not n.online, "gone offline"))
    window.fleet.select_nodes(ids)

    # The menu shows the batch actions with their keys; the action opens the dialog on the selection.
    nodes_menu = next(menu for menu in window.menus if menu.title() == "&Nodes")
    shown = {a.text(): a.shortcut().toString() for a in nodes_menu.actions()}
    assert shown == {
        "&Batch command…": "Ctrl+Shift+B",
        "Batch &service action…": "Ctrl+Shift+M",
        "Edit &group/tags…": "Ctrl+Shift+G",
    }
    qtbot.waitExposed(window)
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    qtbot.keyClick(
        window.fleet.table,
        Qt.Key.Key_B,
        Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier,
    )
    dialog = window.findChild(BatchDialog)
    assert isinstance(dialog, BatchDialog)
    assert dialog.targets.currentText().startswith("Selected nodes (5)")
    marks = tmp_path / "marks"
    marks.mkdir()
    # The first node to get here takes "a" and succeeds; the other takes "b" and fails with 3;
    # run again, it finds both taken and succeeds: a real exit code each time.
    dialog.command.setText(
        f"mkdir {marks}/a 2>/dev/null && exit 0; "
        f"mkdir {marks}/b 2>/dev/null && {{ echo first try >&2; exit 3; }}; echo second try"
    )
    assert not dialog.run_button.isEnabled()
    dialog.request_preview()
    run(until(lambda: dialog.previews == 1, "the preview"))
    verdicts = {
        dialog.model.index(r, 0).data(): (dialog.model.index(r, 1).data(), dialog.model.index(r, 2).data())
        for r in range(dialog.model.rowCount())
    }
    assert verdicts["web-a"] == ("will run", "") and verdicts["web-b"] == ("will run", "")
    assert verdicts["off"] == ("refuses", "remote execution is off on this agent ([exec] enabled = false)")
    assert verdicts["strict"] == ("refuses", "command not allowed by [exec] allow list")
    assert verdicts["gone"][0] == "refuses" and verdicts["gone"][1].startswith("offline")
    assert dialog.summary.text().startswith("Reaches 2 of 5 nodes; 3 refuse.")
    # Changing the request makes the preview stale: no Run until previewed again.
    dialog.timeout.setValue(30)
    assert not dialog.run_button.isEnabled() and dialog.model.rowCount() == 0
    dialog.request_preview()
    run(until(lambda: dialog.previews == 2, "the second preview"))
    assert dialog.run_button.isEnabled()
    dialog.run()

    view = window.tabs.currentWidget()
    assert isinstance(view, BatchView) and view in window.batch_views
    assert window.tabs.tabText(window.tabs.indexOf(view)) == f"Batch: mkdir {str(marks)[:18]}…"
    run(until(lambda: view.model.finished, "the batch to finish"))
    grid = _grid(view)
    winner, loser = ("web-a", "web-b") if grid["web-a"][0] == "ok" else ("web-b", "web-a")
    assert grid[winner][:2] == ["ok", "0"]
    assert grid[loser][:2] == ["failed", "3"]
    assert (grid["off"][0], grid["off"][1], grid["off"][3]) == ("refused", "", DISABLED_MESSAGE)
    assert (grid["strict"][0], grid["strict"][3]) == ("refused", "command not allowed by [exec] allow list")
    assert grid["gone"][0] == "offline"
    assert all(grid[n][2].endswith(" s") for n in (winner, loser))
    assert view.summary.text() == "1 ok · 1 failed · 2 refused · 1 offline"

    # Sortable: by status, worst first.
    view.table.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    assert view.proxy.index(0, 1).data() == "failed"

    # Enter (or a double-click) on a row opens that node's output.
    loser_id = second if loser == "web-b" else first
    row = next(r for r in range(view.proxy.rowCount()) if view.proxy.index(r, 0).data(NodeIdRole) == loser_id)
    view.table.setCurrentIndex(view.proxy.index(row, 0))
    window.activateWindow()  # the batch dialog was the active window
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    view.table.setFocus()
    qtbot.keyClick(view.table, Qt.Key.Key_Return)
    assert view.output_dialog is not None
    assert view.output_dialog.text.toPlainText() == "first try\n"
    assert view.output_dialog.windowTitle().startswith(f"{loser}: mkdir")
    view.output_dialog.close()

    # CSV of what the grid shows.
    path = view.export_csv(str(tmp_path / "batch.csv"))
    assert path is not None
    lines = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    assert {r["node"]: (r["status"], r["exit_code"]) for r in lines} == {
        winner: ("ok", "0"),
        loser: ("failed", "3"),
        "off": ("refused", ""),
        "strict": ("refused", ""),
        "gone": ("offline", ""),
    }

    # Re-run on failed: only the failed node and the offline one, as a new command.
    first_id = view.model.command_id
    assert view.rerun_action.isEnabled()
    window.activateWindow()  # the output dialog was the active window
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)
    view.table.setFocus()
    qtbot.keyClick(view.table, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    run(until(lambda: view.model.command_id not in (None, first_id) and view.model.finished, "the re-run"))
    assert sorted(r.node_id for r in view.model.rows) == sorted([loser_id, gone.node_id])
    again = _grid(view)
    assert again[loser][:2] == ["ok", "0"] and again["gone"][0] == "offline"
    _, record = run(core.request("GET", f"/api/v1/commands/{view.model.command_id}", run(core.admin_token())))
    assert sorted(r["node_id"] for r in record["runs"]) == sorted([loser_id, gone.node_id])
    assert view.model.rerun_ids() == [gone.node_id]


def test_a_service_action_previews_by_the_allow_list(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, agents: Agents
) -> None:
    nginx = run(agents.start(core, "svc", ExecSettings(enabled=True, allow=["service status nginx"])))
    other = run(agents.start(core, "echo", ExecSettings(enabled=True, allow=["echo *"])))
    admin = run(core.admin_token())
    status, _ = run(core.request("PATCH", f"/api/v1/nodes/{nginx}", admin, json={"group": "svc"}))
    assert status == 200
    run(sign_in(ctx, core))
    run(until(lambda: (n := ctx.model.node(nginx)) is not None and n.group == "svc", "the fleet"))
    run(until(lambda: ctx.model.node(other) is not None, "the fleet"))
    dialog = window.batch.open_dialog([nginx, other], service=True)
    assert dialog is not None
    dialog.action.setCurrentText("status")
    dialog.service_name.setText("nginx")
    dialog.request_preview()
    run(until(lambda: dialog.previews == 1, "the preview"))
    by_node = {
        dialog.model.index(r, 0).data(NodeIdRole): dialog.model.index(r, 1).data()
        for r in range(dialog.model.rowCount())
    }
    assert by_node == {nginx: "will run", other: "refuses"}
    assert dialog.summary.text().endswith("Matched as: service status nginx")
    # A group: the nodes in it now, named one by one (the app signs per node).
    dialog.targets.setCurrentIndex(dialog.targets.findText("Group: svc"))
    assert not dialog.run_button.isEnabled()
    dialog.request_preview()
    run(until(lambda: dialog.previews == 2, "the group's preview"))
    assert [dialog.model.index(r, 0).data(NodeIdRole) for r in range(dialog.model.rowCount())] == [nginx]
    assert dialog.run_button.isEnabled()
    # A name is required before anything is asked.
    dialog.service_name.setText("")
    dialog.request_preview()
    assert dialog.error.text() == "Name the service."
    dialog.close()


def test_edit_group_and_tags_on_many_nodes(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, qtmodeltester: Any
) -> None:
    a = run(enrolled(core, "a"))
    b = run(enrolled(core, "b"))
    c = run(enrolled(core, "c"))
    admin = run(core.admin_token())
    status, _ = run(
        core.request("PATCH", f"/api/v1/nodes/{a.node_id}", admin, json={"tags": ["staging", "x"]})
    )
    assert status == 200
    run(sign_in(ctx, core))
    ids = [a.node_id, b.node_id, c.node_id]
    run(until(lambda: all(ctx.model.node(n or 0) is not None for n in ids), "the fleet"))
    window.fleet.select_nodes([n for n in ids if n is not None])
    window.batch.edit_action.trigger()
    dialog = window.findChild(BulkEditDialog)
    assert isinstance(dialog, BulkEditDialog)
    assert sorted(dialog.node_ids) == sorted(n for n in ids if n is not None)
    # Node c disappears before the save: its PATCH fails and says so, the others are saved.
    status, _ = run(core.request("DELETE", f"/api/v1/nodes/{c.node_id}", admin))
    assert status in (200, 204)
    dialog.set_group.setChecked(True)
    dialog.group.setCurrentText("web")
    dialog.add_tags.setText("prod, eu")
    dialog.remove_tags.setText("staging")
    dialog.save()
    run(until(lambda: dialog.saves == 1, "the edits"))
    assert dialog.summary.text() == "Saved 2 of 3 nodes."
    assert dialog.errors.count() == 1
    assert dialog.errors.item(0).text() == "c: That node no longer exists."
    _, nodes = run(core.request("GET", "/api/v1/nodes", admin))
    got = {n["name"]: (n["group"], n["tags"]) for n in nodes["nodes"]}
    assert got == {"a": ("web", ["eu", "prod", "x"]), "b": ("web", ["eu", "prod"])}
    # Applied to the table at once, not only when the socket repeats it.
    node = ctx.model.node(a.node_id or 0)
    assert node is not None and node.group == "web" and sorted(node.tags) == ["eu", "prod", "x"]
    # One audit row per node edited.
    _, audit = run(core.request("GET", f"/api/v1/audit?action=node.update&node={b.node_id}", admin))
    assert [(e["action"], e["result"]) for e in audit["entries"]] == [("node.update", "ok")]
    # Bad tags are refused in the dialog, before any request.
    dialog.add_tags.setText("no spaces?")
    dialog.save()
    assert dialog.summary.text().startswith("Tags may hold")
    assert dialog.saves == 1
    dialog.close()


def test_the_grid_fills_from_rest_polls_when_the_socket_brings_nothing(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, qtmodeltester: Any
) -> None:
    web = run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    assert web.node_id is not None
    view = BatchView(ctx)
    view.poll_every = 0.05
    # No live events at all, as while the socket is down: the REST checks bring output and results.
    view.stop_listening()
    view.start(m.Targets(nodes=[web.node_id]), "df -h", 10.0, [(web.node_id, "web-1")])
    cmd = run(answer(web, stdout="/dev/sda1 50%\n", code=7))
    assert cmd.shell == "df -h"
    run(until(lambda: view.model.finished, "the result by REST"))
    qtmodeltester.check(view.model)
    assert _grid(view)["web-1"][:2] == ["failed", "7"]
    row = view.model.row(web.node_id)
    assert row is not None and row.output == "/dev/sda1 50%\n"
    assert view.summary.text() == "1 failed"
    view.shutdown()
    view.deleteLater()


def test_the_batch_views_are_named_for_screen_readers(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    web = run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    assert web.node_id is not None
    run(until(lambda: ctx.model.node(web.node_id or 0) is not None, "the node"))
    command = window.batch.open_dialog([web.node_id])
    service = window.batch.open_dialog([web.node_id], service=True)
    edit = window.batch.open_bulk_edit([web.node_id])
    view = BatchView(ctx)
    view.start(m.Targets(nodes=[web.node_id]), "uptime", 5.0, [(web.node_id, "web-1")])
    run(answer(web, stdout="up\n"))
    run(until(lambda: view.model.finished, "the run"))
    view.table.selectRow(0)
    output = view.open_output()
    for root in (command, service, edit, view, output):
        assert root is not None
        assert unnamed(root) == [], type(root).__name__
    view.shutdown()


def test_a_viewer_gets_no_batch_operations(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    web = run(enrolled(core, "web-1"))
    run(core.user_token("vera", "viewer"))
    run(ctx.signin.sign_in(profile_for(core, "vera"), "password123"))
    run(until(lambda: ctx.model.node(web.node_id or 0) is not None, "the node"))
    assert web.node_id is not None
    assert not any(a.isEnabled() for a in window.batch.actions)
    assert window.batch.open_dialog([web.node_id]) is None
    assert window.batch.open_bulk_edit([web.node_id]) is None
    assert "action:batch-command" not in {e.key for e in window.palette_entries()}
    # The core refuses a viewer's preview as it refuses the run: the same door.
    session = ctx.rest.session
    assert session is not None
    body = {"targets": {"nodes": [web.node_id]}, "command": "uptime"}
    status, body = run(core.request("POST", "/api/v1/commands/preview", session.access_token, json=body))
    assert status == 403 and body["error"]["code"] == "forbidden"


def test_cancel_run_stops_what_still_runs(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    web = run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    assert web.node_id is not None
    view = BatchView(ctx)
    view.start(m.Targets(nodes=[web.node_id]), "sleep 600", 900.0, [(web.node_id, "web-1")])
    cmd = run(web.recv_type(p.Command))
    run(until(lambda: view.cancel_action.isEnabled(), "the run to be cancellable"))
    assert not view.rerun_action.isEnabled()  # nothing to re-run while it runs
    view.cancel_action.trigger()
    cancel = run(web.recv_type(p.CommandCancel))
    assert cancel.command_id == cmd.command_id
    assert web.ws is not None
    result = p.CommandResult(command_id=cmd.command_id, status="cancelled", duration=1.5, message="cancelled")
    run(web.ws.send_bytes(p.encode(result)))
    run(until(lambda: view.model.finished, "the cancelled result"))
    assert _grid(view)["web-1"][0] == "cancelled" and not view.cancel_action.isEnabled()
    assert view.model.rerun_ids() == []  # cancelled on purpose: not a failure to re-run
    view.shutdown()
