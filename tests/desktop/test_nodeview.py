"""The node view against a real core: history for the chosen range, merged to chart size on long ones, then the live tail."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import numpy as np

from servermanager.common import metrics as mt
from servermanager.desktop.charts.ranges import CHART_POINTS
from servermanager.desktop.context import AppContext
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, enrolled, sign_in, until
from tests.helpers.core import metrics


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
    assert all("points=" not in q for q in cores.requests if "/metrics" in q)  # live is raw, never merged

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


def test_a_week_comes_merged_to_chart_size_with_the_band_of_its_buckets(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    core = cores.c
    agent = run(enrolled(core, "web-1"))
    assert agent.node_id is not None
    # A week of samples two minutes apart, CPU cycling through 0-60 %: 5,000 minutes of rollups,
    # more than a chart draws. Straight into the core's store: its agent socket takes no sample
    # older than a day.
    start = time.time() - 7 * 86400 + 600
    samples = [
        mt.Sample(seq=i + 100, ts=start + i * 120.0, metrics=metrics(cpu=float(i % 7 * 10)))
        for i in range(5000)
    ]
    run(core.core.store.store(agent.node_id, samples))
    run(core.core.store.rollup())
    ctx.settings.set("chart_range", "7d")
    run(sign_in(ctx, core))
    view = window.open_node(agent.node_id)
    run(until(lambda: view.history_loads >= 1, "the week drawn"))

    asked = [
        parse_qs(urlsplit(q).query)
        for q in cores.requests
        if q.startswith(f"/api/v1/nodes/{agent.node_id}/metrics")
    ]
    assert len(asked) == 1
    assert asked[0]["resolution"] == ["1m"] and asked[0]["points"] == [str(CHART_POINTS)]
    cpu = view.charts.charts["cpu"]
    x, ys = cpu.data()
    assert 0 < x.shape[0] <= CHART_POINTS
    # 10-minute buckets, not the rows as stored; the first one may hold only the range's start.
    np.testing.assert_allclose(np.diff(x)[1:], 600.0)
    # The band is the buckets' own min and max: each bucket held four samples of different CPU.
    band = cpu.band_data("cpu_pct")
    assert band is not None
    _, lo, hi = band
    avg = ys["cpu_pct"]
    finite = np.isfinite(avg)
    assert finite.sum() >= 990  # 10,000 minutes of samples
    assert np.all(lo[finite] <= avg[finite]) and np.all(avg[finite] <= hi[finite])
    assert (hi - lo)[finite].max() >= 30.0 and lo[finite].min() == 0.0 and hi[finite].max() == 60.0
    # Without points the same range is every stored minute.
    token = run(core.admin_token())
    status, body = run(
        core.request(
            "GET",
            f"/api/v1/nodes/{agent.node_id}/metrics?from={start - 60}&to={time.time()}&resolution=1m&fields=cpu_pct",
            token,
        )
    )
    assert status == 200 and len(body["ts"]) == 5000 > CHART_POINTS
