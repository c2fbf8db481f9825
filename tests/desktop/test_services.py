"""A node's services against a real core: the list, its model, and confirmed actions."""

from __future__ import annotations

from typing import Any

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from servermanager.desktop.context import AppContext
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Run, enrolled, sign_in, until


def test_services_list_and_confirmed_restart(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, qtmodeltester: Any
) -> None:
    web = run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    window.show()
    assert web.node_id is not None
    view = window.open_node(web.node_id)
    panel = view.show_services()  # the first show loads the list
    listing: p.Command = run(web.recv_type(p.Command))
    assert listing.service == p.ServiceRequest(action="list")
    assert web.ws is not None
    services = [
        p.ServiceInfo("nginx", "active", "enabled", "A web server"),
        p.ServiceInfo("cron", "inactive", "disabled", "Job scheduler"),
        p.ServiceInfo("ssh", "active", "enabled", "OpenSSH"),
    ]
    run(
        web.ws.send_bytes(
            p.encode(p.CommandResult(command_id=listing.command_id, status="ok", services=services))
        )
    )
    run(until(lambda: panel.loads == 1, "the service list"))
    assert panel.model.rowCount() == 3
    assert [panel.proxy.index(r, 0).data() for r in range(3)] == ["cron", "nginx", "ssh"]
    qtmodeltester.check(panel.model)
    panel.filter.setText("web")
    assert panel.proxy.rowCount() == 1
    panel.filter.setText("")

    assert not panel.buttons["restart"].isEnabled()  # nothing selected yet
    assert panel.select("nginx")
    assert panel.buttons["restart"].isEnabled()
    box = panel.ask("restart")
    assert box is not None and box.isVisible()
    assert not web.ws.closed
    [confirm] = [b for b in box.buttons() if b.text() == "Restart"]
    confirm.click()
    cmd: p.Command = run(web.recv_type(p.Command))
    assert cmd.service == p.ServiceRequest(action="restart", name="nginx")
    run(web.ws.send_bytes(p.encode(p.CommandResult(command_id=cmd.command_id, status="ok", exit_code=0))))
    run(until(lambda: "done" in panel.status.text(), "the restart outcome"))
    assert panel.status.text() == "Restart nginx: done."

    # A cancelled confirmation sends nothing; a refusal is shown with the agent's words.
    box = panel.ask("stop")
    assert box is not None
    box.button(box.StandardButton.Cancel).click()
    box = panel.ask("disable")
    assert box is not None
    [confirm] = [b for b in box.buttons() if b.text() == "Disable"]
    confirm.click()
    cmd = run(web.recv_type(p.Command))
    assert cmd.service == p.ServiceRequest(action="disable", name="nginx")
    run(
        web.ws.send_bytes(
            p.encode(p.CommandResult(command_id=cmd.command_id, status="refused", message="not allowed here"))
        )
    )
    run(until(lambda: "failed" in panel.status.text(), "the refusal"))
    assert "not allowed here" in panel.status.text()
