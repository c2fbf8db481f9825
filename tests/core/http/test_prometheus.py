"""GET /metrics from a real core, in Prometheus text format: names in base units, HELP and TYPE from the
metric table, and promtool's lint passed on what a real agent's readings make of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devkit.cores import RunningCore
from servermanager.common import metrics as mt
from servermanager.core.http import prometheus
from servermanager.core.http.prometheus import family_name
from servermanager.core.nodes import NodeState
from tests.core.alerts.helpers import Rig
from tests.helpers.core import RawAgent, metrics
from tests.helpers.prometheus import live_metrics, parse, promtool_check

LABELS = 'node_id="1",node="prom-host",group=""'


async def test_prometheus_export(core_server: RunningCore) -> None:
    agent = RawAgent(core_server, "prom-host")
    await agent.hello(token=await core_server.enroll_token())
    [sample] = agent.make(1, cpu=12.5)
    await agent.send_samples([sample])
    status, body = await core_server.request("GET", "/metrics", await core_server.admin_token())
    assert status == 200
    text = body.decode()
    assert f"sm_node_up{{{LABELS}}} 1" in text
    assert f"sm_node_cpu_percent{{{LABELS}}} 12.5" in text

    families = parse(text)
    # Every row of the table, derived ones (disk_pct) included, under its name in base units.
    for row in mt.FIELDS:
        family = families[family_name(row)]
        assert (family.help, family.type) == (row.help, "gauge"), row.name
        assert float(family.samples[LABELS]) == mt.scalar(sample.metrics, row.name), row.name
    assert families["sm_node_disk_percent"].samples[LABELS] == "40.0"
    assert families["sm_node_up"].type == "gauge"
    assert families["sm_node_up"].samples == {LABELS: "1"}
    assert families["sm_core_samples_written_total"].type == "counter"
    assert families["sm_core_samples_written_total"].samples == {"": "1"}
    assert families["sm_core_commits_total"].type == "counter"
    assert families["sm_core_clients"].type == "gauge"
    assert families["sm_core_alerts_firing"].type == "gauge"
    assert families["sm_core_alerts_firing"].samples == {
        'severity="warning"': "0",
        'severity="critical"': "0",
    }
    for name, family in families.items():
        assert family.help and family.type, name
    assert set(families) == {
        "sm_node_up",
        *(family_name(row) for row in mt.FIELDS),
        "sm_core_samples_written_total",
        "sm_core_commits_total",
        "sm_core_clients",
        "sm_core_sockets_shed_total",
        "sm_core_alerts_firing",
    }


async def test_a_row_added_to_the_table_is_exported(
    core_server: RunningCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A derived row, as a later table row might be: no attribute of Metrics holds it.
    row = mt.Field(
        "disk_free_pct", mt.Unit.PERCENT, 2, "Disk free", "Free space on the fullest mount, percent"
    )
    monkeypatch.setitem(mt.DERIVED, row.name, lambda m: 100.0 - max(d.pct for d in m.disks))
    monkeypatch.setattr(prometheus, "FIELDS", (*mt.FIELDS, row))
    agent = RawAgent(core_server, "h")
    await agent.hello(token=await core_server.enroll_token())
    await agent.send_samples(agent.make(1, disks=[mt.DiskUsage("/", "ext4", 100, 75, 75.0)]))
    status, body = await core_server.request("GET", "/metrics", await core_server.admin_token())
    assert status == 200
    family = parse(body.decode())["sm_node_disk_free_percent"]
    assert (family.help, family.type) == (row.help, "gauge")
    assert family.samples == {'node_id="1",node="h",group=""': "25.0"}


@pytest.mark.parametrize(
    ("name", "unit", "kind", "exported"),
    [
        ("cpu_pct", mt.Unit.PERCENT, mt.Kind.GAUGE, "sm_node_cpu_percent"),
        ("mem_used", mt.Unit.BYTES, mt.Kind.GAUGE, "sm_node_mem_used_bytes"),
        ("cache_bytes", mt.Unit.BYTES, mt.Kind.GAUGE, "sm_node_cache_bytes"),
        ("net_rx_bps", mt.Unit.BYTES_PER_S, mt.Kind.RATE, "sm_node_net_rx_bytes_per_second"),
        ("disk_read_iops", mt.Unit.PER_S, mt.Kind.RATE, "sm_node_disk_read_ops_per_second"),
        ("ctx_switches", mt.Unit.PER_S, mt.Kind.RATE, "sm_node_ctx_switches_per_second"),
        ("uptime", mt.Unit.SECONDS, mt.Kind.GAUGE, "sm_node_uptime_seconds"),
        ("procs", mt.Unit.COUNT, mt.Kind.GAUGE, "sm_node_procs"),
        ("load1", mt.Unit.PLAIN, mt.Kind.GAUGE, "sm_node_load1"),
    ],
)
def test_names_end_in_their_base_unit(name: str, unit: mt.Unit, kind: mt.Kind, exported: str) -> None:
    assert family_name(mt.Field(name, unit, 0, name, "help", kind)) == exported


def test_every_unit_and_kind_of_row_has_a_prometheus_spelling() -> None:
    assert set(prometheus.PROMETHEUS_TYPE) == set(mt.Kind)
    assert set(prometheus.UNIT_SUFFIX) == set(mt.Unit)
    assert len({family_name(row) for row in mt.FIELDS}) == len(mt.FIELDS)


async def test_firing_alerts_are_counted_by_severity(core_server: RunningCore) -> None:
    rig = await Rig(core_server).start()
    await rig.rule(name="hot", threshold=50, severity="critical")
    await rig.rule(name="warm", threshold=50, **{"for": "1h"})  # pending for an hour: not firing yet
    await rig.sample(cpu=95.0)
    assert {lv.m.state for lv in core_server.core.alerts.open.values()} == {"firing", "pending"}
    status, body = await core_server.request("GET", "/metrics", rig.token)
    assert status == 200
    firing = parse(body.decode())["sm_core_alerts_firing"].samples
    assert firing == {'severity="warning"': "0", 'severity="critical"': "1"}


def test_promtool_rejects_what_it_should() -> None:
    # The instrument first: this promtool lints (HELP, base units), so its pass below means something.
    problems = promtool_check("# TYPE sm_x_milliseconds gauge\nsm_x_milliseconds 1\n")
    assert "no help text" in problems and 'base unit "seconds"' in problems


async def test_promtool_passes_on_a_real_agents_metrics(tmp_path: Path) -> None:
    text = await live_metrics(tmp_path)
    families = parse(text)
    # The real agent's reading has every row, rates included, so promtool sees every family's samples.
    for row in mt.FIELDS:
        assert families[family_name(row)].samples, row.name
    assert promtool_check(text) == ""


async def test_a_scrape_of_a_large_fleet_lets_the_event_loop_turn(core_server: RunningCore) -> None:
    """At 5,000 nodes a scrape is ~150,000 lines: written in one go, it held the event loop (and so
    every live push and ack) for a quarter of a second. It is written a slice of nodes per turn."""
    core = core_server.core
    count = 4 * prometheus.NODES_PER_TURN
    for i in range(count):
        st = NodeState(10_000 + i, f"bulk{i}", "", [], 0.0, None, None)
        st.latest = mt.Sample(seq=1, ts=1.0, metrics=metrics(cpu=float(i % 100)))
        core.nodes.nodes[st.id] = st
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        before = turns
        text = (await prometheus.exposition(core)).decode()
        during = turns - before
    finally:
        task.cancel()
    # Every family's node lines in four slices, each after a turn that let the ticker run.
    assert during >= 4 * len(mt.FIELDS)
    families = parse(text)
    cpu = families["sm_node_cpu_percent"].samples
    assert len(cpu) == count and cpu['node_id="10007",node="bulk7",group=""'] == "7.0"
