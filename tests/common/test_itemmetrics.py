"""Per-item rule metrics: the dev: rows in step with the stored device series, matching, the worst item, errors."""

from __future__ import annotations

import pytest

from servermanager.common.itemmetrics import ITEM_METRICS, item_metric, item_reader
from servermanager.common.metrics import (
    ContainerInfo,
    DiskIO,
    DiskUsage,
    GpuInfo,
    Hardware,
    Metrics,
    NetIface,
    Sample,
    Temperature,
)
from servermanager.common.series import DEVICE_PREFIX, SelectorError, SeriesPoint
from servermanager.common.series import labels_key as key
from servermanager.core.store.devices import device_points
from tests.helpers.core import metrics


def _full() -> Metrics:
    return metrics(
        disks=[
            DiskUsage(mount="/", fstype="ext4", total=1000, used=400, pct=40.0),
            DiskUsage(mount="/data", fstype="xfs", total=1000, used=950, pct=95.0),
        ],
        disk_io=[
            DiskIO("sda", read_bps=4096.0, write_bps=8192.0, read_iops=1.0, write_iops=2.0),
            DiskIO("nvme0n1"),  # first reading: no rates yet
        ],
        nets=[
            NetIface(name="eth0", rx_total=1, tx_total=2, rx_bps=100.0, tx_bps=50.0),
            NetIface(name="eth1", rx_total=1, tx_total=2),  # first reading: no rate yet
        ],
        temps=[
            Temperature(sensor="coretemp", label="Package id 0", current=71.0),
            Temperature("acpitz", "", 40.0),
        ],
        containers=[
            ContainerInfo(
                name="web", state="running", health="healthy", cpu_pct=12.5, mem_used=200, mem_limit=800
            ),
            ContainerInfo(name="db", state="exited"),
            ContainerInfo(name="queue", state="running", health="unhealthy"),
        ],
        hardware=Hardware(
            gpus=[GpuInfo(index=0, name="T4", util_pct=88.0, mem_used=3, mem_total=12, temp=65.0)]
        ),
        series=[SeriesPoint("check_up", 1.0, {"check": "web"})],
    )


def test_dev_rows_name_exactly_the_stored_device_series() -> None:
    """Every device point the core stores is readable by a dev: rule with the same name, labels and
    value; a device series added to core/store/devices.py without a row here fails this test."""
    m = _full()
    stored = {(p.key[1], p.key[2]): p.value for p in device_points(1, [Sample(1, 0.0, m)])}
    readable: dict[tuple[str, str], float] = {}
    for im in ITEM_METRICS:
        if im.name.startswith(DEVICE_PREFIX):
            for item, value in im.read(m) or ():
                if value is not None:
                    readable[(im.name, key({im.label: item}))] = value
    assert readable == stored
    assert len(stored) == 12  # 2 mounts x 2, one disk x 4 rates, one interface x 2 rates, 2 sensors


@pytest.mark.parametrize(
    ("metric", "above", "value"),
    [
        ('dev:disk_pct{mount="/"}', True, 40.0),
        ("dev:disk_pct", True, 95.0),  # no label: every mount, the worst for ">" ...
        ("dev:disk_pct", False, 40.0),  # ... and for "<"
        ('dev:disk_pct{mount="/gone"}', True, None),
        ('dev:temp_celsius{sensor="coretemp/Package id 0"}', True, 71.0),
        ('dev:temp_celsius{sensor="acpitz"}', True, 40.0),
        ('dev:net_rx_bps{iface="eth1"}', True, None),  # no rate yet: no value, not zero
        ('container:cpu_pct{name="web"}', True, 12.5),
        ('container:mem_pct{name="web"}', True, 25.0),
        ('container:running{name="web"}', False, 1.0),
        ('container:running{name="db"}', False, 0.0),
        ('container:running{name="removed"}', False, 0.0),  # named, gone from a fresh list: not running
        ("container:running", False, 0.0),
        ('container:healthy{name="queue"}', False, 0.0),
        ('container:healthy{name="db"}', False, None),  # no health check
        ("container:healthy", False, 0.0),
        ('gpu:util_pct{index="0"}', True, 88.0),
        ('gpu:mem_pct{index="0"}', True, 25.0),
        ('gpu:temp_celsius{index="0"}', True, 65.0),
        ('gpu:power_w{index="0"}', True, None),
        ('gpu:util_pct{index="1"}', True, None),
    ],
)
def test_reader_matches_labels_and_takes_the_worst(metric: str, above: bool, value: float | None) -> None:
    assert item_reader(metric, above)(_full()) == value


def test_a_sample_without_a_fresh_list_has_no_value() -> None:
    # Containers and GPUs come only in the samples that carry a new list: no value, not "gone".
    m = metrics()
    assert m.containers is None and m.hardware is None
    assert item_reader('container:running{name="web"}', False)(m) is None
    assert item_reader('gpu:util_pct{index="0"}', True)(m) is None
    assert item_reader('container:running{name="web"}', False)(metrics(containers=[])) == 0.0


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ("dev:disk_full", "unknown metric 'dev:disk_full'; dev: are: dev:disk_used_bytes, dev:disk_pct"),
        ("container:cpu", "unknown metric 'container:cpu'; container: are: container:running"),
        ("gpu:fan", "unknown metric 'gpu:fan'; gpu: are: gpu:util_pct"),
        ('dev:disk_pct{iface="eth0"}', "dev:disk_pct takes only the label 'mount' (the item), not iface"),
        ('container:cpu_pct{name="web",image="x"}', "takes only the label 'name' (the item), not image"),
        ("dev:disk_pct{mount=/}", "cannot read labels"),
    ],
)
def test_bad_metrics_say_what_is_wrong(metric: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        item_metric(metric)
    assert message in str(info.value)
