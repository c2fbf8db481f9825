"""An alert's incident snapshot in the Alerts tab: the process tables and the journal, and, against a
real core, the snapshot appearing in the detail of a selected alert as soon as its agent answers."""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import QItemSelectionModel

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from servermanager.common import rest as m
from servermanager.common.alerts import Alert
from servermanager.common.incidents import IncidentSnapshot, ProcessInfo
from servermanager.core.alerts.incidents import AWAITED
from servermanager.desktop.alerts import describe
from servermanager.desktop.context import AppContext
from servermanager.desktop.snapshot import NO_JOURNAL, NO_SNAPSHOT, ProcessesModel, SnapshotView
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Run, enrolled, sign_in, until
from tests.helpers.core import RawAgent

NOW = 1_700_000_000.0
PG = ProcessInfo(pid=4242, name="postgres", cpu_pct=71.23, rss=3 << 30, user="postgres", read_bps=0,
                 write_bps=5 << 20, cmd="postgres: checkpointer")  # fmt: skip
NGINX = ProcessInfo(pid=77, name="nginx", cpu_pct=12.0, rss=40 << 20)
SNAP = IncidentSnapshot(
    ts=NOW, window=0.4, top_cpu=[PG, NGINX], top_memory=[PG], journal=["kernel: oom-killer woke"],
    note="journal: only the last 1 of 3 lines fit",
)  # fmt: skip


def test_processes_read_as_the_rest_of_the_app(qtmodeltester: Any) -> None:
    model = ProcessesModel()
    qtmodeltester.check(model)
    model.set_records([PG, NGINX])
    qtmodeltester.check(model)
    row = [model.index(0, c).data() for c in range(model.columnCount())]
    assert row == [
        "4242",
        "postgres",
        "postgres",
        "71.2%",
        "3.00 GiB",
        "0 B/s",
        "5.00 MiB/s",
        "postgres: checkpointer",
    ]
    assert [model.index(1, c).data() for c in (2, 5, 6, 7)] == ["\N{EN DASH}"] * 3 + [""]


def test_the_view_shows_a_snapshot_or_why_there_is_none(qtbot: Any) -> None:
    view = SnapshotView()
    qtbot.addWidget(view)
    assert view.caption.text() == NO_SNAPSHOT and view.by_cpu.rowCount() == 0
    view.show_snapshot(SNAP, None)
    assert (view.by_cpu.rowCount(), view.by_memory.rowCount()) == (2, 1)
    assert view.journal.toPlainText() == "kernel: oom-killer woke"
    assert view.caption.text().endswith("measured over 0.4 s. CPU is a share of the whole machine.\n"
                                        "journal: only the last 1 of 3 lines fit")  # fmt: skip
    view.show_snapshot(IncidentSnapshot(ts=NOW, window=0.4, top_cpu=[NGINX], top_memory=[]), None)
    assert view.journal.toPlainText() == "" and view.journal.placeholderText() == NO_JOURNAL
    view.show_snapshot(None, "no snapshot: snapshots are off in this agent's config")
    assert view.caption.text() == "no snapshot: snapshots are off in this agent's config"
    assert view.by_cpu.rowCount() == 0 and view.journal.toPlainText() == ""


def test_the_story_says_what_ran_then() -> None:
    alert = Alert(id=1, rule_id=1, rule="cpu high", node_id=1, node="web-1", metric="cpu_pct", op=">",
                  threshold=90.0, state="firing", severity="warning", value=97.0, peak=97.0,
                  started_at=NOW - 60, fired_at=NOW - 60)  # fmt: skip
    text = describe(m.AlertDetail(alert=alert, transitions=[], deliveries=[], snapshot=SNAP), now=NOW)
    assert "\nSnapshot: top: postgres 71 %, nginx 12 % (the Snapshot tab has it all)\n" in text
    text = describe(m.AlertDetail(alert=alert, transitions=[], deliveries=[], snapshot_note=AWAITED), now=NOW)
    assert f"\nSnapshot: {AWAITED}\n" in text


async def _request(agent: RawAgent) -> p.IncidentRequest:
    for frame in agent.skipped:
        if isinstance(frame, p.IncidentRequest):
            return frame
    req: p.IncidentRequest = await agent.recv_type(p.IncidentRequest)
    return req


def test_a_selected_alert_shows_its_snapshot_once_the_agent_answers(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, qtmodeltester: Any
) -> None:
    web = run(enrolled(core, "web-1", cpu=10.0))
    run(sign_in(ctx, core))
    window.show()
    token = run(core.admin_token())
    rule = {"name": "cpu high", "metric": "cpu_pct", "op": ">", "threshold": 90, "targets": {"all": True}}
    assert run(core.request("POST", "/api/v1/alert-rules", token, json=rule))[0] == 201
    view = window.open_alerting()
    assert view is not None
    panel = view.alerts
    run(until(lambda: panel.loads >= 1, "the alert list"))

    run(web.send_samples(web.make(1, cpu=97.0, ts=time.time())))
    run(until(lambda: panel.model.rowCount() == 1, "the firing alert"))
    req = run(_request(web))
    panel.table.selectionModel().select(
        panel.model.index(0, 0),
        QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
    )
    run(until(lambda: panel.detail_loads >= 1, "the alert's story"))
    assert panel.snapshot.caption.text() == AWAITED  # asked, not answered yet
    loads = panel.detail_loads

    snap = IncidentSnapshot(
        ts=time.time(), window=0.4, top_cpu=[PG, NGINX], top_memory=[PG, NGINX], journal=None
    )
    assert web.ws is not None
    run(web.ws.send_bytes(p.encode(p.Incident(request_id=req.request_id, snapshot=snap))))
    # The core announces the alert again once the snapshot is stored; the panel reloads its story.
    run(until(lambda: panel.detail_loads > loads and panel.snapshot.by_cpu.rowCount() == 2, "the snapshot"))
    tab = panel.snapshot
    assert [tab.by_cpu.record(i).name for i in range(2)] == ["postgres", "nginx"]  # type: ignore[union-attr]
    assert tab.memory_table.model() is tab.by_memory and tab.by_memory.rowCount() == 2
    assert tab.journal.placeholderText() == NO_JOURNAL
    assert "Snapshot: top: postgres 71 %, nginx 12 %" in panel.detail.toPlainText()
    panel.detail_tabs.setCurrentWidget(tab)
    assert tab.cpu_table.isVisible()
    qtmodeltester.check(tab.by_cpu)
