"""The Processes tab against a real core: a real burner's snapshot on top, live reloads, a chart click loads that moment."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from servermanager.agent.processes import ProcessCollector
from servermanager.common import rest as m
from servermanager.common.metrics import ProcInfo
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.processes import CMDLINE_HINT, SORT_ROLE, ProcessesModel
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, enrolled, profile_for, sign_in, until
from tests.helpers.wait import wait_sync


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "x = 0\nwhile True: x += 1  # sm-desktop-burner"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def burner_on_top(pid: int) -> list[ProcInfo]:
    """This machine's real top list once the burner leads it by CPU (as the agent would send it)."""
    collector = ProcessCollector(top=5)
    found: list[ProcInfo] = []

    def probe() -> bool:
        nonlocal found
        time.sleep(0.2)  # a rate needs elapsed time between two readings
        found = collector.collect()
        return bool(found) and found[0].pid == pid

    wait_sync(probe, what="the burner on top")
    return found


def rows(view: Any) -> list[tuple[int, str]]:
    proxy = view.processes.proxy
    return [(int(proxy.index(r, 0).data()), proxy.index(r, 1).data()) for r in range(proxy.rowCount())]


def test_model_sorts_numbers_as_numbers(qtmodeltester: Any) -> None:
    model = ProcessesModel()
    model.set_rows(
        [
            m.Process(pid=9, name="b", cpu_pct=9.5, rss=2048),
            m.Process(pid=10, name="a", cpu_pct=10.0, rss=100, cmd="a --x"),
            m.Process(pid=11, name="c", cpu_pct=None, rss=1 << 30, user="root", read_bps=5.0),
        ]
    )
    qtmodeltester.check(model)
    assert model.data(model.index(1, 3)) == "10.0%"
    assert model.data(model.index(2, 3), SORT_ROLE) == -1.0  # no rate yet sorts below zero
    assert model.data(model.index(1, 3), SORT_ROLE) > model.data(model.index(0, 3), SORT_ROLE)
    assert model.data(model.index(2, 4)) == "1.00 GiB"


def test_the_tab_shows_the_burner_follows_live_and_loads_a_clicked_moment(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run, burner: subprocess.Popen[bytes]
) -> None:
    core = cores.c
    agent = run(enrolled(core, "web-1"))
    assert agent.node_id is not None
    earlier = time.time() - 120
    early = [ProcInfo(pid=1, name="backup", cpu_pct=95.0, rss=1 << 20, user="root", cmd="backup --all")]
    run(agent.send_samples(agent.make(1, ts=earlier, procs_top=early, cpu=97.0)))
    real = burner_on_top(burner.pid)
    run(agent.send_samples(agent.make(1, procs_top=real)))
    ctx.settings.set("chart_range", "live")
    run(sign_in(ctx, core))
    view = window.open_node(agent.node_id)
    window.show()
    panel = view.show_processes()
    run(until(lambda: panel.loads >= 1, "the processes loaded"))
    # Sorted by CPU, busiest first: the real burner, by pid, with its command line (an admin).
    assert rows(view)[0] == (burner.pid, real[0].name)
    assert panel.live and panel.when.text().startswith("Live")
    assert "sm-desktop-burner" in panel.proxy.index(0, 7).data()
    assert not panel.live_button.isVisible()

    # Live: the next sample of the node reloads the table.
    later = [ProcInfo(pid=4242, name="newcomer", cpu_pct=99.0, rss=1 << 20)]
    run(agent.send_samples(agent.make(1, procs_top=later)))
    run(until(lambda: rows(view)[:1] == [(4242, "newcomer")], "the live reload"))

    # A click on the CPU chart at the earlier moment: the tab shows that moment's processes.
    view.sections.setCurrentIndex(0)
    view.charts.charts["cpu"].pointClicked.emit(earlier + 5)
    assert view.sections.currentWidget() is panel
    run(until(lambda: rows(view) == [(1, "backup")], "the earlier moment"))
    assert not panel.live and panel.when.text().startswith("At ")
    assert panel.ts is not None and abs(panel.ts - earlier) < 1e-3
    assert panel.live_button.isVisible()
    # Live samples do not move a pinned moment.
    loads = panel.loads
    run(agent.send_samples(agent.make(1, procs_top=later)))
    run(until(lambda: view.charts.charts["cpu"].data()[0].size >= 3, "the sample drawn"))
    assert panel.loads == loads and rows(view) == [(1, "backup")]

    panel.live_button.click()
    run(until(lambda: rows(view)[:1] == [(4242, "newcomer")], "back to live"))
    assert panel.live and not panel.live_button.isVisible()


def test_a_mouse_click_on_the_chart_picks_a_moment(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    agent = run(enrolled(cores.c, "web-1"))
    assert agent.node_id is not None
    run(sign_in(ctx, cores.c))
    view = window.open_node(agent.node_id)
    window.show()
    chart = view.charts.charts["cpu"]
    picked: list[float] = []
    view.charts.pointClicked.connect(picked.append)
    start, end = chart.x_range()
    vp = chart.plot_widget.viewport()
    centre = chart.plot_widget.mapFromScene(chart.vb.sceneBoundingRect().center())
    QTest.mouseClick(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, QPoint(centre))
    run(until(lambda: bool(picked), "the click reported"))
    assert start < picked[0] < end
    assert view.sections.currentWidget() is view.processes and not view.processes.live


def test_viewers_are_told_why_command_lines_are_missing(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    core = cores.c
    agent = run(
        enrolled(core, "web-1", procs_top=[ProcInfo(pid=5, name="app", cpu_pct=1.0, rss=1, cmd="app -p s3")])
    )
    assert agent.node_id is not None
    run(core.user_token("vera", "viewer"))
    run(ctx.signin.sign_in(profile_for(core, "vera"), "password123", remember=False))
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "the live socket"))
    view = window.open_node(agent.node_id)
    window.show()
    panel = view.show_processes()
    run(until(lambda: panel.loads >= 1, "the processes loaded"))
    assert rows(view) == [(5, "app")]
    assert panel.proxy.index(0, 7).data() == ""
    assert panel.status.isVisible() and panel.status.text() == CMDLINE_HINT
