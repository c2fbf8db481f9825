"""Collectors against this machine's real psutil readings."""

from __future__ import annotations

import math

import msgspec
import psutil

from servermanager.agent.collectors import (
    CpuCollector,
    DiskCollector,
    MetricsCollector,
    NetCollector,
    SensorsCollector,
    agent_version,
    host_facts,
)
from servermanager.common.metrics import SCALAR_FIELDS, HostFacts, Metrics, Sample
from servermanager.common.protocol import AgentToCore, Hello, Samples, decode, decoder, encode


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
    # Every series carries the precision it is measured with (hundredths at most), not a tail
    # of clock noise: the digits would be stored and sent with every history answer.
    for f in SCALAR_FIELDS:
        value = getattr(second, f)
        assert value is None or value == round(value, 2), (f, value)
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


def test_sensors_never_raise() -> None:
    reading = SensorsCollector().collect()
    assert isinstance(reading.temps, list)
    assert reading.battery is None or 0.0 <= reading.battery.pct <= 100.0


def test_host_facts_are_filled_in() -> None:
    facts = host_facts()
    assert isinstance(facts, HostFacts)
    for field in ("hostname", "os", "os_version", "kernel", "arch", "cpu_model", "agent_version"):
        value = getattr(facts, field)
        assert isinstance(value, str) and value.strip(), field
    assert facts.cpu_count == psutil.cpu_count()
    assert facts.mem_total == psutil.virtual_memory().total
    assert facts.agent_version == agent_version()
    hello = Hello(protocol=1, host=facts)
    assert msgspec.json.decode(encode(hello))["host"]["hostname"] == facts.hostname
