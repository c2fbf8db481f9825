"""Collectors against this machine's real psutil readings, and the rounding by the metric table."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import psutil
import pytest

from servermanager.agent.collectors import (
    CpuCollector,
    CpuReading,
    DiskCollector,
    DiskReading,
    LoadReading,
    MetricsCollector,
    NetCollector,
    NetReading,
    SensorsCollector,
    SystemReading,
)
from servermanager.common.metrics import (
    FIELD_DECIMALS,
    FIELDS,
    SCALAR_FIELDS,
    Field,
    Metrics,
    NetIface,
    Sample,
    Unit,
    metrics_struct,
    scalar,
)
from servermanager.common.protocol import AgentToCore, Samples, decode, decoder, encode


def _busy() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.system)


def _burn_cpu_time() -> None:
    # Spin until the kernel has counted some busy time (a condition, not a sleep), so the next
    # reading has a real interval to measure.
    start = _busy()
    x = 0
    while _busy() - start < 0.03:
        x += sum(range(1000))


def test_cpu_percentages_are_sane() -> None:
    cpu = CpuCollector()
    _burn_cpu_time()
    reading = cpu.collect()
    assert 0.0 <= reading.pct <= 100.0
    assert len(reading.per_core) == psutil.cpu_count()
    assert all(0.0 <= p <= 100.0 for p in reading.per_core)
    assert reading.pct > 0.0  # we just burned CPU: the first value is not a priming artefact


def test_metrics_are_sane_and_encode() -> None:
    collector = MetricsCollector()
    first = collector.collect()
    _burn_cpu_time()
    second = collector.collect()
    for m in (first, second):
        assert isinstance(m, Metrics)
        assert 0.0 <= m.cpu_pct <= 100.0
        assert len(m.cpu_per_core) == psutil.cpu_count()
        assert all(0.0 <= p <= 100.0 for p in m.cpu_per_core)
        assert 0.0 <= m.mem_pct <= 100.0
        assert 0 < m.mem_used <= m.mem_total
        assert 0 <= m.swap_used <= m.swap_total
        assert m.load1 >= 0 and m.load5 >= 0 and m.load15 >= 0
        assert m.uptime > 0
        assert m.procs > 0
        for d in m.disks:
            assert d.total > 0 and 0.0 <= d.pct <= 100.0
        assert len({d.mount for d in m.disks}) == len(m.disks)
        assert {n.name for n in m.nets} == set(psutil.net_io_counters(pernic=True))
        for t in m.temps:
            assert math.isfinite(t.current)
    # Rates need two readings; the second collect always has them.
    assert second.net_rx_bps is not None and second.net_rx_bps >= 0
    assert second.net_tx_bps is not None and second.net_tx_bps >= 0
    assert all(n.rx_bps is not None and n.tx_bps is not None for n in second.nets)
    if psutil.disk_io_counters() is not None:
        for rate in (
            second.disk_read_bps,
            second.disk_write_bps,
            second.disk_read_iops,
            second.disk_write_iops,
        ):
            assert rate is not None and rate >= 0
    # Every series carries the precision its table row says, not a tail of clock noise: the
    # digits would be stored and sent with every history answer. Whole-unit rows are ints.
    for f in SCALAR_FIELDS:
        value = getattr(second, f)
        assert value is None or value == round(value, FIELD_DECIMALS[f]), (f, value)
        if FIELD_DECIMALS[f] == 0 and value is not None:
            assert isinstance(value, int), (f, value)
    assert all(p == round(p, FIELD_DECIMALS["cpu_pct"]) for p in second.cpu_per_core)
    for n in second.nets:
        assert isinstance(n.rx_bps, int) and isinstance(n.tx_bps, int), n
    # The wire format round-trips through the core's own decoder.
    frame = encode(
        Samples(samples=[Sample(seq=1, ts=1.0, metrics=first), Sample(seq=2, ts=2.0, metrics=second)])
    )
    back = decode(decoder(AgentToCore), frame)
    assert back.samples[1].metrics == second


def test_first_rate_reading_is_none_without_priming() -> None:
    # NetCollector primes itself in __init__; a fresh tracker key shows the raw first-reading rule.
    net = NetCollector()
    net._rates.retain([])  # forget the priming reading
    reading = net.collect()
    assert all(n.rx_bps is None and n.tx_bps is None for n in reading.nets)
    assert reading.rx_bps is None


def test_disk_usage_skips_pseudo_and_duplicates() -> None:
    disks = DiskCollector().collect().disks
    assert all(d.fstype not in ("tmpfs", "squashfs", "overlay", "proc", "devtmpfs") for d in disks)
    real = {p.mountpoint for p in psutil.disk_partitions(all=False)}
    assert {d.mount for d in disks} <= real


def test_disk_usage_of_a_host_mounted_at_host_root(tmp_path: Path) -> None:
    # A container's view of a host: the host's / at tmp_path, its procfs at tmp_path/proc.
    (tmp_path / "proc" / "1").mkdir(parents=True)
    (tmp_path / "proc" / "filesystems").write_text(
        "nodev\tsysfs\nnodev\tproc\nnodev\tnfs4\n\text4\nnodev\tzfs\n"
    )
    (tmp_path / "mnt" / "big disk").mkdir(parents=True)
    (tmp_path / "tank").mkdir()
    (tmp_path / "proc" / "1" / "mounts").write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        "proc /proc proc rw 0 0\n"
        "/dev/sdb1 /mnt/big\\040disk ext4 rw 0 0\n"
        "nas:/export /net nfs4 rw 0 0\n"
        "tank /tank zfs rw 0 0\n"
        "/dev/sdc1 /gone ext4 rw 0 0\n"  # listed, but not there under the host root: skipped
    )
    disks = DiskCollector(host_root=f"{tmp_path}/").collect().disks
    # Reported by their paths on the host, measured under the host root (here: this machine's disk).
    assert [(d.mount, d.fstype) for d in disks] == [
        ("/", "ext4"),
        ("/tank", "zfs"),
        ("/mnt/big disk", "ext4"),
    ]
    here = psutil.disk_usage(str(tmp_path))
    assert all(d.total == here.total and 0 <= d.pct <= 100 for d in disks)


def test_sensors_never_raise() -> None:
    reading = SensorsCollector().collect()
    assert isinstance(reading.temps, list)
    assert reading.battery is None or 0.0 <= reading.battery.pct <= 100.0


# ---------------------------------------------------------------- rounding by the table


class Fixed:
    """A family collector that returns one canned reading."""

    def __init__(self, reading: object) -> None:
        self.reading = reading

    def collect(self) -> object:
        return self.reading


def fixed_collector(collector: MetricsCollector) -> MetricsCollector:
    """The same collector with every built-in family answering unrounded canned values."""
    third = 1000 / 3
    collector.cpu = Fixed(CpuReading(12.3456, [third / 10, 99.996]))  # type: ignore[assignment]
    collector.load = Fixed(LoadReading(0.123456, 1.0 / 3, 2.0))  # type: ignore[assignment]
    collector.system = Fixed(SystemReading(1234.5678, 42))  # type: ignore[assignment]
    collector.disks = Fixed(DiskReading([], third, 2 * third, third, None))  # type: ignore[assignment]
    nets = [NetIface("eth0", 10, 20, third, None)]
    collector.net = Fixed(NetReading(nets, third, 2 * third))  # type: ignore[assignment]
    return collector


def test_values_are_rounded_once_to_their_table_rows_decimals() -> None:
    m = fixed_collector(MetricsCollector()).collect()
    assert FIELD_DECIMALS["cpu_pct"] == 2 and FIELD_DECIMALS["disk_read_bps"] == 0
    assert m.cpu_pct == 12.35
    assert m.cpu_per_core == [33.33, 100.0]  # a core is measured like the total
    assert (m.load1, m.load5, m.load15) == (0.12, 0.33, 2.0)
    # Whole-unit rows (bytes/s, seconds) go as whole numbers: 333, not 333.33 or 333.0.
    assert m.uptime == 1235 and isinstance(m.uptime, int)
    assert m.disk_read_bps == 333 and isinstance(m.disk_read_bps, int)
    assert m.disk_write_bps == 667 and m.disk_read_iops == 333.33 and m.disk_write_iops is None
    assert (m.net_rx_bps, m.net_tx_bps) == (333, 667)
    assert m.nets == [NetIface("eth0", 10, 20, 333, None)]  # an interface like the total
    assert m.procs == 42
    wire = msgspec.json.decode(encode(m))
    assert wire["uptime"] == 1235 and b'"uptime":1235,' in encode(m)
    assert wire["disk_read_iops"] == 333.33


# A table with one row more than the built-in fields, and the struct it makes: what adding a
# scalar metric to common.metrics.FIELDS does.
GPU = Field("gpu_pct", Unit.PERCENT, 1, "GPU", "GPU busy, percent")
EXTENDED = (*FIELDS, GPU)
ExtendedMetrics = metrics_struct(EXTENDED)


def test_an_added_table_row_is_collected_rounded_and_sent() -> None:
    collector = MetricsCollector(
        scalars={"gpu_pct": lambda: 41.26}, fields=EXTENDED, metrics_type=ExtendedMetrics
    )
    m = collector.collect()
    assert isinstance(m, ExtendedMetrics)
    assert scalar(m, "gpu_pct") == 41.3  # the row's one decimal
    sample = Sample(seq=1, ts=1.0, metrics=m)
    assert b'"gpu_pct":41.3' in encode(Samples(samples=[sample]))


def test_a_failing_added_collector_sends_none_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def broken() -> float | None:
        calls.append(1)
        raise RuntimeError("no GPU driver")

    collector = MetricsCollector(scalars={"gpu_pct": broken}, fields=EXTENDED, metrics_type=ExtendedMetrics)
    first, second = collector.collect(), collector.collect()
    assert scalar(first, "gpu_pct") is None and scalar(second, "gpu_pct") is None
    assert len(calls) == 2  # tried every sample: a driver may come back
    assert caplog.text.count("collector gpu_pct failed") == 1
    assert first.cpu_pct >= 0  # the rest of the sample is whole
    nan = MetricsCollector(
        scalars={"gpu_pct": lambda: math.nan}, fields=EXTENDED, metrics_type=ExtendedMetrics
    )
    assert scalar(nan.collect(), "gpu_pct") is None


def test_added_collectors_need_an_added_table_row() -> None:
    with pytest.raises(ValueError, match="'gpu_pct': the metric table has no such row"):
        MetricsCollector(scalars={"gpu_pct": lambda: 1.0}, metrics_type=ExtendedMetrics)
    with pytest.raises(ValueError, match="'gpu_pct': not an added field of Metrics"):
        MetricsCollector(scalars={"gpu_pct": lambda: 1.0}, fields=EXTENDED)
    with pytest.raises(ValueError, match="'cpu_pct': not an added field"):
        MetricsCollector(scalars={"cpu_pct": lambda: 1.0})
