"""Several real cores on ONE PostgreSQL database and one Redis, as a cluster really runs: alert ids
unique across cores, an alert that fires once and resolves once while its agent moves and the leader
changes, a node enrolled at one core known at once at the other, and a preview at one core judging a
node held by the other by what its agent said."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from servermanager.common.series import PluginStatus
from tests.helpers.cluster import drop_keys, prefix, start_shared_cores
from tests.helpers.core import RawAgent, RawClient
from tests.helpers.pg import fresh_database
from tests.helpers.wait import wait_for, wait_until

CPU_RULE = {"name": "cpu high", "metric": "cpu_pct", "op": ">", "threshold": 90, "targets": {"all": True}}
DOWN_RULE = {"name": "down", "metric": "offline", "for": "0s", "targets": {"all": True}}


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[RunningCore, RunningCore]]:
    """Two cores on a fresh database of this test's own and one Redis, under a key prefix of its
    own; whichever a test did not stop itself is stopped after it."""
    pfx = prefix()
    async with fresh_database() as url:
        a, b = await start_shared_cores(tmp_path, pfx, 2, url)
        try:
            yield a, b
        finally:
            for core in (a, b):
                if core.core is not None:
                    await core.stop()
    await drop_keys(pfx)


async def _cpu_rule(a: RunningCore, b: RunningCore) -> str:
    """CPU_RULE made at A and taken in by B; the admin's token."""
    token = await a.admin_token()
    await _rule(a, token, CPU_RULE)
    await wait_for(lambda: len(b.core.alerts.rules) == 1, what="B to take in the rule")
    return token


def _on(agent: RawAgent, core: RunningCore) -> RawAgent:
    """The same enrolled agent (its credential), dialling another core."""
    moved = RawAgent(core, agent.name)
    moved.credential, moved.node_id, moved.seq = agent.credential, agent.node_id, agent.seq
    return moved


async def _alerts(core: RunningCore, token: str, query: str = "") -> list[dict[str, Any]]:
    status, body = await core.request("GET", f"/api/v1/alerts{query}", token)
    assert status == 200, body
    return list(body["alerts"])


async def _rule(core: RunningCore, token: str, rule: dict[str, Any]) -> int:
    status, body = await core.request("POST", "/api/v1/alert-rules", token, json=rule)
    assert status == 201, body
    return int(body["id"])


async def test_alert_ids_are_unique_across_cores_on_one_database(
    pair: tuple[RunningCore, RunningCore],
) -> None:
    a, b = pair
    token = await _cpu_rule(a, b)
    on_a, on_b = RawAgent(a, "web-a"), RawAgent(b, "web-b")
    await on_a.hello(token=await a.enroll_token())
    await on_b.hello(token=await a.enroll_token())
    # Both open an alert at the same moment, each on its own core.
    await on_a.send_samples(on_a.make(1, cpu=99.0))
    await on_b.send_samples(on_b.make(1, cpu=99.0))
    for core in (a, b):
        got = await wait_until(
            lambda core=core: _alerts(core, token, "?state=firing"),  # type: ignore[misc]
            lambda v: len(v) == 2,
            what="both alerts stored",
        )
        assert len({x["id"] for x in got}) == 2, got
        assert {x["node_id"] for x in got} == {on_a.node_id, on_b.node_id}
    await on_a.close()
    await on_b.close()


async def test_an_alert_moves_with_its_agent_and_fires_and_resolves_once(
    pair: tuple[RunningCore, RunningCore],
) -> None:
    a, b = pair
    token = await _cpu_rule(a, b)
    agent = RawAgent(a, "web")
    await agent.hello(token=await a.enroll_token())
    await agent.send_samples(agent.make(2, cpu=99.0))
    [fired] = await wait_until(
        lambda: _alerts(a, token, "?state=firing"), lambda v: len(v) == 1, what="the alert on A"
    )
    await agent.close()
    await wait_for(lambda: not a.core.alerts.by_id, what="A to let go of the alert")

    # The agent comes back at B, still breaching: B continues the same alert, opens none.
    moved = _on(agent, b)
    await moved.hello()
    await wait_for(lambda: fired["id"] in b.core.alerts.by_id, what="B to take the alert in")
    await moved.send_samples(moved.make(3, cpu=99.0))
    await moved.send_samples(moved.make(1, ts=time.time() + 5, cpu=10.0))
    for core in (a, b):
        [one] = await wait_until(
            lambda core=core: _alerts(core, token),  # type: ignore[misc]
            lambda v: len(v) == 1 and v[0]["state"] == "resolved",
            what="the one alert resolved",
        )
        assert one["id"] == fired["id"]
    _, detail = await b.request("GET", f"/api/v1/alerts/{fired['id']}", token)
    assert [t["state"] for t in detail["transitions"]] == ["pending", "firing", "resolved"]
    await moved.close()


