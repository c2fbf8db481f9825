"""The audit log view against a real core: who did what, with filters."""

from __future__ import annotations

from typing import Any

from devkit.cores import RunningCore
from servermanager.desktop.audit import AuditPanel
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
