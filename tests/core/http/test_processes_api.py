"""GET /nodes/{id}/processes against a real core fed by a raw agent: moments, roles, bad input, live events."""

from __future__ import annotations

import time

import msgspec

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from servermanager.common.metrics import MAX_PROCS_TOP, ProcInfo
from tests.helpers.core import RawAgent, RawClient


def top(tag: str) -> list[ProcInfo]:
    return [
        ProcInfo(
            pid=42, name=f"{tag}-busy", cpu_pct=88.5, rss=1 << 30, user="app", cmd=f"{tag} --password=hunter2"
        ),
        ProcInfo(
            pid=7, name=f"{tag}-big", cpu_pct=None, rss=2 << 30, user="db", read_bps=10.0, write_bps=20.0
        ),
    ]


async def test_processes_at_a_past_moment_and_latest(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    t0 = time.time() - 600
    await agent.send_samples(agent.make(1, ts=t0, procs_top=top("early")))
    await agent.send_samples(agent.make(1, ts=t0 + 300, procs_top=top("later")))
    await agent.send_samples(agent.make(1, ts=t0 + 400))  # an old agent's sample: no list
    admin = await core_server.admin_token()
    base = f"/api/v1/nodes/{agent.node_id}/processes"

    status, body = await core_server.request("GET", base, admin, params={"at": str(t0 + 120)})
    assert status == 200, body
    assert abs(body["ts"] - t0) < 1e-3
    assert [x["name"] for x in body["processes"]] == ["early-busy", "early-big"]
    assert body["processes"][0] == {
        "pid": 42,
        "name": "early-busy",
        "cpu_pct": 88.5,
        "rss": 1 << 30,
        "user": "app",
        "cmd": "early --password=hunter2",
    }
    assert body["processes"][1]["read_bps"] == 10.0 and "cpu_pct" not in body["processes"][1]

    status, body = await core_server.request("GET", base, admin)
    assert status == 200 and abs(body["ts"] - (t0 + 300)) < 1e-3
    assert body["processes"][0]["name"] == "later-busy" and body["cmdline_hidden"] is False

    status, body = await core_server.request("GET", base, admin, params={"at": str(t0 - 5)})
    assert (status, body["ts"], body["processes"]) == (200, None, [])
    await agent.close()


async def test_viewers_get_no_command_lines(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    await agent.send_samples(agent.make(1, procs_top=top("x")))
    base = f"/api/v1/nodes/{agent.node_id}/processes"
    viewer = await core_server.user_token("vera", "viewer")
    status, body = await core_server.request("GET", base, viewer)
    assert status == 200 and body["cmdline_hidden"] is True
    assert [x["name"] for x in body["processes"]] == ["x-busy", "x-big"]
    assert all("cmd" not in x for x in body["processes"])
    assert b"hunter2" not in msgspec.json.encode(body)
    operator = await core_server.user_token("otto", "operator")
    status, body = await core_server.request("GET", base, operator)
    assert status == 200 and body["processes"][0]["cmd"] == "x --password=hunter2"
    status, _ = await core_server.request("GET", base)
    assert status == 401
    await agent.close()


async def test_bad_requests_are_refused_precisely(core_server: RunningCore) -> None:
    admin = await core_server.admin_token()
    status, body = await core_server.request("GET", "/api/v1/nodes/999/processes", admin)
    assert (status, body["error"]["code"]) == (404, "not_found")
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    status, body = await core_server.request(
        "GET", f"/api/v1/nodes/{agent.node_id}/processes", admin, params={"at": "yesterday"}
    )
    assert status == 400 and "at" in body["error"]["message"], body
    await agent.close()


async def test_oversized_or_malformed_lists_are_refused(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    ws = agent.ws
    assert ws is not None
    good = msgspec.to_builtins(agent.make(1)[0])
    cases = {
        "too many": [[i, "p", 1.0, 1] for i in range(MAX_PROCS_TOP + 1)],
        "name too long": [[1, "n" * 65, 1.0, 1]],
        "negative rss": [[1, "p", 1.0, -5]],
        "cpu over 100": [[1, "p", 250.0, 1]],
        "not a list": "ps aux",
    }
    for what, bad in cases.items():
        sample = {**good, "metrics": {**good["metrics"], "procs_top": bad}}
        await ws.send_str(msgspec.json.encode({"type": "samples", "samples": [sample]}).decode())
        error = await agent.recv_type(p.Error)
        assert error.code == "invalid_frame", (what, error)
        assert "$.samples[0].metrics.procs_top" in error.message, (what, error.message)
    # Nothing of them was stored, and the socket still serves a good batch.
    assert await core_server.core.store.procs.at(agent.node_id or 0) is None
    ack = await agent.send_samples(agent.make(1, procs_top=top("ok")))
    assert ack.rejected == []
    await agent.close()


async def test_live_events_carry_no_processes(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    client = RawClient(core_server)
    await client.connect(await core_server.admin_token())
    await client.subscribe()
    await agent.send_samples(agent.make(1, procs_top=top("live")))
    event = await client.recv_type(p.SampleEvent)
    assert event.node_id == agent.node_id and event.sample.metrics.procs_top == []
    node = core_server.core.nodes.get(agent.node_id or 0)
    assert node is not None and node.latest is not None and node.latest.metrics.procs_top == []
    # They were stored all the same.
    stored = await core_server.core.store.procs.at(agent.node_id or 0)
    assert stored is not None and stored[1] == top("live")
    # The next live sample holds the very same empty lists (no new ones per sample for the cycle
    # collector), and they are still empty.
    first = node.latest.metrics
    await agent.send_samples(agent.make(1, procs_top=top("again")))
    await client.recv_type(p.SampleEvent)
    assert node.latest is not None and node.latest.metrics is not first
    again = node.latest.metrics
    assert (
        again.procs_top is first.procs_top and again.series is first.series and again.plugins is first.plugins
    )
    assert again.procs_top == [] and again.series == [] and again.plugins == []
    await client.close()
    await agent.close()
