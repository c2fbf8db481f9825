"""Collectors against this machine's real psutil readings, and the rounding by the metric table."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import psutil
import pytest

from servermanager.agent.collectors import (
    MOUNTS_MAX_AGE,
    NO_SENSORS_RECHECK,
    CpuCollector,
    CpuReading,
    DiskCollector,
    DiskCounters,
    DiskReading,
    LoadReading,
    MemoryCollector,
    MetricsCollector,
    NetCollector,
    NetReading,
    SensorsCollector,
    SystemReading,
    _linux_cpu_times,
    _MountWatch,
    linux_diskstats,
)
from servermanager.common.metrics import (
    FIELD_DECIMALS,
    FIELDS,
    MAX_DISK_IO,
    SCALAR_FIELDS,
    DiskIO,
    Field,
    Metrics,
    NetIface,
    Sample,
    Temperature,
    Unit,
    metrics_struct,
    scalar,
)
from servermanager.common.protocol import AgentToCore, Samples, decode, decoder, encode
from tests.agent.test_rates import FakeClock


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


def _disk_of(path: Path) -> str | None:
    """The whole disk (as /proc/diskstats names it) that holds `path`, or None (tmpfs, overlay...)."""
    st = os.stat(path)
    sys_dev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not sys_dev.exists():
        return None
    real = sys_dev.resolve()
    # A partition's sysfs directory sits inside its disk's.
    return real.parent.name if (real / "partition").exists() else real.name


def test_a_written_file_shows_in_its_disks_write_rate(tmp_path: Path) -> None:
    disk = _disk_of(tmp_path) if sys.platform.startswith("linux") else None
    if disk is None or disk.startswith(("loop", "ram", "zram")):
        pytest.skip(f"{tmp_path} is on no block device whose counters the kernel reports per disk")
    clock = FakeClock()
    collector = DiskCollector(clock)
    payload = os.urandom(1 << 20)
    with open(tmp_path / "data.bin", "wb") as f:
        for _ in range(8):
            f.write(payload)
        f.flush()
        os.fsync(f.fileno())  # on the disk now, so the kernel has counted it
    clock.t += 1.0  # exactly one second, so the rate is the bytes counted in the window
    reading = collector.collect()
    by_name = {d.name: d for d in reading.devices}
    assert disk in by_name, f"{disk} not among {sorted(by_name)}"
    io = by_name[disk]
    # Other writers on the machine can only add to it.
    assert io.write_bps is not None and io.write_bps >= 8 << 20
    assert io.write_iops is not None and io.write_iops >= 1
    assert reading.write_bps is not None and reading.write_bps >= io.write_bps


def test_disk_io_is_per_whole_disk_without_loop_or_ram_devices_and_no_first_rate() -> None:
    collector = DiskCollector()
    collector._rates.retain([])  # forget the priming reading: every rate is a first one
    first = collector.collect()
    assert all(d.read_bps is None and d.write_iops is None for d in first.devices)
    assert first.read_bps is None
    names = [d.name for d in first.devices]
    assert len(names) <= MAX_DISK_IO and names == sorted(names)
    assert not any(n.startswith(("loop", "ram", "zram")) for n in names)
    if os.path.isdir("/sys/block"):
        assert all(os.path.exists(f"/sys/block/{n}") for n in names)  # no partitions
    second = collector.collect()
    assert [d.name for d in second.devices] == names or not names
    assert all(d.read_bps is not None and d.read_bps >= 0 for d in second.devices)


def test_per_disk_rates_travel_rounded_in_the_sample() -> None:
    clock = FakeClock()
    collector = MetricsCollector(clock)
    clock.t += 3.0
    m = collector.collect()
    for d in m.disk_io:
        assert isinstance(d.read_bps, int) and isinstance(d.write_bps, int)
        assert d.read_iops is not None and round(d.read_iops, 2) == d.read_iops
    back = msgspec.json.decode(msgspec.json.encode(m), type=Metrics)
    assert back.disk_io == m.disk_io


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/diskstats is Linux's")
def test_diskstats_read_as_psutil_reads_them(tmp_path: Path) -> None:
    theirs = psutil.disk_io_counters(perdisk=True)
    mine = linux_diskstats()
    assert set(mine) == set(theirs)
    for name, c in mine.items():
        t = theirs[name]
        # Read a moment apart: counters only move forward.
        assert c.read_count >= t.read_count and c.write_count >= t.write_count
        assert c.read_bytes >= t.read_bytes and c.write_bytes >= t.write_bytes
        assert c.write_bytes - t.write_bytes < 1 << 30
    old = tmp_path / "diskstats"
    old.write_text("   3    1   hda1 8 16 24 32\n   8    0 sda 1 2 3 4 5 6 7 8 9 10 11\n")
    assert linux_diskstats(str(old)) == {
        "hda1": DiskCounters(8, 24, 16 * 512, 32 * 512),
        "sda": DiskCounters(1, 5, 3 * 512, 7 * 512),
    }
    (tmp_path / "diskstats24").write_text("   3     0   8 hda 8 8 8 8 8 8 8 8 8 8 8\n")
    with pytest.raises(ValueError, match="a line of 15 fields"):
        linux_diskstats(str(tmp_path / "diskstats24"))  # Linux 2.4's layout: psutil reads that one
    disks = DiskCollector()
    disks._diskstats = str(tmp_path / "diskstats24")
    assert {d.name for d in disks.collect().devices} <= set(theirs) and disks._diskstats == ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_cpu_times_from_one_read_of_proc_stat_are_psutils() -> None:
    mine, per = _linux_cpu_times("/proc/stat")
    theirs = psutil.cpu_times()
    assert mine._fields == theirs._fields and len(per) == len(psutil.cpu_times(percpu=True))
    # Read a moment apart: no counter moved back, and none by more than a second.
    for a, b in zip(mine, theirs, strict=True):
        assert a <= b <= a + 1.0


def test_cpu_falls_back_to_psutil_on_an_odd_proc_stat(tmp_path: Path) -> None:
    odd = tmp_path / "stat"
    odd.write_text("cpu  1 2 3 4\ncpu0 1 2 3 4\n")  # a kernel older than 2.6.33
    cpu = CpuCollector(str(odd))
    _burn_cpu_time()
    assert 0.0 < cpu.collect().pct <= 100.0  # psutil's times, not the file's


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/meminfo is Linux's")
def test_memory_from_one_read_of_meminfo_agrees_with_psutil() -> None:
    mine = MemoryCollector().collect()
    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    assert (mine.mem_total, mine.swap_total) == (vm.total, sw.total)
    # Read a moment apart: the machine's other processes move the rest a little.
    assert abs(mine.mem_used - (vm.total - vm.available)) < vm.total * 0.02
    assert abs(mine.mem_pct - vm.percent) < 2 and mine.mem_pct == round(mine.mem_pct, 1)
    assert abs(mine.swap_used - sw.used) <= max(sw.total * 0.02, 1 << 20)


def test_memory_falls_back_to_psutil_without_memavailable(tmp_path: Path) -> None:
    old = tmp_path / "meminfo"
    old.write_text("MemTotal:        1000 kB\nMemFree:          500 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n")
    reading = MemoryCollector(str(old)).collect()
    assert reading.mem_total == psutil.virtual_memory().total  # psutil's, not the file's 1000 kB


class HwTemp(NamedTuple):
    """One reading as psutil.sensors_temperatures() lists it (the fields the collector reads)."""

    label: str
    current: float


def test_a_host_without_sensors_is_looked_at_again_only_now_and_then(monkeypatch: pytest.MonkeyPatch) -> None:
    # Temperature sensors cannot be made here: psutil's reader is replaced by a counting one.
    calls: list[float] = []
    found: dict[str, list[Any]] = {}

    def temperatures() -> dict[str, list[Any]]:
        calls.append(clock.t)
        return found

    monkeypatch.setattr(psutil, "sensors_temperatures", temperatures, raising=False)
    clock = FakeClock()
    sensors = SensorsCollector(clock)
    assert sensors.collect().temps == [] and len(calls) == 1
    clock.t += NO_SENSORS_RECHECK - 1
    assert sensors.collect().temps == [] and len(calls) == 1
    found["acpitz"] = [HwTemp("", 41.0)]  # a sensor appears
    clock.t += 1
    assert sensors.collect().temps == [Temperature("acpitz", "temp1", 41.0)] and len(calls) == 2
    clock.t += 1
    sensors.collect()
    assert len(calls) == 3  # with sensors, every sample reads them


def test_mounts_are_listed_again_when_the_table_changes_or_grows_old(tmp_path: Path) -> None:
    clock = FakeClock()
    table = tmp_path / "mounts"
    table.write_text("")
    watch = _MountWatch(str(table), clock)  # a plain file: never marked, so only age counts
    assert watch.changed()
    assert not watch.changed()
    clock.t += MOUNTS_MAX_AGE
    assert watch.changed() and not watch.changed()
    watch.close()
    if not sys.platform.startswith("linux"):
        return
    procfs = _MountWatch("/proc/self/mounts", clock)
    assert procfs.changed() and not procfs.changed()
    target = tmp_path / "mnt"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "none", str(target)], capture_output=True, check=False)
    if mounted.returncode != 0:
        procfs.close()
        pytest.skip(f"cannot mount here to see the kernel mark the table: {mounted.stderr!r}")
    try:
        assert procfs.changed(), "a mount marks /proc/self/mounts"
        assert not procfs.changed()
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert procfs.changed(), "so does an unmount"
    procfs.close()


def test_sensors_never_raise() -> None:
    reading = SensorsCollector().collect()
    assert isinstance(reading.temps, list)
    assert reading.battery is None or 0.0 <= reading.battery.pct <= 100.0


# ---------------------------------------------------------------- rounding by the table


class Fixed:
    """A family collector that returns one canned reading."""

    def __init__(self, reading: object) -> None:
        self.reading = reading

    def collect(self, *_given: object) -> object:
        return self.reading


def fixed_collector(collector: MetricsCollector) -> MetricsCollector:
    """The same collector with every built-in family answering unrounded canned values."""
    third = 1000 / 3
    collector.cpu = Fixed(CpuReading(12.3456, [third / 10, 99.996]))  # type: ignore[assignment]
    collector.load = Fixed(LoadReading(0.123456, 1.0 / 3, 2.0))  # type: ignore[assignment]
    collector.system = Fixed(SystemReading(1234.5678, 42))  # type: ignore[assignment]
    devices = [DiskIO("sda", third, None, third, 2 * third)]
    collector.disks = Fixed(DiskReading([], third, 2 * third, third, None, devices))  # type: ignore[assignment]
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
    assert m.disk_io == [DiskIO("sda", 333, None, 333.33, 666.67)]  # a disk like the totals
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
