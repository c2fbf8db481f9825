"""The audit log view against a real core: who did what, with filters."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt

from devkit.cores import RunningCore
from servermanager.desktop.audit import MAX_COLUMN, AuditPanel
from servermanager.desktop.context import AppContext
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Run, enrolled, sign_in, until
from tests.desktop.test_console import answer


def test_audit_view_shows_actions_and_filters(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, qtmodeltester: Any
) -> None:
    web = run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    window.show()
    assert web.node_id is not None
    console = window.open_console([web.node_id])
    assert console is not None
    console.command.setText("hostname")
    console.run_button.click()
    run(answer(web, stdout="web-1\n"))
    run(until(lambda: not console.running, "the command"))

    audit = window.open_audit()
    assert isinstance(audit, AuditPanel)
    run(until(lambda: audit.loads >= 1, "the audit log"))
    actions = {audit.model.index(r, 2).data() for r in range(audit.model.rowCount())}
    assert "command.run" in actions and len(actions) > 1
    qtmodeltester.check(audit.model)

    audit.action.setText("command.run")
    audit.refresh()
    run(until(lambda: audit.loads >= 2, "the filtered log"))
    assert audit.model.rowCount() == 1
    assert audit.model.index(0, 1).data() == "admin"
    assert "hostname" in audit.model.index(0, 5).data()

    audit.action.setText("")
    audit.node.setText(str(web.node_id))
    audit.range.setCurrentIndex(0)  # last hour; changing the range reloads
    run(until(lambda: audit.loads >= 3, "the node's log"))
    assert audit.model.rowCount() >= 1
    assert all(str(web.node_id) in audit.model.index(r, 3).data() for r in range(audit.model.rowCount()))
    audit.user.setText("nobody")
    audit.refresh()
    run(until(lambda: audit.loads >= 4, "no one's log"))
    assert audit.model.rowCount() == 0


def test_audit_columns_fit_their_contents(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    web = run(enrolled(core, "a-node-with-a-rather-long-name"))
    run(sign_in(ctx, core))
    window.resize(1280, 760)
    window.show()
    assert web.node_id is not None
    run(ctx.rest.patch_node(web.node_id, group="somewhere-with-a-long-group-name"))
    audit = window.open_audit()
    assert isinstance(audit, AuditPanel)
    run(until(lambda: audit.loads >= 1 and audit.model.rowCount() > 0, "the audit log"))
    header = audit.table.horizontalHeader()
    for col in range(audit.model.columnCount() - 1):  # the last one, Detail, stretches
        wanted = max(audit.table.sizeHintForColumn(col), header.sectionSizeHint(col))
        assert header.sectionSize(col) >= min(wanted, MAX_COLUMN), audit.model.headerData(
            col, Qt.Orientation.Horizontal
        )
