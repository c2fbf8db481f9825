"""Rules on devices (dev:), containers and GPUs on a real core fed by a real agent socket: crafted but
valid samples, the same for/clear/keep_firing as scalars, the worst matching item, precise 400s."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devkit.cores import RunningCore
from servermanager.agent.collectors import MetricsCollector
from servermanager.common.metrics import ContainerInfo, DiskUsage, GpuInfo, Hardware, Sample, Temperature
from tests.core.alerts.helpers import RULE, Rig


@pytest.fixture
async def rig(core_server: RunningCore) -> AsyncIterator[Rig]:
    r = await Rig(core_server).start()
    try:
        yield r
    finally:
        await r.agent.close()


def _disks(root: float, data: float) -> list[DiskUsage]:
    return [
        DiskUsage(mount="/", fstype="ext4", total=1000, used=int(root * 10), pct=root),
        DiskUsage(mount="/data", fstype="xfs", total=1000, used=int(data * 10), pct=data),
    ]


async def test_a_mount_rule_with_for_and_hysteresis(rig: Rig) -> None:
    rule = await rig.rule(
        name="data full",
        metric='dev:disk_pct{ mount = "/data" }',
        threshold=90,
        clear_threshold=80,
        **{"for": "5s"},
    )
    assert rule["metric"] == 'dev:disk_pct{mount="/data"}'
    await rig.sample(10.0, disks=_disks(99, 50))  # the other mount full: not this rule's
    assert await rig.alerts() == []
    t0 = await rig.sample(10.0, disks=_disks(40, 95))
    [a] = await rig.alerts()
    assert (a["state"], a["started_at"], a["value"], a["metric"]) == (
        "pending",
        t0,
        95.0,
        'dev:disk_pct{mount="/data"}',
    )
    t_fire = await rig.sample(10.0, at=5.0, disks=_disks(40, 93))
    [a] = await rig.alerts()
    assert (a["state"], a["fired_at"], a["peak"]) == ("firing", t_fire, 95.0)
    await rig.sample(10.0, disks=_disks(40, 85))  # under the threshold, over the clear one
    assert (await rig.alerts())[0]["state"] == "firing"
    await rig.sample(10.0, disks=[])  # a sample without the mount judges nothing
    assert (await rig.alerts())[0]["state"] == "firing"
    t_res = await rig.sample(10.0, disks=_disks(40, 79))
    [a] = await rig.alerts()
    assert (a["state"], a["resolved_at"]) == ("resolved", t_res)


async def test_a_rule_over_every_mount_is_one_alert_on_the_worst(rig: Rig) -> None:
    await rig.rule(name="any disk", metric="dev:disk_pct", threshold=90)
    await rig.sample(10.0, disks=_disks(92, 97))
    [a] = await rig.alerts()
    assert (a["state"], a["value"]) == ("firing", 97.0)
    await rig.sample(10.0, disks=_disks(95, 50))  # still one alert (rule x node): "/" is now the worst
    [a] = await rig.alerts()
    assert a["state"] == "firing"
    await rig.sample(10.0, disks=_disks(50, 50))
    [a] = await rig.alerts()
    assert (a["state"], a["value"], a["peak"]) == ("resolved", 50.0, 97.0)


async def test_a_sensor_rule_with_keep_firing_for(rig: Rig) -> None:
    await rig.rule(
        name="hot",
        metric='dev:temp_celsius{sensor="coretemp/Package id 0"}',
        threshold=85,
        keep_firing_for="10s",
    )

    def temps(c: float) -> list[Temperature]:
        return [Temperature("coretemp", "Package id 0", c), Temperature("acpitz", "", 99.0)]

    await rig.sample(10.0, temps=temps(90))
    assert (await rig.alerts())[0]["state"] == "firing"
    await rig.sample(10.0, temps=temps(60))
    await rig.sample(10.0, at=9.0, temps=temps(60))
    assert (await rig.alerts())[0]["state"] == "firing"
    t = await rig.sample(10.0, at=1.0, temps=temps(60))
    [a] = await rig.alerts()
    assert (a["state"], a["resolved_at"]) == ("resolved", t)


async def test_container_down_unhealthy_and_cpu(rig: Rig) -> None:
    await rig.rule(name="web down", metric='container:running{name="web"}', op="<", threshold=1)
    await rig.rule(name="unhealthy", metric="container:healthy", op="<", threshold=1)
    await rig.rule(name="busy", metric='container:cpu_pct{name="web"}', threshold=150)

    async def by_rule() -> dict[str, str]:
        return {a["rule"]: a["state"] for a in await rig.alerts()}

    web = ContainerInfo(name="web", state="running", health="healthy", cpu_pct=20.0)
    await rig.sample(10.0, containers=[web, ContainerInfo(name="db", state="running")])
    assert await by_rule() == {}
    await rig.sample(
        10.0, containers=[ContainerInfo(name="web", state="running", health="unhealthy", cpu_pct=190.0)]
    )
    assert await by_rule() == {"unhealthy": "firing", "busy": "firing"}
    await rig.sample(10.0)  # no fresh list in this sample: nothing is judged
    assert await by_rule() == {"unhealthy": "firing", "busy": "firing"}
    await rig.sample(10.0, containers=[ContainerInfo(name="web", state="exited")])
    # Exited: not running; its health and CPU have no value, so those alerts stay as they were.
    assert await by_rule() == {"web down": "firing", "unhealthy": "firing", "busy": "firing"}
    await rig.sample(10.0, containers=[])  # removed: still "not running"
    assert (await by_rule())["web down"] == "firing"
    await rig.sample(10.0, containers=[web])
    assert await by_rule() == {"web down": "resolved", "unhealthy": "resolved", "busy": "resolved"}


async def test_gpu_rules(rig: Rig) -> None:
    await rig.rule(name="gpu busy", metric='gpu:util_pct{index="0"}', threshold=95)
    await rig.rule(name="gpu hot", metric="gpu:temp_celsius", threshold=80)
    await rig.rule(name="gpu mem", metric='gpu:mem_pct{index="1"}', threshold=90)

    def hw(util: float, temp: float, used: int) -> Hardware:
        return Hardware(
            gpus=[
                GpuInfo(index=0, name="T4", util_pct=util, temp=50.0, mem_used=1, mem_total=16),
                GpuInfo(index=1, name="T4", util_pct=0.0, temp=temp, mem_used=used, mem_total=16),
            ]
        )

    await rig.sample(10.0, hardware=hw(99, 85, 15))
    states = {a["rule"]: (a["state"], a["value"]) for a in await rig.alerts()}
    assert states == {"gpu busy": ("firing", 99.0), "gpu hot": ("firing", 85.0), "gpu mem": ("firing", 93.75)}
    await rig.sample(10.0, hardware=hw(10, 60, 2))
    assert {a["state"] for a in await rig.alerts()} == {"resolved"}


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ("dev:fs_used_pct", "metric: unknown metric 'dev:fs_used_pct'; dev: are: dev:disk_used_bytes,"),
        ("container:state", "metric: unknown metric 'container:state'; container: are: container:running,"),
        ("gpu:fan_pct", "metric: unknown metric 'gpu:fan_pct'; gpu: are: gpu:util_pct,"),
        (
            'dev:disk_pct{sensor="x"}',
            "metric: dev:disk_pct takes only the label 'mount' (the item), not sensor",
        ),
        ('gpu:util_pct{index="0"', "metric: series selector"),
        ("disk:pct", "unknown metric 'disk:pct'; use 'offline' or one of: cpu_pct,"),
    ],
)
async def test_unknown_kinds_get_a_precise_400(rig: Rig, metric: str, message: str) -> None:
    status, body = await rig.server.request(
        "POST", "/api/v1/alert-rules", rig.token, json={**RULE, "metric": metric}
    )
    assert status == 400, body
    assert body["error"]["code"] == "invalid_rule"
    assert body["error"]["message"].startswith(message), body["error"]["message"]


async def test_unknown_kind_message_names_the_item_prefixes(rig: Rig) -> None:
    status, body = await rig.server.request(
        "POST", "/api/v1/alert-rules", rig.token, json={**RULE, "metric": "x"}
    )
    assert status == 400 and "dev:, container: or gpu:" in body["error"]["message"]


async def test_preview_replays_device_series_and_refuses_containers(rig: Rig) -> None:
    start = float(int(time.time()) - 300)
    samples = []
    for i in range(120):
        data = 95.0 if 30 <= i < 60 else 50.0
        root = 96.0 if 90 <= i < 95 else 40.0
        samples += rig.agent.make(1, ts=start + i, disks=_disks(root, data))
    await rig.agent.send_samples(samples)
    draft: dict[str, Any] = {**RULE, "metric": 'dev:disk_pct{mount="/data"}', "for": "10s"}
    status, one = await rig.server.request("POST", "/api/v1/alert-rules/preview", rig.token, json=draft)
    assert status == 200, one
    assert [(a["started_at"], a["fired_at"], a["resolved_at"]) for a in one["alerts"]] == [
        (start + 30, start + 40, start + 60)
    ]
    # Every mount, the worst at each moment: "/" spikes too, for 5 s (under `for`), then once more with for 0.
    status, every = await rig.server.request(
        "POST", "/api/v1/alert-rules/preview", rig.token, json={**draft, "metric": "dev:disk_pct", "for": 0}
    )
    assert status == 200, every
    assert [a["fired_at"] for a in every["alerts"]] == [start + 30, start + 90]
    assert every["alerts"][1]["peak"] == 96.0
    status, body = await rig.server.request(
        "POST",
        "/api/v1/alert-rules/preview",
        rig.token,
        json={**draft, "metric": 'container:running{name="web"}'},
    )
    assert status == 400 and "does not replay container or GPU values" in body["error"]["message"]


async def test_a_real_reading_of_this_machine_fires_a_device_rule(rig: Rig) -> None:
    """The agent's own collector's sample (this machine's mounts and interfaces): a rule over every
    mount fires on the fullest one, a rule naming a mount that is not there stays silent."""
    real = MetricsCollector().collect()
    assert real.disks
    await rig.rule(name="any mount used", metric="dev:disk_pct", threshold=-1)
    await rig.rule(name="no such mount", metric='dev:disk_pct{mount="/no/such/mount"}', threshold=-1)
    rig.t += 1.0
    await rig.agent.send_samples([Sample(seq=rig.agent.seq + 1, ts=rig.t, metrics=real)])
    rig.agent.seq += 1
    await rig.server.core.alerts.sync()
    [a] = await rig.alerts()
    assert (a["rule"], a["state"], a["value"]) == ("any mount used", "firing", max(d.pct for d in real.disks))
