"""The batch models on their own: the preview's rows, the result grid fed by replies and events, CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

from servermanager.common import protocol as p
from servermanager.common import rest as m
from servermanager.desktop.models.batch import BatchModel, NodeIdRole, PreviewModel, SortRole


def _run(node_id: int, status: str, exit_code: int | None = None, **kw: Any) -> m.CommandRunInfo:
    values: dict[str, Any] = {
        "node_id": node_id,
        "status": status,
        "exit_code": exit_code,
        "signal": None,
        "duration": None,
        "stdout": "",
        "stderr": "",
        "stdout_bytes": 0,
        "stderr_bytes": 0,
        "truncated": False,
        "message": None,
        "services": None,
        "finished_at": None,
    }
    values.update(kw)
    return m.CommandRunInfo(**values)


def _info(runs: list[m.CommandRunInfo]) -> m.CommandInfo:
    return m.CommandInfo(
        id="c0ffee00",
        user="admin",
        created_at=0.0,
        kind="exec",
        command="uptime",
        service=None,
        timeout=60.0,
        targets=m.Targets(all=True),
        expires_at=None,
        status="running",
        runs=runs,
    )


def test_preview_lists_refusals_first(qtmodeltester: Any) -> None:
    model = PreviewModel()
    qtmodeltester.check(model)
    preview = m.CommandPreview(
        line="uptime",
        runs=[
            m.PreviewRun(1, "web", "run"),
            m.PreviewRun(2, "db", "refused", "command not allowed by [exec] allow list"),
            m.PreviewRun(3, "old", "unknown", "an older agent"),
        ],
        run=1,
        queue=0,
        refused=1,
        unknown=1,
    )
    model.set_preview(preview, {1: "web", 2: "db (#2)", 3: "old"})
    qtmodeltester.check(model)
    rows = [[model.index(r, c).data() for c in range(3)] for r in range(model.rowCount())]
    assert rows == [
        ["db (#2)", "refuses", "command not allowed by [exec] allow list"],
        ["old", "agent decides", "an older agent"],
        ["web", "will run", ""],
    ]
    assert model.index(0, 0).data(NodeIdRole) == 2


def test_the_grid_follows_reply_events_and_polls(qtmodeltester: Any) -> None:
    model = BatchModel()
    qtmodeltester.check(model)
    model.start([(1, "web"), (2, "db"), (3, "gone")])
    qtmodeltester.check(model)
    assert model.counts() == {"queued": 3}
    model.apply_info(
        _info([_run(1, "sent"), _run(2, "sent"), _run(3, "offline", message="offline")]), fill=False
    )
    assert model.counts() == {"running": 2, "offline": 1}
    # Events of another command are not ours.
    other = p.CommandResult(command_id="other", status="ok", exit_code=0, node_id=1)
    assert not model.apply_event(other)
    model.apply_event(p.CommandOutput(command_id="c0ffee00", stream="stdout", data="up 3 days\n", node_id=1))
    model.apply_event(
        p.CommandResult(command_id="c0ffee00", status="ok", exit_code=0, duration=0.25, node_id=1)
    )
    model.apply_event(
        p.CommandResult(command_id="c0ffee00", status="timeout", exit_code=None, duration=60.0, node_id=2)
    )
    qtmodeltester.check(model)
    assert model.finished
    web = model.row(1)
    assert web is not None and web.output == "up 3 days\n"
    assert model.counts() == {"ok": 1, "timed out": 1, "offline": 1}
    assert model.rerun_ids() == [2, 3]
    # Sorted by status, worst first: the timeout before the offline node before the ok one.
    statuses = sorted(range(3), key=lambda r: model.index(r, 1).data(SortRole))
    assert [model.index(r, 1).data() for r in statuses] == ["timed out", "offline", "ok"]
    assert model.index(0, 3).data() == "0.25 s"
    assert model.index(1, 3).data() == "1m 0s"

    out = list(csv.reader(io.StringIO(model.to_csv())))
    assert out[0] == ["node_id", "node", "status", "exit_code", "signal", "duration_s", "message"]
    assert out[1:] == [
        ["1", "web", "ok", "0", "", "0.250", ""],
        ["2", "db", "timed out", "", "", "60.000", ""],
        ["3", "gone", "offline", "", "", "", "offline"],
    ]
    # A poll after the events fills in the full output, and a late duplicate result changes nothing.
    model.apply_info(_info([_run(1, "ok", 0, stdout="up 3 days\nmore\n", duration=0.25)]), fill=True)
    assert web.output == "up 3 days\nmore\n"
