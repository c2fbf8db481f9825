"""The node view against a real core: history for the chosen range, merged to chart size on long ones, then the live tail."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QScrollArea

from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from servermanager.desktop.charts.panel import ChartPanel
from servermanager.desktop.charts.ranges import CHART_POINTS
from servermanager.desktop.context import AppContext
from servermanager.desktop.nodeview import NodeView
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


def test_an_offline_node_says_why_and_its_last_seen_keeps_counting(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    agent = run(enrolled(cores.c, "web-1"))
    run(sign_in(ctx, cores.c))
    assert agent.node_id is not None and agent.ws is not None
    view = window.open_node(agent.node_id)
    assert view.subtitle.text().startswith("Online")
    run(agent.ws.close(code=p.CloseCode.GOING_AWAY, message=b"agent stopping"))
    run(until(lambda: "Offline" in view.subtitle.text(), "the node offline"))
    assert "(agent stopped)" in view.subtitle.text()
    assert "just now" in view.subtitle.text()
    # Nothing about the node changes from here on: only the clock moves the text.
    run(until(lambda: "ago" in view.subtitle.text(), "last seen counting up", timeout=12))
    assert "(agent stopped)" in view.subtitle.text()
    # The fleet table's status tooltip says it too.
    model = ctx.model
    row = model.row_of(agent.node_id)
    assert row is not None
    tip = model.index(row, model.column("status")).data(Qt.ItemDataRole.ToolTipRole)
    assert "Why: agent stopped" in tip


def test_a_young_node_opens_live_and_a_picked_range_is_remembered(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    agent = run(enrolled(cores.c, "new-1"))
    run(sign_in(ctx, cores.c))
    assert agent.node_id is not None
    assert not ctx.settings.is_set("chart_range")
    view = window.open_node(agent.node_id)
    # Enrolled seconds ago: an hour of charts would be empty but for a sliver at the right.
    assert view.charts.current_range.key == "live"
    run(until(lambda: view.history_loads >= 1, "history drawn"))
    view.charts.range_buttons["1h"].click()
    assert ctx.settings.is_set("chart_range") and ctx.settings.get("chart_range") == "1h"
    window.close_node(agent.node_id)
    again = window.open_node(agent.node_id)
    assert again.charts.current_range.key == "1h"  # the user's choice wins over the node's age


def _fits(window: MainWindow, view: NodeView, charts: ChartPanel, scroll: QScrollArea) -> None:
    """At 1024x640: the window kept its size, the last chart is in sight or reachable by the scroll
    bar, and the node view ends inside the window."""
    assert (window.width(), window.height()) == (1024, 640)  # the content did not force it larger
    last = list(charts.charts.values())[-1]
    bottom = last.mapTo(charts, last.rect().bottomLeft()).y()
    assert bottom <= scroll.viewport().height() + scroll.verticalScrollBar().maximum()
    assert scroll.verticalScrollBar().maximum() > 0 or bottom <= scroll.viewport().height()
    assert view.mapTo(window, view.rect().bottomLeft()).y() <= window.height()


def test_on_a_short_window_the_charts_scroll_rather_than_being_cut_off(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    agent = run(enrolled(cores.c, "web-1"))
    run(sign_in(ctx, cores.c))
    assert agent.node_id is not None
    window.resize(1024, 640)
    window.show()
    view = window.open_node(agent.node_id)
    run(until(lambda: view.charts_scroll.viewport().height() > 0, "the charts laid out"))
    assert view.charts.columns == 2  # three charts a row would be too narrow to read
    _fits(window, view, view.charts, view.charts_scroll)
    # The Devices tab's two charts once made the whole window 717 px tall.
    view.sections.setCurrentWidget(view.devices)
    run(until(lambda: view.devices.chart_loads >= 1, "a device charted"))
    devices = view.devices.charts
    assert devices is not None and len(devices.charts) == 2  # a mount: usage and used space
    run(until(lambda: view.devices.charts_scroll.viewport().height() > 0, "the device charts laid out"))
    _fits(window, view, devices, view.devices.charts_scroll)
