"""GET /nodes/{id}/containers and /containers/history against a real core fed by a raw agent: moments,
series, the fleet count and hardware on the node, live events without the lists, bad input."""

from __future__ import annotations

import time

import msgspec

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from servermanager.common.metrics import MAX_CONTAINERS, ContainerInfo, DiskHealth, Hardware
from tests.helpers.core import RawAgent, RawClient


def listed(cpu: float, state: str = "running") -> list[ContainerInfo]:
    return [
        ContainerInfo(
            name="web",
            image="nginx:1.25",
            state="running",
            health="healthy",
            cpu_pct=cpu,
            mem_used=50 << 20,
            mem_limit=1 << 30,
            net_rx_bps=1000.0,
            net_tx_bps=2000.0,
            blk_read_bps=0.0,
            blk_write_bps=4096.0,
        ),
        ContainerInfo(name="batch", image="busybox", state=state),
    ]


async def test_latest_moment_and_history(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    t0 = time.time() - 600
    await agent.send_samples(agent.make(1, ts=t0, containers=listed(10.0)))
    await agent.send_samples(agent.make(1, ts=t0 + 100, containers=listed(150.0, "exited")))
    await agent.send_samples(agent.make(1, ts=t0 + 200))  # no fresh list in this one
    await agent.send_samples(agent.make(1, ts=t0 + 300, containers=[]))  # the engine runs none now
    admin = await core_server.admin_token()
    base = f"/api/v1/nodes/{agent.node_id}/containers"

    status, body = await core_server.request("GET", base, admin, params={"at": str(t0 + 150)})
    assert status == 200, body
    assert abs(body["ts"] - (t0 + 100)) < 1e-3
    assert body["containers"][0] == {
        "name": "web",
        "image": "nginx:1.25",
        "state": "running",
        "health": "healthy",
        "cpu_pct": 150.0,
        "mem_used": 50 << 20,
        "mem_limit": 1 << 30,
        "net_rx_bps": 1000.0,
        "net_tx_bps": 2000.0,
        "blk_read_bps": 0.0,
        "blk_write_bps": 4096.0,
    }
    assert body["containers"][1] == {"name": "batch", "image": "busybox", "state": "exited"}
    status, body = await core_server.request("GET", base, admin)
    assert (status, body["containers"]) == (200, []) and abs(body["ts"] - (t0 + 300)) < 1e-3
    status, body = await core_server.request("GET", base, admin, params={"at": str(t0 - 1)})
    assert (status, body["ts"], body["containers"]) == (200, None, [])

    viewer = await core_server.user_token("vera", "viewer")
    status, body = await core_server.request(
        "GET", f"{base}/history", viewer, params={"name": "web", "from": str(t0 - 1), "to": str(t0 + 400)}
    )
    assert status == 200, body
    assert [round(x - t0, 3) for x in body["ts"]] == [0.0, 100.0]
    assert body["cpu_pct"] == [10.0, 150.0] and body["mem_used"] == [50 << 20] * 2
    assert body["blk_write_bps"] == [4096.0, 4096.0]
    status, body = await core_server.request(
        "GET", f"{base}/history", viewer, params={"name": "batch", "from": str(t0 - 1), "to": str(t0 + 400)}
    )
    assert status == 200 and len(body["ts"]) == 2 and body["cpu_pct"] == [None, None]
    await agent.close()


async def test_history_thins_long_ranges(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    t0 = time.time() - 3000
    samples = agent.make(100, ts=t0, step=10.0)
    samples = [
        msgspec.structs.replace(s, metrics=msgspec.structs.replace(s.metrics, containers=listed(float(i))))
        for i, s in enumerate(samples)
    ]
    await agent.send_samples(samples)
    admin = await core_server.admin_token()
    status, body = await core_server.request(
        "GET",
        f"/api/v1/nodes/{agent.node_id}/containers/history",
        admin,
        params={"name": "web", "from": str(t0 - 1), "to": str(t0 + 2000), "points": "10"},
    )
    assert status == 200, body
    assert len(body["ts"]) == 10 and body["cpu_pct"][:3] == [0.0, 10.0, 20.0]
    await agent.close()


async def test_fleet_count_and_hardware_reach_the_node_not_the_live_sample(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    client = RawClient(core_server)
    await client.connect(await core_server.admin_token())
    snap = await client.subscribe()
    assert all(n.containers is None for n in snap.nodes)
    hw = Hardware(
        gpu_note="not present (no NVIDIA driver)", smart=[DiskHealth(device="/dev/sda", passed=True)]
    )
    await agent.send_samples(agent.make(1, containers=listed(5.0, "exited"), hardware=hw))
    updated = await client.recv_type(p.NodeUpdated)
    assert updated.node.containers == 1 and updated.node.hardware == hw  # "batch" is not running
    event = await client.recv_type(p.SampleEvent)
    assert event.sample.metrics.containers is None and event.sample.metrics.hardware is None
    admin = await core_server.admin_token()
    status, body = await core_server.request("GET", f"/api/v1/nodes/{agent.node_id}", admin)
    assert status == 200 and body["containers"] == 1
    assert body["hardware"]["gpu_note"] == "not present (no NVIDIA driver)"
    # The same count again is no news: the next event is the sample alone.
    await agent.send_samples(agent.make(1, containers=listed(6.0, "exited")))
    assert isinstance(await client.recv(), p.SampleEvent)
    await client.close()
    await agent.close()


async def test_bad_requests_and_lists_are_refused_precisely(core_server: RunningCore) -> None:
    admin = await core_server.admin_token()
    status, body = await core_server.request("GET", "/api/v1/nodes/999/containers", admin)
    assert (status, body["error"]["code"]) == (404, "not_found")
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    hist = f"/api/v1/nodes/{agent.node_id}/containers/history"
    for params in (
        {},
        {"name": "../etc"},
        {"name": "web", "from": "10", "to": "5"},
        {"name": "web", "points": "1"},
    ):
        status, body = await core_server.request("GET", hist, admin, params=params)
        assert status == 400, (params, body)
    status, _ = await core_server.request("GET", hist, params={"name": "web"})
    assert status == 401
    ws = agent.ws
    assert ws is not None
    good = msgspec.to_builtins(agent.make(1)[0])
    cases = {
        "too many": [["c"] for _ in range(MAX_CONTAINERS + 1)],
        "name too long": [["n" * 129]],
        "negative memory": [["c", "i", "running", None, 1.0, -1]],
        "not a list": "docker ps",
    }
    for what, bad in cases.items():
        sample = {**good, "metrics": {**good["metrics"], "containers": bad}}
        await ws.send_str(msgspec.json.encode({"type": "samples", "samples": [sample]}).decode())
        error = await agent.recv_type(p.Error)
        assert error.code == "invalid_frame", (what, error)
        assert "$.samples[0].metrics.containers" in error.message, (what, error.message)
    assert await core_server.core.store.containers.at(agent.node_id or 0) is None
    await agent.close()
