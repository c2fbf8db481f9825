"""The command console against a real core, with RawAgents playing the agents; what a viewer may not do."""

from __future__ import annotations

import asyncio

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from servermanager.desktop.audit import AuditPanel
from servermanager.desktop.console import ConsolePanel, NodeOutput
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Run, enrolled, profile_for, sign_in, until
from tests.helpers.core import RawAgent


async def answer(
    agent: RawAgent, stdout: str = "", stderr: str = "", code: int = 0, status: str | None = None
) -> p.Command:
    """Play the agent's part for one command: output chunks, then the result."""
    cmd: p.Command = await agent.recv_type(p.Command)
    assert agent.ws is not None
    for stream, data in (("stdout", stdout), ("stderr", stderr)):
        if data:
            await agent.ws.send_bytes(
                p.encode(p.CommandOutput(command_id=cmd.command_id, stream=stream, data=data))
            )
    await agent.ws.send_bytes(
        p.encode(
            p.CommandResult(
                command_id=cmd.command_id,
                status=status or ("ok" if code == 0 else "failed"),  # type: ignore[arg-type]
                exit_code=code,
                duration=0.01,
                stdout_bytes=len(stdout),
                stderr_bytes=len(stderr),
            )
        )
    )
    return cmd


def _tab(console: ConsolePanel, node_id: int | None) -> NodeOutput:
    assert node_id is not None
    return console.outputs[node_id]


