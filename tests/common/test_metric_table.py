"""Adding a scalar metric is one row in the metric table plus its collector: shown end to end.

A fresh interpreter appends one row to `FIELDS` and registers one agent collector, then runs the
unchanged product: a real core on a real SQLite file, a real agent over a real WebSocket, the REST
history API, `GET /metrics`, and the desktop's charts, fleet table and node view (offscreen).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, json, sys
from pathlib import Path

# ---- the whole change a contributor makes: one row ...
from servermanager.common import metric_table as table

table.FIELDS = (
    *table.FIELDS,
    table.Field("runq", table.Unit.PLAIN, 2, "Run queue", "Tasks waiting for a CPU",
                family="load", legend="Run queue", column="Run q", meter=True),
)

# ---- ... plus its collector.
from servermanager.agent import collectors

collectors.SCALAR_COLLECTORS["runq"] = lambda: 3.14159

# ---- everything below is the product as it is.
from servermanager.agent.main import Agent
from tests.agent.fakes import fast_settings
from devkit.cores import RunningCore

out = {}


def desktop(history_json, nodes_json) -> None:
    # The app's widgets, fed the REST answers as the app decodes them.
    import msgspec
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    from servermanager.common import protocol as p
    from servermanager.common.rest import History
    from servermanager.desktop.charts.panel import ChartPanel
    from servermanager.desktop.charts.ranges import preset
    from servermanager.desktop.meters import MeterBox
    from servermanager.desktop.models.fleet import NodesModel

    app = QApplication.instance() or QApplication([])
    panel = ChartPanel(initial=preset("1h"))
    panel.set_history(msgspec.convert(history_json, History))
    load = panel.charts["load"]
    out["chart_fields"] = list(load.fields)
    out["chart_points"] = load.data()[1]["runq"].tolist()
    nodes = msgspec.convert(nodes_json, list[p.NodeInfo])
    model = NodesModel()
    model.apply_snapshot(nodes)
    headers = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    out["column"] = headers.index("Run q") if "Run q" in headers else None
    if out["column"] is not None:
        out["cell"] = model.data(model.index(0, out["column"]))
    box = MeterBox()
    box.show_reading(nodes[0].latest.metrics, dim=False)
    out["meter"] = [box.meters["runq"].label, box.meters["runq"].text] if "runq" in box.meters else None
    app.processEvents()


async def core_and_agent(tmp: Path) -> None:
    server = await RunningCore(tmp / "core", agent_interval=0.0).start()
    agent = Agent(fast_settings(tmp / "agent", server.url), await server.enroll_token())
    task = asyncio.create_task(agent.run())
    try:
        async with asyncio.timeout(20):
            await agent.wait_until(lambda: agent.stats.samples_acked >= 3)
        nid = agent.node_id
        token = await server.admin_token()
        status, hist = await server.request(
            "GET", f"/api/v1/nodes/{nid}/metrics?fields=runq,cpu_pct&resolution=raw", token
        )
        out["history_status"] = status
        out["history"] = hist["avg"]["runq"] if status == 200 else hist
        status, text = await server.request("GET", "/metrics", token)
        out["prometheus"] = [line for line in text.decode().splitlines() if "sm_node_runq" in line]
        out["latest"] = server.core.nodes.get(nid).latest.metrics.runq
        status, hist = await server.request(
            "GET", f"/api/v1/nodes/{nid}/metrics?resolution=raw&from=0", token
        )
        desktop(hist, (await server.request("GET", "/api/v1/nodes", token))[1]["nodes"])
    finally:
        agent.stop()
        await task
        agent.close()
        await server.stop()


asyncio.run(core_and_agent(Path(sys.argv[1])))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_one_row_and_a_collector_flow_to_storage_history_metrics_and_the_desktop(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # The agent sent it, rounded to the row's two decimals; the core holds it as the latest value.
    assert got["latest"] == 3.14
    # Stored in its own column and answered by the history API like any built-in field.
    assert got["history_status"] == 200, got["history"]
    assert len(got["history"]) >= 3 and set(got["history"]) == {3.14}
    # Exported with the row's help text.
    assert "# HELP sm_node_runq Tasks waiting for a CPU" in got["prometheus"]
    assert "# TYPE sm_node_runq gauge" in got["prometheus"]
    assert any(line.startswith("sm_node_runq{") and line.endswith(" 3.14") for line in got["prometheus"])
    # Drawn in its family's chart, listed as a fleet column, shown as a node-view meter.
    assert got["chart_fields"] == ["load1", "load5", "load15", "runq"]
    assert len(got["chart_points"]) >= 3 and set(got["chart_points"]) == {3.14}
    assert got["column"] is not None and got["cell"] == "3.14"
    assert got["meter"] == ["Run queue", "3.14"]
