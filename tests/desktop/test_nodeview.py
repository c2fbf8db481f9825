"""The node view's history charts: REST history for the range, the live tail from pushed samples."""

from __future__ import annotations

import time

from servermanager.desktop.context import AppContext
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, enrolled, sign_in, until


def test_charts_load_history_then_follow_live_samples(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    agent = run(enrolled(cores.c, "web-1", cpu=20.0))
    # Two minutes of history, 10 s apart, ending a little before now.
    start = time.time() - 125
    run(agent.send_samples(agent.make(12, ts=start, step=10.0, cpu=30.0)))
    ctx.settings.set("chart_range", "live")
    run(sign_in(ctx, cores.c))
    assert agent.node_id is not None
    view = window.open_node(agent.node_id)
    run(until(lambda: view.history_loads >= 1, "history drawn"))
    cpu = view.charts.charts["cpu"]
    xs, ys = cpu.data()
    assert len(xs) == 13 and ys["cpu_pct"][-2] == 30.0  # the backfill and the first sample
    assert view.charts.range_label.text().startswith("Live 5 min")

    run(agent.send_samples(agent.make(1, cpu=88.0)))
    run(until(lambda: cpu.data()[1]["cpu_pct"][-1] == 88.0, "the pushed sample on the chart"))
    assert len(cpu.data()[0]) == 14

    # Another range is a new request; its answer replaces the drawn series.
    view.charts.range_buttons["1h"].click()
    run(until(lambda: view.history_loads >= 2, "the 1 h history"))
    assert len(cpu.data()[0]) == 14

    # Theme changes reach the charts too.
    ctx.settings.set("theme", "dark")
    assert cpu.dark
    ctx.settings.set("theme", "light")
    assert not cpu.dark

    window.close_node(view.node_id)
    assert agent.node_id not in window.node_views
    run(agent.send_samples(agent.make(1, cpu=5.0)))  # a closed view no longer listens; nothing breaks
    run(until(lambda: ctx.model.node(agent.node_id or 0) is not None, "model still fine"))