async def test_an_offline_alert_is_continued_by_the_next_leader(
    pair: tuple[RunningCore, RunningCore],
) -> None:
    a, b = pair
    await wait_for(lambda: sum(c.core.leads() for c in (a, b)) == 1, what="a leader")
    leader, other = (a, b) if a.core.leads() else (b, a)
    token = await a.admin_token()
    down = await _rule(a, token, DOWN_RULE)
    await wait_for(lambda: down in b.core.alerts.rules, what="B to take in the rule")
    agent = RawAgent(other, "web")  # held by the core that stays
    await agent.hello(token=await a.enroll_token())
    await agent.send_samples(agent.make(1))
    await agent.close()
    [opened] = await wait_until(
        lambda: _alerts(other, token, f"?rule={down}&state=firing"),
        lambda v: len(v) == 1,
        what="the offline alert by the leader",
    )

    await leader.stop()
    await wait_for(lambda: other.core.leads(), timeout=15, what="the other core to take over")
    await wait_for(lambda: opened["id"] in other.core.alerts.by_id, what="the new leader to take it in")
    # A few ticks as leader: the node is still down, and still one alert says so.
    ticks = other.core.alerts
    await wait_for(lambda: ticks.open.get((down, agent.node_id or 0)) is not None, what="held")
    moved = _on(agent, other)
    await moved.hello()
    [one] = await wait_until(
        lambda: _alerts(other, token, f"?rule={down}"),
        lambda v: len(v) == 1 and v[0]["state"] == "resolved",
        what="the one offline alert resolved",
    )
    assert one["id"] == opened["id"]
    await moved.close()


async def test_a_node_enrolled_at_a_is_known_at_b_at_once(pair: tuple[RunningCore, RunningCore]) -> None:
    a, b = pair
    token = await a.admin_token()  # one token: users and tokens live in the shared database
    client = RawClient(b)
    await client.connect(token)
    assert (await client.subscribe()).nodes == []
    agent = RawAgent(a, "fresh")
    await agent.hello(token=await a.enroll_token())
    status, node = await b.request("GET", f"/api/v1/nodes/{agent.node_id}", token)
    assert status == 200 and node["name"] == "fresh", node
    await agent.send_samples(agent.make(3, cpu=33.0))
    event = await client.recv_type(p.SampleEvent)
    assert (event.node_id, event.sample.metrics.cpu_pct) == (agent.node_id, 33.0)
    # A new client of B gets it in its snapshot; its agent is accepted at B by its credential.
    late = RawClient(b)
    await late.connect(token)
    assert [n.id for n in (await late.subscribe()).nodes] == [agent.node_id]
    await agent.close()
    moved = _on(agent, b)
    welcome = await moved.hello()
    assert welcome.node_id == agent.node_id and welcome.last_seq == 3
    await moved.send_samples(moved.make(2))
    path = f"/api/v1/nodes/{agent.node_id}/metrics?from=0&to=9999999999&resolution=raw&fields=cpu_pct"
    _, at_a = await a.request("GET", path, token)
    _, at_b = await b.request("GET", path, token)
    assert at_a == at_b and len(at_a["ts"]) == 5
    for c in (client, late):
        await c.close()
    await moved.close()


async def test_a_preview_at_a_judges_a_node_on_b_by_its_agent(pair: tuple[RunningCore, RunningCore]) -> None:
    a, b = pair
    token = await a.admin_token()
    agent = RawAgent(b, "guarded")
    policy = p.ExecReport(enabled=True, allow=["uptime*"], deny=[])
    await agent.hello(token=await a.enroll_token(), exec_policy=policy)
    await wait_for(lambda: agent.node_id in a.core.nodes.nodes, what="A to know the node")
    st = a.core.nodes.nodes[agent.node_id or 0]
    await wait_for(lambda: st.online and st.exec_policy == policy, what="A to learn its [exec]")

    async def preview(line: str) -> dict[str, Any]:
        status, body = await a.request(
            "POST",
            "/api/v1/commands/preview",
            token,
            json={"targets": {"nodes": [agent.node_id]}, "command": line},
        )
        assert status == 200, body
        [one] = body["runs"]
        return dict(one)

    assert (await preview("uptime"))["verdict"] == "run"
    refused = await preview("reboot")
    assert refused["verdict"] == "refused" and refused["reason"], refused
    await agent.close()


async def test_checks_of_a_node_on_b_are_served_at_a(pair: tuple[RunningCore, RunningCore]) -> None:
    a, b = pair
    token = await a.admin_token()
    agent = RawAgent(b, "checked")
    await agent.hello(token=await a.enroll_token())
    check = PluginStatus(name="disk-smart", kind="check", ok=False, error="exit 2", last_run=1.0)
    await agent.send_samples(agent.make(1, plugins=[check]))
    got = await wait_until(
        lambda: a.request("GET", f"/api/v1/nodes/{agent.node_id}/series", token),
        lambda r: r[0] == 200 and bool(r[1]["plugins"]),
        what="A to serve the node's checks",
    )
    assert got[1]["plugins"] == [msgspec.to_builtins(check)]
    await agent.close()


async def test_an_alert_held_by_b_is_acknowledged_at_a(pair: tuple[RunningCore, RunningCore]) -> None:
    a, b = pair
    token = await _cpu_rule(a, b)
    agent = RawAgent(b, "web")
    await agent.hello(token=await a.enroll_token())
    await agent.send_samples(agent.make(1, cpu=99.0))
    [fired] = await wait_until(
        lambda: _alerts(b, token, "?state=firing"), lambda v: len(v) == 1, what="the alert on B"
    )
    status, acked = await a.request("POST", f"/api/v1/alerts/{fired['id']}/ack", token)
    assert status == 200 and acked["acked_by"] == "admin", acked
    held = b.core.alerts.by_id[fired["id"]]
    await wait_for(lambda: held.acked_by == "admin", what="B, which holds it, to take the ack in")
    status, resolved = await a.request("POST", "/api/v1/alerts/999/ack", token)
    assert status == 404, resolved
    await agent.close()
