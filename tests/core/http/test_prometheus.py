"""GET /metrics from a real core, in Prometheus text format, its HELP and TYPE lines derived from the metric table."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from devkit.cores import RunningCore
from servermanager.common import metrics as mt
from servermanager.core.http import prometheus
from tests.helpers.core import RawAgent


@dataclass
class Family:
    help: str | None = None
    type: str | None = None
    samples: dict[str, str] = field(default_factory=dict)  # labels -> value


def parse(text: str) -> dict[str, Family]:
    """The text format, strictly: HELP then TYPE then the samples of one family, each family once."""
    families: dict[str, Family] = {}
    current: str | None = None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP ") :].partition(" ")
            assert name not in families, f"{name} declared twice"
            families[name] = Family(help=help_text)
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            assert name == current and families[name].type is None, f"TYPE of {name} not right after its HELP"
            assert kind in ("gauge", "counter"), line
            families[name].type = kind
        else:
            assert line and not line.startswith("#"), repr(line)
            series, _, value = line.rpartition(" ")
            name, _, labels = series.partition("{")
            assert name == current, f"sample of {name} outside its family"
            float(value)
            families[name].samples[labels.rstrip("}")] = value
    return families


async def test_prometheus_export(core_server: RunningCore) -> None:
    agent = RawAgent(core_server, "prom-host")
    await agent.hello(token=await core_server.enroll_token())
    [sample] = agent.make(1, cpu=12.5)
    await agent.send_samples([sample])
    status, body = await core_server.request("GET", "/metrics", await core_server.admin_token())
    assert status == 200
    text = body.decode()
    assert 'sm_node_up{node_id="1",node="prom-host",group=""} 1' in text
    assert 'sm_node_cpu_pct{node_id="1",node="prom-host",group=""} 12.5' in text

    families = parse(text)
    labels = 'node_id="1",node="prom-host",group=""'
    # Every row of the table, derived ones (disk_pct) included, under its unchanged name.
    for row in mt.FIELDS:
        family = families[f"sm_node_{row.name}"]
        assert (family.help, family.type) == (row.help, "gauge"), row.name
        assert float(family.samples[labels]) == mt.scalar(sample.metrics, row.name), row.name
    assert families["sm_node_disk_pct"].samples[labels] == "40.0"
    assert families["sm_node_up"].type == "gauge"
    assert families["sm_node_up"].samples == {labels: "1"}
    assert families["sm_core_samples_written_total"].type == "counter"
    assert families["sm_core_samples_written_total"].samples == {"": "1"}
    assert families["sm_core_commits_total"].type == "counter"
    assert families["sm_core_clients"].type == "gauge"
    for name, family in families.items():
        assert family.help and family.type, name
    assert set(families) == {
        "sm_node_up",
        *(f"sm_node_{row.name}" for row in mt.FIELDS),
        "sm_core_samples_written_total",
        "sm_core_commits_total",
        "sm_core_clients",
        "sm_core_sockets_shed_total",
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
    family = parse(body.decode())["sm_node_disk_free_pct"]
    assert (family.help, family.type) == (row.help, "gauge")
    assert family.samples == {'node_id="1",node="h",group=""': "25.0"}


def test_every_kind_of_row_has_a_prometheus_type() -> None:
    assert set(prometheus.PROMETHEUS_TYPE) == set(mt.Kind)
