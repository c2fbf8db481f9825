"""packaging/grafana/servermanager.json: an importable dashboard whose every query names a metric that a
real core's /metrics exposes, in PromQL that promtool parses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from servermanager.common.metrics import FIELDS
from servermanager.core.http.prometheus import family_name
from tests.helpers.prometheus import live_metrics, parse, promtool_check_rules

DASHBOARD = Path(__file__).resolve().parents[2] / "packaging" / "grafana" / "servermanager.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
METRIC = re.compile(r"\bsm_[a-z0-9_]+\b")
# What Grafana puts in before a query runs: a range, and "All" of a multi-value variable.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$group": ".*", "$node": ".*"}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    out = [(f"panel {p['title']!r}", t["expr"]) for p in dash["panels"] for t in p["targets"]]
    for var in dash["templating"]["list"]:
        out.append((f"variable {var['name']!r}", var["query"]))
    return out


def test_dashboard_is_importable_with_a_datasource_input_and_node_and_group_variables() -> None:
    dash = dashboard()
    assert dash["schemaVersion"] >= 39
    [source] = dash["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == ("DS_PROMETHEUS", "datasource", "prometheus")  # fmt: skip
    assert {v["name"] for v in dash["templating"]["list"]} == {"group", "node"}
    for var in dash["templating"]["list"]:
        assert var["datasource"] == DATASOURCE and var["multi"] and var["includeAll"], var["name"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            # Per-node panels follow the variables; the core's own panels are fleet-wide.
            if "sm_node_" in target["expr"]:
                assert '$group"' in target["expr"] and '$node"' in target["expr"], panel["title"]


async def test_every_metric_a_panel_uses_is_on_a_real_cores_metrics(tmp_path: Path) -> None:
    exposed = parse(await live_metrics(tmp_path))
    used: set[str] = set()
    for where, expr in queries(dashboard()):
        names = set(METRIC.findall(expr))
        assert names, f"{where} uses no Server Manager metric: {expr}"
        assert names <= set(exposed), f"{where} uses {sorted(names - set(exposed))}, not on /metrics"
        used |= names
    # CPU, memory, disk, disk I/O, network and load: every row the app itself charts is on the board,
    # and so are agents online, the ingest rate and alerts firing.
    charted = {family_name(row) for row in FIELDS if row.family}
    assert charted | {"sm_node_up", "sm_core_samples_written_total", "sm_core_alerts_firing"} <= used


def test_every_query_is_promql_that_promtool_parses(tmp_path: Path) -> None:
    rules = []
    for i, (_, expr) in enumerate(q for q in queries(dashboard()) if not q[1].startswith("label_values(")):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    assert rules
    problems = promtool_check_rules(tmp_path, {"groups": [{"name": "dashboard", "rules": rules}]})
    assert problems == "", problems
