"""The Compare tab against a real core: several nodes' history of one metric overlaid, ranges, the cap, live tail, export."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from servermanager.desktop.compare import MAX_NODES, CompareView
from servermanager.desktop.context import AppContext
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, enrolled, sign_in, until


def history_requests(cores: Cores) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(q).query) for q in cores.requests if q.startswith("/api/") and "/metrics?" in q]


def test_three_nodes_overlaid_from_rest_then_a_range_change_reloads_all(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run, tmp_path: Path
) -> None:
    # The nodes report every 60 s (CORE_SETTINGS): only a silence of over 150 s is an outage.
    start = time.time() - 270
    agents = []
    for i, name in enumerate(["web-1", "web-2", "db-1"]):
        agent = run(enrolled(cores.c, name, cpu=10.0 * (i + 1)))
        samples = agent.make(15, ts=start, step=18.0, cpu=20.0 * (i + 1))
        if name == "db-1":
            samples = samples[:3] + samples[12:]  # 180 s without data: an outage
        run(agent.send_samples(samples))
        agents.append(agent)
    ids = [a.node_id for a in agents]
    assert None not in ids
    run(sign_in(ctx, cores.c))

    # Select the three rows, then "Compare…" (as the context menu and the button do).
    window.fleet.select_nodes([i for i in ids if i is not None])
    window.fleet.compare_action.trigger()
    view = window.compare
    assert isinstance(view, CompareView) and window.tabs.currentWidget() is view
    run(until(lambda: view.history_loads >= 1, "the three histories"))

    chart = view.chart
    assert sorted(chart.labels()) == ["db-1", "web-1", "web-2"]
    assert sorted(chart.legend_labels()) == ["db-1", "web-1", "web-2"]
    for agent in agents:
        assert agent.node_id is not None
        # The points drawn are the core's own answer for that node.
        answer = run(ctx.rest.history(agent.node_id, start - 10, time.time(), "raw", ["cpu_pct"]))
        x, y = chart.data(agent.node_id)
        assert list(x) == answer.ts and list(y) == answer.avg["cpu_pct"]
        assert len(x) >= 10 if agent.name != "db-1" else len(x) >= 6
    db = agents[2].node_id
    assert db is not None
    _px, py = chart.plotted(db)
    assert np.isnan(py).sum() == 1  # the outage is a gap, not a straight line
    assert not np.isnan(chart.plotted(ids[0] or 0)[1]).any()

    # Another range: one new request per node, all drawn again.
    before = len(history_requests(cores))
    view.range_buttons["1h"].click()
    run(until(lambda: view.history_loads >= 2, "the 1 h histories"))
    asked = history_requests(cores)[before:]
    assert len(asked) == 3 and {q["fields"][0] for q in asked} == {"cpu_pct"}
    assert all(abs(float(q["to"][0]) - float(q["from"][0]) - 3600) < 1 for q in asked)
    assert len(chart.lines) == 3

    # Another metric: a new chart in the new unit, loaded for every node.
    view.metric_box.setCurrentIndex(view.metric_box.findData("mem_used"))
    run(until(lambda: view.history_loads >= 3 and len(view.chart.lines) == 3, "memory used"))
    assert view.chart.unit == "bytes"

    # Its data as CSV: a time column and one column per node, named, with the unit.
    path = tmp_path / "compare.csv"
    assert view.chart.exporter.export("csv", path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][0] == "time (UTC)" and sorted(rows[0][1:]) == ["db-1 (B)", "web-1 (B)", "web-2 (B)"]
    assert rows[1][0].endswith("Z") and len(rows) > 10

    window._close_tab(window.tabs.indexOf(view))
    assert window.compare is None


def test_live_tail_and_the_eleventh_node_is_refused(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    agents = [run(enrolled(cores.c, f"n-{i:02d}")) for i in range(MAX_NODES + 1)]
    ids = [a.node_id for a in agents if a.node_id is not None]
    run(sign_in(ctx, cores.c))
    view = window.open_compare(ids[:MAX_NODES])
    assert view is not None
    run(until(lambda: view.history_loads >= 1, "ten histories"))
    assert len(view.chart.lines) == MAX_NODES and view.note.isHidden()

    assert not view.add_node(ids[MAX_NODES])
    assert not view.note.isHidden() and "at most 10 nodes" in view.note.text()
    assert len(view.node_ids) == MAX_NODES and ids[MAX_NODES] not in view.chart.lines

    # Opening with eleven selected keeps ten and says so.
    assert not view.set_nodes(ids)
    assert len(view.node_ids) == MAX_NODES and "11 nodes selected" in view.note.text()

    # Removing one makes room; the live range appends pushed samples to the right line.
    view.remove_node(ids[0])
    assert view.add_node(ids[MAX_NODES])
    run(until(lambda: ids[MAX_NODES] in view.chart.lines, "the added node's history"))
    run(agents[MAX_NODES].send_samples(agents[MAX_NODES].make(1, cpu=77.0)))
    run(until(lambda: view.chart.data(ids[MAX_NODES])[1][-1] == 77.0, "the pushed sample"))
    assert ids[0] not in view.chart.lines
