"""The Custom tab against a real core: a real plugin hub's series and errors listed, a picked series charted."""

from __future__ import annotations

import time
from typing import Any

from servermanager.agent.plugins.config import CheckSettings, CustomSettings
from servermanager.agent.plugins.hub import PluginHub
from servermanager.common import rest as m
from servermanager.desktop.context import AppContext
from servermanager.desktop.series import SORT_ROLE, SeriesModel, plugin_problems
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, enrolled, sign_in, until


def test_model(qtmodeltester: Any) -> None:
    model = SeriesModel()
    model.set_rows(
        [
            m.SeriesInfo("check_up", {"check": "web"}, 'check_up{check="web"}', None, 1.0, 0.0),
            m.SeriesInfo("queue_depth", {}, "queue_depth", "jobs", 2.0, 12.5),
            m.SeriesInfo("never", {}, "never"),
        ]
    )
    qtmodeltester.check(model)
    assert model.data(model.index(0, 2)) == "down" and model.data(model.index(1, 2)) == ""
    assert model.data(model.index(1, 1)) == "12.5 jobs"
    assert model.data(model.index(2, 1), SORT_ROLE) < model.data(model.index(0, 1), SORT_ROLE)


def test_the_tab_lists_a_real_hubs_series_and_charts_one(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    core = cores.c
    # What a real agent's hub makes of a working command, a failing one and a check of a closed port.
    hub = PluginHub(
        [
            CustomSettings(
                name="queue", command=["/bin/sh", "-c", "echo queue_depth 12"], interval=60, timeout=5
            ),
            CustomSettings(name="broken", command=["/bin/sh", "-c", "exit 4"], interval=60, timeout=5),
        ],
        [],
        [CheckSettings(name="db", type="tcp", target="127.0.0.1:1", interval=60, timeout=2)],
    )

    async def collect() -> None:
        for e in hub.entries:
            await hub.run_once(e)

    run(collect())
    agent = run(enrolled(core, "web-1"))
    assert agent.node_id is not None
    t0 = time.time()  # the last sample is newer than enrolled()'s: the node's latest, with its statuses
    for i in range(3):
        run(
            agent.send_samples(
                agent.make(1, ts=t0 - 20 + 10 * i, series=hub.points(), plugins=hub.statuses())
            )
        )
    run(sign_in(ctx, core))
    view = window.open_node(agent.node_id)
    window.show()
    panel = view.show_custom()
    run(until(lambda: panel.loads >= 1, "the series loaded"))
    shown = {
        s.selector: (s.last_value, panel.model.data(panel.model.index(i, 2)))
        for i, s in enumerate(panel.model.rows)
    }
    assert shown["queue_depth"] == (12.0, "")
    assert shown['check_up{check="db"}'] == (0.0, "down")
    assert shown['plugin_up{plugin="broken"}'] == (0.0, "down")
    assert panel.status.isVisible()
    assert "custom broken: exited with status 4" in panel.status.text()
    assert "check db: cannot connect to 127.0.0.1:1" in panel.status.text()
    assert plugin_problems([]) == []

    # Picking a row charts it, from the series history.
    row = next(i for i, s in enumerate(panel.model.rows) if s.selector == "queue_depth")
    panel.table.selectRow(panel.proxy.mapFromSource(panel.model.index(row, 0)).row())
    run(until(lambda: panel.chart_loads >= 1, "the chart loaded"))
    assert panel.charts is not None
    chart = next(iter(panel.charts.charts.values()))
    xs, ys = chart.data()
    assert xs.size == 3 and list(ys["queue_depth"]) == [12.0, 12.0, 12.0]
    # On a 1024x640 window the charted series does not make the node view taller than the window.
    window.resize(1024, 640)
    run(until(lambda: window.height() == 640 and chart.height() > 0, "the window at 1024x640"))
    assert (window.width(), window.height()) == (1024, 640)
    assert view.mapTo(window, view.rect().bottomLeft()).y() <= window.height()
