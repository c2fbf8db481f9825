"""The Devices tab against a real core: a real collector's devices in the picker, a picked device charted."""

from __future__ import annotations

import time

from servermanager.agent.collectors import MetricsCollector
from servermanager.common import rest as m
from servermanager.common.metric_table import Unit
from servermanager.common.metrics import DiskUsage, NetIface, Sample
from servermanager.desktop.context import AppContext
from servermanager.desktop.devices import Device, devices_of, families_of, merged
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, enrolled, sign_in, until
from tests.helpers.core import metrics


def test_devices_are_grouped_by_kind_and_charted_together() -> None:
    def info(name: str, **labels: str) -> m.SeriesInfo:
        return m.SeriesInfo(name, labels, name + str(labels))

    devices = devices_of(
        [
            info("dev:net_tx_bps", iface="eth0"),
            info("dev:temp_celsius", sensor="acpi/"),
            info("dev:net_rx_bps", iface="eth0"),
            info("dev:disk_pct", mount="/var"),
            info("dev:disk_pct", mount="/"),
            info("dev:something_new", mount="/"),
            info("dev:disk_write_iops", disk="nvme0n1"),
            info("dev:disk_read_bps", disk="nvme0n1"),
            info("dev:disk_write_bps", disk="nvme0n1"),
            info("dev:disk_read_iops", disk="nvme0n1"),
        ]
    )
    assert [d.title for d in devices] == [
        "Disk /",
        "Disk /var",
        "Disk I/O nvme0n1",
        "Interface eth0",
        "Sensor acpi/",
    ]
    (traffic,) = families_of(devices[3])
    assert traffic.labels == ("received", "sent") and len(traffic.fields) == 2
    throughput, operations = families_of(devices[2])
    assert (throughput.title, throughput.labels, throughput.unit) == (
        "Throughput",
        ("read", "written"),
        Unit.BYTES_PER_S,
    )
    assert (operations.title, operations.labels, operations.unit) == (
        "Operations",
        ("reads", "writes"),
        Unit.PER_S,
    )
    a = m.History(1, "raw", 0.0, 9.0, ["a"], [1.0, 2.0], {"a": [1.0, 2.0]})
    b = m.History(1, "raw", 0.0, 9.0, ["b"], [2.0], {"b": [5.0]})
    both = merged([a, b])
    assert both.fields == ["a", "b"] and both.avg == {"a": [1.0, 2.0], "b": [None, 5.0]}
    assert both.min is None


def test_the_tab_lists_a_real_collectors_devices_and_charts_one(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    core = cores.c
    real = MetricsCollector().collect()  # this machine's mounts, interfaces and sensors
    agent = run(enrolled(core, "web-1", disks=[], nets=[]))
    assert agent.node_id is not None
    t0 = time.time()
    run(agent.send_samples([Sample(seq=2, ts=t0 - 30, metrics=real)]))
    eth = [NetIface(name="eth9", rx_total=0, tx_total=0, rx_bps=100.0 * i, tx_bps=50.0) for i in range(3)]
    run(
        agent.send_samples(
            [
                Sample(
                    seq=3 + i,
                    ts=t0 - 20 + 5 * i,
                    metrics=metrics(
                        disks=[DiskUsage(mount="/", fstype="ext4", total=100, used=40, pct=40.0)],
                        nets=[eth[i]],
                    ),
                )
                for i in range(3)
            ]
        )
    )
    run(sign_in(ctx, core))
    view = window.open_node(agent.node_id)
    window.show()
    panel = view.show_devices()
    run(until(lambda: panel.loads >= 1, "the devices loaded"))
    titles = [panel.picker.itemText(i) for i in range(panel.picker.count())]
    for d in real.disks:
        assert f"Disk {d.mount}" in titles
    for io in real.disk_io:
        assert f"Disk I/O {io.name}" in titles
    assert "Interface eth9" in titles
    assert not panel.empty.isVisible()
    # The first device is charted at once; picking the interface charts its traffic.
    run(until(lambda: panel.chart_loads >= 1, "the first device charted"))
    panel.pick("Interface eth9")
    assert panel.device == Device(
        "iface",
        "eth9",
        (("net_rx_bps", 'dev:net_rx_bps{iface="eth9"}'), ("net_tx_bps", 'dev:net_tx_bps{iface="eth9"}')),
    )
    run(until(lambda: panel.chart_loads >= 2, "the interface charted"))
    assert panel.charts is not None
    chart = panel.charts.charts["traffic"]
    xs, ys = chart.data()
    assert xs.size == 3
    assert list(ys['dev:net_rx_bps{iface="eth9"}']) == [0.0, 100.0, 200.0]
    assert list(ys['dev:net_tx_bps{iface="eth9"}']) == [50.0, 50.0, 50.0]
