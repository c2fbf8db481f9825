"""The Logs tab against a real core and a real agent whose [logs] config allows one temp file:
sources, a one-shot load, follow with appended lines, stop, and the model's bounded scrollback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.cores import RunningCore
from servermanager.agent.link.connection import ConnState
from servermanager.agent.main import Agent
from servermanager.agent.settings import load_agent_settings
from servermanager.common import protocol as p
from servermanager.desktop.context import AppContext
from servermanager.desktop.logview import LogsModel
from servermanager.desktop.window import MainWindow
from tests.agent.logread.test_eventlog import T0, fake_with, formatter
from tests.desktop.conftest import Run, sign_in, until


@pytest.fixture
def agent(core: RunningCore, run: Run, tmp_path: Path) -> Iterator[Agent]:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("alpha\nbeta\ngamma\n")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'core = "{core.url}"\nstate_dir = "{tmp_path / "agent"}"\n'
        f'[logs]\njournal = false\nfiles = ["{logs}/*.log"]\n'
    )
    a = Agent(load_agent_settings(config_file=cfg, environ={}), run(core.enroll_token()))
    task = asyncio.get_event_loop().create_task(a.run())
    try:
        run(a.wait_state(ConnState.STREAMING))
        yield a
    finally:
        a.stop()
        run(asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10))
        a.close()


def test_logs_tab_loads_and_follows_a_file(
    window: MainWindow,
    ctx: AppContext,
    core: RunningCore,
    agent: Agent,
    run: Run,
    tmp_path: Path,
    qtmodeltester: Any,
) -> None:
    log = tmp_path / "logs" / "app.log"
    run(sign_in(ctx, core))
    window.show()
    assert agent.node_id is not None
    view = window.open_node(agent.node_id)
    panel = view.show_logs()
    run(until(lambda: panel.loads >= 1, "the log sources"))
    assert [panel.source.itemData(i) for i in range(panel.source.count())] == [str(log)]
    assert "journal = false" in panel.status.text()
    assert not panel.unit.isEnabled()  # journal-only filters are off for a file

    panel.lines.setValue(2)
    panel.load()
    run(until(lambda: panel.loads >= 2, "the lines"))
    assert [panel.model.index(r, 3).data() for r in range(panel.model.rowCount())] == ["beta", "gamma"]
    assert panel.status.text() == "2 lines"
    qtmodeltester.check(panel.model)

    panel.follow_button.setChecked(True)
    run(until(lambda: agent.logs.following == 1, "the agent to follow"))
    assert not panel.load_button.isEnabled()
    with log.open("a") as fh:
        fh.write("delta appended\n")
    run(
        until(
            lambda: panel.model.rowCount() and panel.model.entries[-1].message == "delta appended",
            "the new line",
        )
    )
    assert panel.model.index(panel.model.rowCount() - 1, 0).data() != ""  # followed lines carry a time
    panel.follow_button.setChecked(False)
    run(until(lambda: agent.logs.following == 0, "the follow to stop"))
    assert panel.status.text() == "Stopped following."
    assert panel.load_button.isEnabled()


def test_model_keeps_a_bounded_scrollback(qtmodeltester: Any) -> None:
    model = LogsModel(limit=5)
    model.append([p.LogEntry(None, None, None, f"l{i}") for i in range(3)])
    model.append([p.LogEntry(1.0, 3, "x.service", f"m{i}") for i in range(4)])
    assert [e.message for e in model.entries] == ["l2", "m0", "m1", "m2", "m3"]
    assert model.dropped == 2
    assert model.index(1, 1).data() == "err" and model.index(1, 2).data() == "x.service"
    model.append([p.LogEntry(None, None, None, f"n{i}") for i in range(9)])
    assert [e.message for e in model.entries] == ["n4", "n5", "n6", "n7", "n8"]
    qtmodeltester.check(model)


def test_logs_tab_reads_a_windows_event_log(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, tmp_path: Path
) -> None:
    """A real agent whose log service reads the Event Log through the typed fake of win32evtlog
    (Windows cannot run here): the source is offered, the journal's filters apply, Follow streams."""
    api = fake_with(8)  # types cycle information, warning, error, audit success
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'core = "{core.url}"\nstate_dir = "{tmp_path / "agent"}"\n[logs]\njournal = false\n')
    a = Agent(load_agent_settings(config_file=cfg, environ={}), run(core.enroll_token()))
    a.logs.eventlog = (api, formatter)
    task = asyncio.get_event_loop().create_task(a.run())
    try:
        run(a.wait_state(ConnState.STREAMING))
        run(sign_in(ctx, core))
        assert a.node_id is not None
        panel = window.open_node(a.node_id).show_logs()
        run(until(lambda: panel.loads >= 1, "the log sources"))
        assert [panel.source.itemText(i) for i in range(panel.source.count())] == [
            "Windows Event Log: System",
            "Windows Event Log: Application",
        ]
        assert panel.unit.isEnabled() and panel.priority.isEnabled()  # the journal's filters apply
        assert panel.status.text() == ""  # no "journal unavailable" where the Event Log stands in
        panel.priority.setCurrentIndex(panel.priority.findData(4))  # warning or worse
        panel.load()
        run(until(lambda: panel.loads >= 2, "the entries"))
        assert [panel.model.entries[r].message for r in range(panel.model.rowCount())] == [
            f"event 7036: Service{i % 3} says: line {i}" for i in (1, 2, 5, 6)
        ]
        assert panel.model.entries[0].unit == "Service1" and panel.model.entries[1].priority == 3

        panel.follow_button.setChecked(True)
        run(until(lambda: a.logs.following == 1, "the agent to follow"))
        api.add("System", T0 + 60, 1, 41, "Kernel-Power", "rebooted without cleanly shutting down")
        run(
            until(
                lambda: (
                    panel.model.entries
                    and panel.model.entries[-1].message
                    == "event 41: Kernel-Power says: rebooted without cleanly shutting down"
                ),
                "the followed event",
            )
        )
        panel.follow_button.setChecked(False)
        run(until(lambda: a.logs.following == 0, "the follow to stop"))
    finally:
        a.stop()
        run(asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10))
        a.close()