def test_console_streams_output_per_node_with_badges(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    web = run(enrolled(core, "web-1"))
    db = run(enrolled(core, "db-1"))
    run(sign_in(ctx, core))
    window.show()
    assert web.node_id is not None and db.node_id is not None
    window.fleet.select_nodes([web.node_id, db.node_id])
    assert sorted(window.fleet.selected_node_ids()) == sorted([web.node_id, db.node_id])
    window.fleet.run_button.click()
    console = window.console
    assert console is not None and window.tabs.currentWidget() is console
    assert sorted(console.targets) == sorted([web.node_id, db.node_id])
    assert "web-1" in console.targets_label.text() and "db-1" in console.targets_label.text()

    console.command.setText("uptime; echo oops >&2")
    console.timeout.setValue(5)
    console.run_button.click()
    cmd_web, _ = run(
        asyncio.gather(answer(web, stdout="up 1 day\n", stderr="oops\n"), answer(db, stderr="boom\n", code=3))
    )
    assert cmd_web.shell == "uptime; echo oops >&2" and cmd_web.timeout == 5
    out_web, out_db = _tab(console, web.node_id), _tab(console, db.node_id)
    run(until(lambda: out_web.done and out_db.done, "both results"))
    assert out_web.badge.text() == "ok"
    assert out_db.badge.text() == "failed exit 3"
    assert (out_web.stdout, out_web.stderr) == ("up 1 day\n", "oops\n")
    assert out_web.text.toPlainText() == "up 1 day\noops\n"
    assert out_db.text.toPlainText() == "boom\n"
    # stderr is drawn in another colour than stdout.
    doc = out_web.text.document()
    first, second = doc.findBlockByNumber(0), doc.findBlockByNumber(1)
    assert (
        first.begin().fragment().charFormat().foreground()
        != second.begin().fragment().charFormat().foreground()
    )
    assert not console.running and console.run_button.isEnabled() and not console.cancel_button.isEnabled()

    console.tabs.setCurrentWidget(out_db)
    console.copy_button.click()
    assert QApplication.clipboard().text() == "boom\n"

    # argv mode splits like a shell and sends an argv, no shell.
    console.argv.setChecked(True)
    console.command.setText("ls -l 'My Files'")
    console.run_button.click()
    cmd_web, _ = run(asyncio.gather(answer(web, stdout="x\n"), answer(db, code=0)))
    assert cmd_web.argv == ["ls", "-l", "My Files"] and cmd_web.shell is None
    run(until(lambda: not console.running, "second command done"))


def test_console_fills_in_output_the_socket_missed(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    web = run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    window.show()
    assert web.node_id is not None
    console = window.open_console([web.node_id])
    assert console is not None
    console.poll_every = 0.2
    # Output frames lost on the way: the result fetches the core's full record.
    ctx.live.command_output.disconnect(console._event)
    console.command.setText("df")
    console.run_button.click()
    run(answer(web, stdout="lots\n", stderr="warn\n"))
    out = _tab(console, web.node_id)
    run(until(lambda: out.text.toPlainText() == "lots\nwarn\n", "the output from REST"))
    assert out.badge.text() == "ok"
    # No live events at all: the REST check while it runs brings the result.
    ctx.live.command_result.disconnect(console._event)
    console.command.setText("df -h")
    console.run_button.click()
    run(answer(web, stdout="more\n", code=2))
    out = _tab(console, web.node_id)
    run(until(lambda: out.done, "the polled result"))
    assert out.badge.text() == "failed exit 2" and out.stdout == "more\n"


def test_console_cancel_and_history(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, qtbot: QtBot
) -> None:
    web = run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    window.show()
    assert web.node_id is not None
    console = window.open_console([web.node_id])
    assert console is not None
    console.command.setText("sleep 100")
    console.run_button.click()
    cmd: p.Command = run(web.recv_type(p.Command))
    run(until(lambda: console.command_id == cmd.command_id, "the command id"))
    assert console.running and console.cancel_button.isEnabled() and not console.run_button.isEnabled()
    assert _tab(console, web.node_id).badge.text() == "running…"
    console.cancel_button.click()
    cancel = run(web.recv_type(p.CommandCancel))
    assert cancel.command_id == cmd.command_id
    assert web.ws is not None
    run(
        web.ws.send_bytes(p.encode(p.CommandResult(command_id=cmd.command_id, status="cancelled", signal=15)))
    )
    run(until(lambda: _tab(console, web.node_id).done, "the cancelled result"))
    assert _tab(console, web.node_id).badge.text() == "cancelled"

    for text in ("echo one", "echo two"):
        console.command.setText(text)
        console.run_button.click()
        run(answer(web))
        run(until(lambda: not console.running, f"{text} done"))
    assert console.command.text() == ""
    console.command.setText("draft")
    qtbot.keyClick(console.command, Qt.Key.Key_Up)
    assert console.command.text() == "echo two"
    qtbot.keyClick(console.command, Qt.Key.Key_Up)
    assert console.command.text() == "echo one"
    qtbot.keyClick(console.command, Qt.Key.Key_Up)
    assert console.command.text() == "sleep 100"
    qtbot.keyClick(console.command, Qt.Key.Key_Up)  # the oldest stays
    assert console.command.text() == "sleep 100"
    qtbot.keyClick(console.command, Qt.Key.Key_Down)
    qtbot.keyClick(console.command, Qt.Key.Key_Down)
    assert console.command.text() == "echo two"
    qtbot.keyClick(console.command, Qt.Key.Key_Down)
    assert console.command.text() == "draft"
    assert console.command.history == ["sleep 100", "echo one", "echo two"]


def test_viewer_gets_no_remote_operations(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    web = run(enrolled(core, "web-1"))
    run(core.user_token("vera", "viewer"))
    run(ctx.signin.sign_in(profile_for(core, "vera"), "password123"))
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "live link"))
    window.show()
    assert web.node_id is not None
    assert not window.console_action.isEnabled() and not window.audit_action.isEnabled()
    assert window.open_console([web.node_id]) is None and window.open_audit() is None
    window.fleet.table.selectRow(0)
    assert not window.fleet.run_button.isEnabled()

    view = window.open_node(web.node_id)
    panel = view.show_services()
    assert not panel.refresh_button.isEnabled()
    assert all(not b.isEnabled() for b in panel.buttons.values())
    assert panel.loads == 0 and not panel.busy  # no request was even tried

    console = ConsolePanel(ctx)
    console.set_targets([web.node_id])
    assert not console.run_button.isEnabled() and not console.command.isEnabled()
    audit = AuditPanel(ctx)
    assert not audit.refresh_button.isEnabled() and audit.model.rowCount() == 0
    console.shutdown()
    audit.shutdown()
    console.deleteLater()
    audit.deleteLater()
