"""Device series: a real agent's disks, interfaces and sensors stored as dev: series, rolled up, read
by REST; the raw rows carry no detail blob, yet a node's latest detail survives a core restart."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path

from devkit.cores import RunningCore
from servermanager.agent.collectors import MetricsCollector
from servermanager.common.metrics import MAX_DISK_IO, DiskIO, DiskUsage, NetIface, Sample, Temperature
from servermanager.common.series import SeriesPoint
from servermanager.core.datadir import DB_FILENAME
from servermanager.core.store.devices import MAX_DEVICES, device_points
from servermanager.core.store.samples import SampleStore
from tests.helpers.core import RawAgent, metrics
from tests.helpers.wait import wait_until


def _disk(mount: str, used: int) -> DiskUsage:
    return DiskUsage(mount=mount, fstype="ext4", total=1000, used=used, pct=used / 10)


async def test_a_real_agents_devices_become_series_readable_by_rest(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "c").start()
    try:
        agent = RawAgent(server)
        welcome = await agent.hello(token=await server.enroll_token())
        nid = welcome.node_id
        collector = MetricsCollector()
        real = collector.collect()  # this machine's own mounts, interfaces (with rates) and sensors
        assert real.disks and real.nets
        now = time.time()
        await agent.send_samples([Sample(seq=1, ts=now - 1, metrics=real)])
        token = await server.admin_token()
        status, body = await server.request("GET", f"/api/v1/nodes/{nid}/series?kind=device", token)
        assert status == 200
        listed = {s["selector"]: s for s in body["series"]}
        for d in real.disks[:MAX_DEVICES]:
            sel = f'dev:disk_pct{{mount="{d.mount}"}}'
            assert listed[sel]["last_value"] == d.pct and listed[sel]["unit"] == "%"
            assert listed[f'dev:disk_used_bytes{{mount="{d.mount}"}}']["last_value"] == d.used
        assert real.disk_io or not sys.platform.startswith("linux")
        for io in real.disk_io[:MAX_DEVICES]:
            if io.write_bps is not None:
                assert listed[f'dev:disk_write_bps{{disk="{io.name}"}}']["last_value"] == io.write_bps
                assert listed[f'dev:disk_write_bps{{disk="{io.name}"}}']["unit"] == "B/s"
            if io.read_iops is not None:
                assert listed[f'dev:disk_read_iops{{disk="{io.name}"}}']["last_value"] == io.read_iops
        for n in real.nets[:MAX_DEVICES]:
            if n.rx_bps is not None:
                assert listed[f'dev:net_rx_bps{{iface="{n.name}"}}']["last_value"] == n.rx_bps
        for t in real.temps[:MAX_DEVICES]:
            name = f"{t.sensor}/{t.label}" if t.label else t.sensor
            assert listed[f'dev:temp_celsius{{sensor="{name}"}}']["last_value"] == t.current
        assert len(listed) == len(device_points(nid, [Sample(seq=1, ts=now, metrics=real)]))
        # The agent's own series stay apart: the Custom tab's list has none of them.
        _, custom = await server.request("GET", f"/api/v1/nodes/{nid}/series", token)
        assert custom["series"] == []
        _, bad = await server.request("GET", f"/api/v1/nodes/{nid}/series?kind=disks", token)
        assert bad["error"]["code"] == "invalid_query"

        # History by device, in the metrics history's shape.
        mount = real.disks[0].mount
        more = [
            Sample(seq=2 + i, ts=now + i, metrics=metrics(disks=[_disk(mount, 100 * (i + 1))]))
            for i in range(3)
        ]
        await agent.send_samples(more)
        status, hist = await server.request(
            "GET",
            f"/api/v1/nodes/{nid}/series/history",
            token,
            params={"series": f'dev:disk_used_bytes{{mount="{mount}"}}', "from": now - 10, "to": now + 10},
        )
        assert status == 200 and hist["resolution"] == "raw"
        assert hist["avg"][f'dev:disk_used_bytes{{mount="{mount}"}}'] == [real.disks[0].used, 100, 200, 300]
    finally:
        await server.stop()


async def test_device_series_roll_up_and_are_pruned(store: SampleStore) -> None:
    base = 1_700_000_000.0 - 1_700_000_000.0 % 3600
    samples = [
        Sample(
            seq=i + 1,
            ts=base + 10 * i,
            metrics=metrics(
                disks=[_disk("/", 100 * (i + 1))],
                nets=[NetIface(name="eth0", rx_total=0, tx_total=0, rx_bps=float(i), tx_bps=None)],
                temps=[Temperature(sensor="coretemp", label="Core 0", current=40.0 + i)],
                # The first reading of a device has no rates: no points then either.
                disk_io=[DiskIO("sda") if i == 0 else DiskIO("sda", 1000.0 * i, 0.0, 2.0 * i, 0.0)],
            ),
        )
        for i in range(3)
    ]
    runner = asyncio.create_task(store.run())
    try:
        await store.store(1, samples)
    finally:
        runner.cancel()
    await store.rollup(now=base + 7200)
    listed = {(n, tuple(lab.items())): sid for sid, n, lab, *_ in await store.series.list(1, devices=True)}
    # No tx point while the interface has no tx rate: no made-up zero.
    assert set(listed) == {
        ("dev:disk_pct", (("mount", "/"),)),
        ("dev:disk_used_bytes", (("mount", "/"),)),
        ("dev:net_rx_bps", (("iface", "eth0"),)),
        ("dev:temp_celsius", (("sensor", "coretemp/Core 0"),)),
        ("dev:disk_read_bps", (("disk", "sda"),)),
        ("dev:disk_write_bps", (("disk", "sda"),)),
        ("dev:disk_read_iops", (("disk", "sda"),)),
        ("dev:disk_write_iops", (("disk", "sda"),)),
    }
    used = listed[("dev:disk_used_bytes", (("mount", "/"),))]
    m1 = await store.series.history(used, base - 1, base + 3600, "1m")
    assert m1 == {"ts": [base], "avg": [200.0], "min": [100.0], "max": [300.0]}
    h1 = await store.series.history(
        listed[("dev:temp_celsius", (("sensor", "coretemp/Core 0"),))], base, base + 1, "1h"
    )
    assert h1["avg"] == [41.0] and h1["max"] == [42.0]
    await store.prune({"raw": 60, "1m": 86400 * 365 * 10, "1h": 86400 * 365 * 10}, now=base + 7200)
    assert (await store.series.history(used, base - 1, base + 3600, "raw"))["ts"] == []
    assert (await store.series.history(used, base - 1, base + 3600, "1m"))["avg"] == [200.0]
    read = listed[("dev:disk_read_bps", (("disk", "sda"),))]
    assert await store.series.history(read, base - 1, base + 3600, "1m") == {
        "ts": [base],
        "avg": [1500.0],
        "min": [1000.0],
        "max": [2000.0],
    }


def test_devices_are_bounded_per_sample_and_custom_series_cannot_pose_as_one() -> None:
    many = metrics(disks=[_disk(f"/m{i}", i) for i in range(MAX_DEVICES + 10)], nets=[])
    points = device_points(1, [Sample(seq=1, ts=1.0, metrics=many)])
    assert len(points) == 2 * MAX_DEVICES
    disks = metrics(
        disks=[], nets=[], disk_io=[DiskIO(f"sd{i}", 1.0, 2.0, 3.0, 4.0) for i in range(MAX_DISK_IO)]
    )
    assert len(device_points(1, [Sample(seq=1, ts=1.0, metrics=disks)])) == 4 * min(MAX_DISK_IO, MAX_DEVICES)


async def test_an_agents_own_dev_series_is_not_stored(store: SampleStore) -> None:
    m = metrics(
        disks=[], nets=[], series=[SeriesPoint("dev:disk_pct", 99.0, {"mount": "/"}), SeriesPoint("ok", 1.0)]
    )
    runner = asyncio.create_task(store.store(1, [Sample(seq=1, ts=time.time(), metrics=m)]))
    writer = asyncio.create_task(store.run())
    try:
        await runner
    finally:
        writer.cancel()
    assert await store.series.list(1, devices=True) == []
    assert [n for _, n, *_ in await store.series.list(1)] == ["ok"]


async def test_no_detail_blob_per_row_yet_the_latest_detail_survives_a_restart(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "c").start()
    try:
        agent = RawAgent(server)
        welcome = await agent.hello(token=await server.enroll_token())
        nid = welcome.node_id
        now = time.time()
        first = metrics(disks=[_disk("/", 100)])
        # The second within the writer's latest_every: kept in memory, written at the clean stop.
        second = metrics(
            disks=[_disk("/", 100), _disk("/data", 700)],
            nets=[NetIface(name="eth1", rx_total=1, tx_total=2, rx_bps=3.0, tx_bps=4.0)],
            cpu_per_core=[1.0, 2.0, 3.0],
        )
        await agent.send_samples([Sample(seq=1, ts=now - 2, metrics=first)])
        await agent.send_samples([Sample(seq=2, ts=now - 1, metrics=second)])
        await agent.close()
    finally:
        await server.stop()
    con = sqlite3.connect(tmp_path / "c" / DB_FILENAME)
    try:
        rows = con.execute(
            "SELECT count(*), count(detail) FROM (SELECT detail FROM samples_raw UNION ALL SELECT detail FROM samples_head)"
        ).fetchone()
    finally:
        con.close()
    assert rows == (2, 0)

    server = await RunningCore(tmp_path / "c").start()
    try:
        token = await server.admin_token()
        _, node = await wait_until(
            lambda: server.request("GET", f"/api/v1/nodes/{nid}", token),
            lambda r: r[1].get("latest") is not None,
            what="the node's latest sample",
        )
        latest = node["latest"]["metrics"]
        assert [d["mount"] for d in latest["disks"]] == ["/", "/data"]
        assert [n["name"] for n in latest["nets"]] == ["eth1"]
        assert latest["cpu_per_core"] == [1.0, 2.0, 3.0]
    finally:
        await server.stop()
