"""The alerting REST API on a real core: precise 400s, roles, audit rows, edits, the history preview."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devkit.cores import RunningCore
from tests.core.alerts.helpers import RULE, Rig


@pytest.fixture
async def rig(core_server: RunningCore) -> AsyncIterator[Rig]:
    r = await Rig(core_server).start()
    try:
        yield r
    finally:
        await r.agent.close()


async def _post_rule(rig: Rig, token: str | None = None, **over: Any) -> tuple[int, Any]:
    return await rig.server.request("POST", "/api/v1/alert-rules", token or rig.token, json={**RULE, **over})


@pytest.mark.parametrize(
    ("over", "code", "message"),
    [
        (
            {"metric": "cpu_temp"},
            "invalid_rule",
            "unknown metric 'cpu_temp'; use 'offline' or one of: cpu_pct,",
        ),
        ({"for": -5}, "invalid_rule", "for must be from 0 to 30d, got -5"),
        ({"for": "31d"}, "invalid_rule", "for must be from 0 to 30d, got '31d'"),
        ({"keep_firing_for": 1e300}, "invalid_rule", "keep_firing_for must be from 0 to 30d, got 1e+300"),
        ({"for": "-5s"}, "invalid_rule", "for: not a duration: '-5s'"),
        ({"keep_firing_for": "soon"}, "invalid_rule", "keep_firing_for: not a duration: 'soon'"),
        ({"targets": {}}, "invalid_rule", "targets is empty: give nodes, group, tag or all"),
        ({"targets": {"nodes": []}}, "invalid_rule", "targets is empty: give nodes, group, tag or all"),
        ({"targets": {"nodes": [999]}}, "invalid_rule", "unknown node(s) in targets: [999]"),
        ({"channels": [42]}, "invalid_rule", "unknown channel(s): [42]"),
        (
            {"clear_threshold": 95},
            "invalid_rule",
            "clear_threshold 95 must be at or below threshold 90 for op '>'",
        ),
        (
            {"op": "<", "threshold": 10, "clear_threshold": 5},
            "invalid_rule",
            "clear_threshold 5 must be at or above threshold 10 for op '<'",
        ),
        (
            {"critical_threshold": 85},
            "invalid_rule",
            "critical_threshold 85 must be above threshold 90 for op '>'",
        ),
        (
            {"metric": "offline", "clear_threshold": 1},
            "invalid_rule",
            "an offline rule takes no clear_threshold or critical_threshold",
        ),
        ({"op": ">="}, "invalid_body", "Invalid enum value '>=' - at `$.op`"),
        ({"severity": "page"}, "invalid_body", "Invalid enum value 'page' - at `$.severity`"),
    ],
)
async def test_bad_rules_get_a_precise_400(rig: Rig, over: dict[str, Any], code: str, message: str) -> None:
    status, body = await _post_rule(rig, **over)
    assert status == 400, body
    assert body["error"]["code"] == code
    assert body["error"]["message"].startswith(message), body["error"]["message"]
    status, listed = await rig.server.request("GET", "/api/v1/alert-rules", rig.token)
    assert listed["rules"] == []


async def test_rule_crud_roles_and_audit(rig: Rig) -> None:
    ch = await rig.channel("hook")
    viewer = await rig.server.user_token("val", "viewer")
    operator = await rig.server.user_token("otto", "operator")
    status, body = await _post_rule(rig, viewer)
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, rule = await _post_rule(
        rig, operator, **{"for": "30s"}, keep_firing_for="1m", channels=[ch], clear_threshold=80
    )
    assert status == 201, rule
    assert (rule["for"], rule["keep_firing_for"], rule["created_by"], rule["channels"]) == (
        30.0,
        60.0,
        "otto",
        [ch],
    )
    status, body = await _post_rule(rig, operator)
    assert status == 409 and body["error"]["message"] == "a rule named 'cpu high' exists already"
    # Viewers read rules, alerts and silences.
    for path in (
        "/api/v1/alert-rules",
        f"/api/v1/alert-rules/{rule['id']}",
        "/api/v1/alerts",
        "/api/v1/silences",
    ):
        status, _ = await rig.server.request("GET", path, viewer)
        assert status == 200, path
    status, _ = await rig.server.request(
        "PATCH", f"/api/v1/alert-rules/{rule['id']}", viewer, json={"threshold": 1}
    )
    assert status == 403
    status, body = await rig.server.request(
        "POST", "/api/v1/silences", viewer, json={"node": rig.node_id, "duration": 60, "comment": "x"}
    )
    assert status == 403
    # A patch is checked as a whole rule.
    status, body = await rig.server.request(
        "PATCH", f"/api/v1/alert-rules/{rule['id']}", operator, json={"threshold": 70}
    )
    assert status == 400 and "clear_threshold 80 must be at or below threshold 70" in body["error"]["message"]
    status, patched = await rig.server.request(
        "PATCH",
        f"/api/v1/alert-rules/{rule['id']}",
        operator,
        json={"threshold": 95, "for": "1m", "enabled": False},
    )
    assert status == 200, patched
    assert (patched["threshold"], patched["for"], patched["enabled"], patched["clear_threshold"]) == (
        95,
        60,
        False,
        80,
    )
    status, got = await rig.server.request("GET", f"/api/v1/alert-rules/{rule['id']}", viewer)
    assert got == patched
    # null removes an optional threshold; leaving it out keeps it.
    status, cleared = await rig.server.request(
        "PATCH",
        f"/api/v1/alert-rules/{rule['id']}",
        operator,
        json={"clear_threshold": None, "critical_threshold": 99},
    )
    assert status == 200, cleared
    assert (cleared["clear_threshold"], cleared["critical_threshold"]) == (None, 99)
    status, cleared = await rig.server.request(
        "PATCH", f"/api/v1/alert-rules/{rule['id']}", operator, json={"critical_threshold": None}
    )
    assert (cleared["clear_threshold"], cleared["critical_threshold"]) == (None, None)
    status, _ = await rig.server.request("DELETE", f"/api/v1/alert-rules/{rule['id']}", operator)
    assert status == 204
    status, _ = await rig.server.request("DELETE", f"/api/v1/alert-rules/{rule['id']}", operator)
    assert status == 404
    status, _ = await rig.server.request("GET", "/api/v1/alert-rules/abc", viewer)
    assert status == 400
    status, audit = await rig.server.request("GET", "/api/v1/audit?target=rule:" + str(rule["id"]), rig.token)
    assert [(e["action"], e["actor"], e["result"]) for e in reversed(audit["entries"])] == [
        ("rule.create", "otto", "ok"),
        ("rule.update", "otto", "ok"),
        ("rule.update", "otto", "ok"),
        ("rule.update", "otto", "ok"),
        ("rule.delete", "otto", "ok"),
        ("rule.delete", "otto", "not_found"),
    ]


async def test_rules_survive_a_restart(rig: Rig) -> None:
    ch = await rig.channel("hook")
    status, rule = await _post_rule(rig, critical_threshold=99, channels=[ch], targets={"group": "db"})
    assert status == 201
    await rig.server.core.alerts.store.load()
    [loaded] = await rig.server.core.alerts.store.load()
    assert loaded.api() == rig.server.core.alerts.rules[rule["id"]].api()


async def test_silence_input_and_audit(rig: Rig) -> None:
    async def post(**body: Any) -> tuple[int, Any]:
        return await rig.server.request("POST", "/api/v1/silences", rig.token, json=body)

    status, body = await post(duration="1h", comment="x")
    assert (
        status == 400
        and body["error"]["message"] == "a silence needs at least one matcher: rule, node, group or tag"
    )
    status, body = await post(node=rig.node_id, comment="x")
    assert status == 400 and body["error"]["message"] == "give exactly one of ends_at or duration"
    status, body = await post(node=rig.node_id, comment="x", ends_at=time.time() - 5)
    assert status == 400 and body["error"]["message"] == "ends_at is in the past"
    status, body = await post(node=rig.node_id, comment="x", ends_at=time.time() + 400 * 86400)
    assert status == 400 and body["error"]["message"] == "ends_at is more than 365 days away"
    status, body = await post(node=rig.node_id, comment="x", duration=1e300)
    assert (
        status == 400
        and body["error"]["message"] == "duration must be more than 0 and at most 365d, got 1e+300"
    )
    status, body = await post(node=999, comment="x", duration=60)
    assert status == 400 and body["error"]["message"] == "unknown node 999"
    status, body = await post(rule=5, comment="x", duration=60)
    assert status == 400 and body["error"]["message"] == "unknown rule 5"
    status, body = await post(node=rig.node_id, duration=60)
    assert status == 400 and body["error"]["code"] == "invalid_body"
    status, body = await post(tag="web", duration="forever", comment="x")
    assert status == 400 and body["error"]["message"].startswith("duration: not a duration")
    ends = time.time() + 600
    status, s = await post(tag="web", ends_at=ends, comment="deploy")
    assert status == 201 and s["ends_at"] == ends and s["tag"] == "web"
    status, _ = await rig.server.request("DELETE", "/api/v1/silences/77", rig.token)
    assert status == 404
    status, _ = await rig.server.request("DELETE", f"/api/v1/silences/{s['id']}", rig.token)
    assert status == 204
    status, audit = await rig.server.request("GET", "/api/v1/audit?action=silence.create", rig.token)
    assert [e["target"] for e in audit["entries"]] == [f"silence:{s['id']}"]
    status, audit = await rig.server.request("GET", "/api/v1/audit?action=silence.delete", rig.token)
    assert [e["result"] for e in audit["entries"]] == ["ok", "not_found"]


async def test_alert_list_filters_and_ack_audit(rig: Rig) -> None:
    await rig.rule()
    await rig.rule(name="mem high", metric="mem_pct", threshold=50)
    await rig.sample(95.0, mem_pct=60.0)
    await rig.sample(10.0, mem_pct=60.0)
    everything = await rig.alerts()
    assert {(a["metric"], a["state"]) for a in everything} == {("cpu_pct", "resolved"), ("mem_pct", "firing")}
    assert [a["metric"] for a in await rig.alerts(state="firing")] == ["mem_pct"]
    cpu_rule = next(a["rule_id"] for a in everything if a["metric"] == "cpu_pct")
    assert [a["metric"] for a in await rig.alerts(rule=cpu_rule)] == ["cpu_pct"]
    assert len(await rig.alerts(node=rig.node_id)) == 2
    assert await rig.alerts(node=rig.node_id + 1) == []
    assert len(await rig.alerts(limit=1)) == 1
    assert await rig.alerts(to=rig.t - 3600) == []
    status, body = await rig.server.request("GET", "/api/v1/alerts?state=burning", rig.token)
    assert status == 400 and body["error"]["code"] == "invalid_query"
    status, body = await rig.server.request("GET", "/api/v1/alerts?from=10&to=5", rig.token)
    assert status == 400
    viewer = await rig.server.user_token("val", "viewer")
    firing = (await rig.alerts(state="firing"))[0]
    status, _ = await rig.server.request("POST", f"/api/v1/alerts/{firing['id']}/ack", viewer)
    assert status == 403
    status, _ = await rig.server.request("POST", f"/api/v1/alerts/{firing['id']}/ack", rig.token)
    assert status == 200
    status, audit = await rig.server.request("GET", "/api/v1/audit?action=alert.ack", rig.token)
    assert [(e["target"], e["result"]) for e in audit["entries"]] == [(f"alert:{firing['id']}", "ok")]


async def test_preview_replays_stored_history(rig: Rig) -> None:
    # 10 minutes of samples, one a second: spells over 90 of 40 s, 5 s and 30 s, the rest at 50.
    start = float(int(time.time()) - 700)  # whole seconds: stored timestamps are milliseconds
    values = [50.0] * 600
    values[100:140] = [95.0] * 40
    values[300:305] = [96.0] * 5
    values[400:430] = [97.0] * 30
    samples = []
    for i, v in enumerate(values):
        samples += rig.agent.make(1, ts=start + i, cpu=v)
    for i in range(0, len(samples), 100):
        await rig.agent.send_samples(samples[i : i + 100])
    rule = await rig.rule(**{"for": "10s"})
    status, preview = await rig.server.request(
        "GET", f"/api/v1/alert-rules/{rule['id']}/preview?range=24h", rig.token
    )
    assert status == 200, preview
    assert preview["fired"] == 2  # the 5-second spell never lasted `for`
    first, second = preview["alerts"]
    assert (first["node_id"], first["started_at"], first["fired_at"]) == (
        rig.node_id,
        start + 100,
        start + 110,
    )
    assert first["resolved_at"] == start + 140 and first["peak"] == 95.0
    assert (second["fired_at"], second["resolved_at"], second["peak"]) == (start + 410, start + 430, 97.0)
    assert preview["to"] - preview["from"] == pytest.approx(86400)
    status, week = await rig.server.request(
        "GET", f"/api/v1/alert-rules/{rule['id']}/preview?range=7d", rig.token
    )
    assert status == 200 and week["to"] - week["from"] == pytest.approx(7 * 86400)
    status, body = await rig.server.request(
        "GET", f"/api/v1/alert-rules/{rule['id']}/preview?range=1y", rig.token
    )
    assert status == 400 and body["error"]["code"] == "invalid_query"
    # A rule being edited, not saved: the same replay, and nothing is stored.
    draft = {"name": "draft", "metric": "cpu_pct", "threshold": 90, "for": "10s", "targets": {"all": True}}
    viewer = await rig.server.user_token("val", "viewer")
    status, same = await rig.server.request(
        "POST", "/api/v1/alert-rules/preview?range=24h", viewer, json=draft
    )
    assert status == 200, same
    assert (same["fired"], same["alerts"]) == (preview["fired"], preview["alerts"])
    status, fewer = await rig.server.request(
        "POST", "/api/v1/alert-rules/preview", viewer, json={**draft, "for": "35s"}
    )
    assert status == 200 and [a["fired_at"] for a in fewer["alerts"]] == [start + 135]
    status, body = await rig.server.request(
        "POST", "/api/v1/alert-rules/preview", viewer, json={**draft, "metric": "nope"}
    )
    assert status == 400 and body["error"]["code"] == "invalid_rule"
    status, listed = await rig.server.request("GET", "/api/v1/alert-rules", viewer)
    assert [x["name"] for x in listed["rules"]] == ["cpu high"]
    # The live engine raised nothing: the rule did not exist when the samples arrived.
    live = [a for a in await rig.alerts() if a["state"] != "pending"]
    assert live == []


async def test_preview_on_1m_rollups(rig: Rig) -> None:
    start = (int(time.time()) // 60 - 20) * 60
    samples = [
        s
        for i in range(20 * 60)
        for s in rig.agent.make(1, ts=start + i, cpu=95.0 if 300 <= i < 600 else 20.0)
    ]
    for i in range(0, len(samples), 200):
        await rig.agent.send_samples(samples[i : i + 200])
    await rig.server.core.store.settle()
    await rig.server.core.store.rollup(hours=False, now=time.time() + 120)
    rule = await rig.rule(**{"for": "2m"})
    status, week = await rig.server.request(
        "GET", f"/api/v1/alert-rules/{rule['id']}/preview?range=7d", rig.token
    )
    assert status == 200, week
    assert week["fired"] == 1
    [a] = week["alerts"]
    assert (a["started_at"], a["fired_at"], a["resolved_at"]) == (start + 300, start + 420, start + 600)


async def test_openapi_lists_the_alerting_routes(rig: Rig) -> None:
    status, doc = await rig.server.request("GET", "/api/v1/openapi.json", rig.token)
    assert status == 200
    for path in (
        "/api/v1/alert-rules",
        "/api/v1/alert-rules/{id}",
        "/api/v1/alert-rules/{id}/preview",
        "/api/v1/alert-rules/preview",
        "/api/v1/alerts",
        "/api/v1/alerts/{id}",
        "/api/v1/alerts/{id}/ack",
        "/api/v1/silences",
        "/api/v1/silences/{id}",
    ):
        assert path in doc["paths"], path
