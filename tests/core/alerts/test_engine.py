"""Alert evaluation on a real core fed by a real agent socket: states, edges, notifications in the outbox."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from servermanager.common.alerts import WebhookAlert
from tests.core.alerts.helpers import QUICK, Rig
from tests.helpers.core import RawAgent, RawClient
from tests.helpers.receiver import Receiver
from tests.helpers.wait import wait_for, wait_until


@pytest.fixture
async def rig(core_server: RunningCore) -> AsyncIterator[Rig]:
    r = await Rig(core_server).start()
    try:
        yield r
    finally:
        await r.agent.close()


def _states(detail: dict) -> list[str]:
    return [t["state"] for t in detail["transitions"]]


async def test_for_and_hysteresis_at_the_edges(rig: Rig) -> None:
    ch1, ch2 = await rig.channel("hook-a"), await rig.channel("hook-b")
    await rig.rule(clear_threshold=80, **{"for": "5s"}, channels=[ch1, ch2])
    outbox = rig.server.core.alerts.outbox_written
    t0 = await rig.sample(90.0)  # at the threshold: '>' does not hold
    assert await rig.alerts() == []
    t0 = await rig.sample(95.0)
    [a] = await rig.alerts()
    assert (a["state"], a["started_at"], a["value"]) == ("pending", t0, 95.0)
    await rig.sample(97.0, at=4.9)  # 4.9 s < for
    [a] = await rig.alerts()
    assert a["state"] == "pending" and a["peak"] == 97.0
    assert not outbox.is_set()  # nothing to notify while pending
    t_fire = await rig.sample(91.0, at=0.1)  # exactly `for` after the start
    [a] = await rig.alerts()
    assert (a["state"], a["fired_at"], a["value"], a["peak"]) == ("firing", t_fire, 91.0, 97.0)
    assert outbox.is_set()
    # Hysteresis: below the threshold but not below the clear threshold keeps it firing; 80 is not < 80.
    await rig.sample(85.0)
    await rig.sample(80.0)
    assert (await rig.alerts())[0]["state"] == "firing"
    t_res = await rig.sample(79.9)
    [a] = await rig.alerts()
    assert (a["state"], a["resolved_at"], a["value"]) == ("resolved", t_res, 79.9)
    detail = await rig.detail(a["id"])
    assert _states(detail) == ["pending", "firing", "resolved"]
    # Exactly one row per transition per channel: firing and resolved on each of the two channels.
    rows = await rig.deliveries()
    assert sorted((r[1], r[2]) for r in rows) == [
        (ch1, "firing"),
        (ch1, "resolved"),
        (ch2, "firing"),
        (ch2, "resolved"),
    ]
    for r in rows:
        body = msgspec.json.decode(r[3], type=WebhookAlert)
        assert (body.id, body.rule, body.node, body.node_id) == (a["id"], "cpu high", "web-1", rig.node_id)
        assert body.threshold == 90 and body.started_at == t0
        assert body.resolved_at == (t_res if r[2] == "resolved" else None)
        assert (r[4], r[5]) == ("pending", 0)
        assert r[7] == pytest.approx(r[6] + rig.server.settings.alert_group_wait)
    assert [d["status"] for d in detail["deliveries"]] == ["firing", "firing", "resolved", "resolved"]
    assert {d["channel"] for d in detail["deliveries"]} == {"hook-a", "hook-b"}
    # More samples on the clear side change nothing more.
    await rig.sample(10.0)
    assert len(await rig.deliveries()) == 4


async def test_a_pending_alert_that_stops_before_for_is_dropped(rig: Rig) -> None:
    ch = await rig.channel("hook")
    await rig.rule(**{"for": 10}, channels=[ch])
    await rig.sample(95.0)
    assert [a["state"] for a in await rig.alerts()] == ["pending"]
    await rig.sample(50.0, at=9.0)
    assert await rig.alerts() == []
    assert await rig.deliveries() == []


async def test_keep_firing_for_delays_the_resolve(rig: Rig) -> None:
    await rig.rule(keep_firing_for="10s")
    await rig.sample(95.0)
    assert (await rig.alerts())[0]["state"] == "firing"  # for 0: fires at once
    await rig.sample(50.0)
    await rig.sample(50.0, at=9.0)
    assert (await rig.alerts())[0]["state"] == "firing"
    await rig.sample(95.0)  # back over: the clear wait starts again
    await rig.sample(50.0)
    await rig.sample(50.0, at=9.9)
    assert (await rig.alerts())[0]["state"] == "firing"
    t = await rig.sample(50.0, at=0.1)
    [a] = await rig.alerts()
    assert (a["state"], a["resolved_at"]) == ("resolved", t)


async def test_severity_pair(rig: Rig) -> None:
    ch = await rig.channel("hook")
    await rig.rule(threshold=80, critical_threshold=95, channels=[ch])
    await rig.sample(85.0)
    [a] = await rig.alerts()
    assert (a["state"], a["severity"], a["threshold"]) == ("firing", "warning", 80)
    await rig.sample(96.0)
    [a] = await rig.alerts()
    assert (a["severity"], a["threshold"], a["peak"]) == ("critical", 95, 96.0)
    await rig.sample(85.0)  # stays critical for the rest of its life
    assert (await rig.alerts())[0]["severity"] == "critical"
    detail = await rig.detail(a["id"])
    assert [(t["state"], t["severity"]) for t in detail["transitions"]] == [
        ("pending", "warning"),
        ("firing", "warning"),
        ("firing", "critical"),
    ]
    rows = await rig.deliveries()
    assert [json.loads(r[3])["severity"] for r in rows] == ["warning", "critical"]
    # Straight to critical when the first value is past both.
    await rig.sample(10.0)
    await rig.sample(99.0)
    newest = (await rig.alerts(state="firing"))[0]
    assert newest["severity"] == "critical"


async def test_offline_grace_fires_and_resolves_when_back(rig: Rig) -> None:
    ch = await rig.channel("hook")
    await rig.rule(name="down", metric="offline", **{"for": "30s"}, severity="critical", channels=[ch])
    await rig.agent.close()
    alerts = await wait_until(rig.alerts, lambda a: len(a) == 1, what="offline pending")
    assert (alerts[0]["state"], alerts[0]["metric"], alerts[0]["severity"]) == (
        "pending",
        "offline",
        "critical",
    )
    await rig.tick(20)  # inside the grace
    assert (await rig.alerts())[0]["state"] == "pending"
    assert await rig.deliveries() == []
    await rig.tick(31)
    [a] = await rig.alerts()
    assert a["state"] == "firing" and a["value"] is None
    assert [r[2] for r in await rig.deliveries()] == ["firing"]
    await rig.agent.hello()  # back, with its credential
    [a] = await wait_until(rig.alerts, lambda a: a[0]["state"] == "resolved", what="resolved")
    assert [r[2] for r in await rig.deliveries()] == ["firing", "resolved"]
    assert _states(await rig.detail(a["id"])) == ["pending", "firing", "resolved"]


async def test_offline_back_within_grace_leaves_nothing(rig: Rig) -> None:
    await rig.rule(name="down", metric="offline", **{"for": "1h"})
    await rig.agent.close()
    await wait_until(rig.alerts, lambda a: len(a) == 1, what="offline pending")
    await rig.agent.hello()
    await wait_until(rig.alerts, lambda a: a == [], what="pending offline alert dropped")


async def test_a_rule_gains_a_node_through_its_tag_later(rig: Rig) -> None:
    await rig.rule(targets={"tag": "web"})
    await rig.sample(95.0)
    assert await rig.alerts() == []
    status, _ = await rig.server.request(
        "PATCH", f"/api/v1/nodes/{rig.node_id}", rig.token, json={"tags": ["web", "prod"]}
    )
    assert status == 200
    await rig.sample(95.0)
    [a] = await rig.alerts()
    assert (a["state"], a["node_id"]) == ("firing", rig.node_id)
    # Leaving the tag ends the alert: the rule no longer judges that node.
    status, _ = await rig.server.request(
        "PATCH", f"/api/v1/nodes/{rig.node_id}", rig.token, json={"tags": []}
    )
    await rig.sample(95.0)
    assert (await rig.alerts())[0]["state"] == "resolved"


async def test_silence(rig: Rig) -> None:
    ch = await rig.channel("hook")
    rule = await rig.rule(channels=[ch])
    status, s = await rig.server.request(
        "POST",
        "/api/v1/silences",
        rig.token,
        json={"rule": rule["id"], "duration": "1h", "comment": "maintenance"},
    )
    assert status == 201, s
    assert s["ends_at"] == pytest.approx(s["starts_at"] + 3600) and s["created_by"] == "admin"
    await rig.sample(95.0)
    [a] = await rig.alerts()
    assert a["state"] == "firing" and a["silenced"] is True
    assert await rig.deliveries() == []
    await rig.tick(60)  # still silenced: nothing held back goes out
    assert await rig.deliveries() == []
    # Another silence, for a group this node is not in, ending first: active ones list soonest end first.
    status, other = await rig.server.request(
        "POST", "/api/v1/silences", rig.token, json={"group": "elsewhere", "duration": 60, "comment": "x"}
    )
    assert status == 201
    status, listed = await rig.server.request("GET", "/api/v1/silences", rig.token)
    assert [x["id"] for x in listed["silences"]] == [other["id"], s["id"]]
    status, _ = await rig.server.request("DELETE", f"/api/v1/silences/{s['id']}", rig.token)
    assert status == 204
    status, expired = await rig.server.request("GET", "/api/v1/silences?state=expired", rig.token)
    assert [x["id"] for x in expired["silences"]] == [s["id"]]
    [a] = await rig.alerts()
    assert a["silenced"] is False  # the group silence does not match this node
    # Still firing when the silence ended: its notification goes out now, once.
    await rig.tick(1)
    assert [r[2] for r in await rig.deliveries()] == ["firing"]
    await rig.tick(2)
    assert len(await rig.deliveries()) == 1


async def test_repeats_back_off_and_ack_stops_them(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "core", alert_repeat_interval=60, alert_repeat_max=150).start()
    try:
        rig = await Rig(server).start()
        ch = await rig.channel("hook")
        await rig.rule(channels=[ch])
        await rig.sample(95.0)
        assert len(await rig.deliveries()) == 1
        await rig.tick(59)
        assert len(await rig.deliveries()) == 1
        await rig.tick(61)  # first repeat after the interval
        assert len(await rig.deliveries()) == 2
        await rig.tick(61 + 119)  # the next wait doubled to 120 s
        assert len(await rig.deliveries()) == 2
        await rig.tick(61 + 121)
        assert len(await rig.deliveries()) == 3
        await rig.tick(61 + 121 + 151)  # capped at alert_repeat_max
        assert len(await rig.deliveries()) == 4
        [a] = await rig.alerts()
        operator = await server.user_token("op", "operator")
        status, acked = await server.request("POST", f"/api/v1/alerts/{a['id']}/ack", operator)
        assert status == 200, acked
        assert acked["acked_by"] == "op" and acked["acked_at"] is not None
        await rig.tick(10_000)
        assert len(await rig.deliveries()) == 4
        assert all(r[2] == "firing" for r in await rig.deliveries())
        [a] = await rig.alerts()
        assert a["acked_by"] == "op"
        # Acknowledging twice is harmless; a resolved alert cannot be acknowledged.
        status, again = await server.request("POST", f"/api/v1/alerts/{a['id']}/ack", rig.token)
        assert status == 200 and again["acked_by"] == "op"
        await rig.sample(10.0)
        status, body = await server.request("POST", f"/api/v1/alerts/{a['id']}/ack", rig.token)
        assert status == 409 and body["error"]["code"] == "conflict"
        status, body = await server.request("POST", "/api/v1/alerts/999/ack", rig.token)
        assert status == 404
        await rig.agent.close()
    finally:
        await server.stop()


async def test_alerts_of_an_offline_node_are_suppressed(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "core", alert_repeat_interval=60).start()
    try:
        rig = await Rig(server).start()
        ch = await rig.channel("hook")
        cpu = await rig.rule(channels=[ch])
        down = await rig.rule(name="down", metric="offline", **{"for": 30}, channels=[ch])
        await rig.sample(95.0)
        assert [r[2] for r in await rig.deliveries()] == ["firing"]
        await rig.agent.close()
        await wait_until(lambda: rig.alerts(state="pending"), lambda a: len(a) == 1, what="offline pending")
        await rig.tick(61)  # the cpu alert's repeat is due, and the offline alert fires
        rows = await rig.deliveries()
        fired = {a["id"]: a["rule_id"] for a in await rig.alerts(state="firing")}
        assert sorted(fired.values()) == [cpu["id"], down["id"]]
        assert [fired[r[0]] for r in rows] == [cpu["id"], down["id"]]
        # Back online: the repeats of the cpu alert resume.
        await rig.agent.hello()
        await wait_until(lambda: rig.alerts(state="firing"), lambda a: len(a) == 1, what="offline resolved")
        await rig.tick(200)
        rows = await rig.deliveries()
        assert [(fired.get(r[0]), r[2]) for r in rows] == [
            (cpu["id"], "firing"),
            (down["id"], "firing"),
            (down["id"], "resolved"),
            (cpu["id"], "firing"),
        ]
        await rig.agent.close()
    finally:
        await server.stop()


async def test_flapping_is_held_back_until_stable(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "core", alert_flap_max=2, alert_flap_window=600).start()
    try:
        rig = await Rig(server).start()
        ch = await rig.channel("hook")
        await rig.rule(channels=[ch])
        await rig.sample(95.0)  # flip 1: notified
        await rig.sample(10.0)  # flip 2: resolved, notified
        await rig.sample(95.0)  # flip 3: flapping, held
        await rig.sample(10.0)  # its resolve is not sent either (its firing was not)
        await rig.sample(95.0)
        assert [r[2] for r in await rig.deliveries()] == ["firing", "resolved"]
        await rig.tick(1)
        assert len(await rig.deliveries()) == 2
        await rig.tick(601)  # the flips left the window: stable, and still firing
        assert [r[2] for r in await rig.deliveries()] == ["firing", "resolved", "firing"]
        await rig.agent.close()
    finally:
        await server.stop()


async def test_a_restart_continues_an_open_alert(tmp_path: Path) -> None:
    folder = tmp_path / "core"
    server = await RunningCore(folder).start()
    rig = await Rig(server).start()
    ch = await rig.channel("hook")
    await rig.rule(clear_threshold=80, channels=[ch])
    await rig.sample(95.0)
    [before] = await rig.alerts()
    rig2 = await rig.restarted()
    try:
        [after] = await rig2.alerts()
        assert (after["id"], after["state"], after["fired_at"]) == (
            before["id"],
            "firing",
            before["fired_at"],
        )
        await rig2.sample(85.0)  # hysteresis still applies
        assert (await rig2.alerts())[0]["state"] == "firing"
        await rig2.sample(70.0)
        [done] = await rig2.alerts()
        assert (done["id"], done["state"]) == (before["id"], "resolved")
        # Notified before the restart, so the resolve is sent; the firing was not sent twice.
        assert [r[2] for r in await rig2.deliveries()] == ["firing", "resolved"]
        await rig2.agent.close()
    finally:
        await rig2.server.stop()


async def test_alert_events_reach_clients(rig: Rig) -> None:
    viewer = await rig.server.user_token("watcher", "viewer")
    client = RawClient(rig.server)
    await client.connect(viewer)
    await client.subscribe([rig.node_id])
    try:
        await rig.rule()
        await rig.sample(95.0)
        ev = await client.recv_type(p.AlertEvent, where=lambda f: f.alert.state == "firing")
        assert (ev.alert.node_id, ev.alert.rule, ev.alert.value) == (rig.node_id, "cpu high", 95.0)
        status, _ = await rig.server.request("POST", f"/api/v1/alerts/{ev.alert.id}/ack", rig.token)
        assert status == 200
        acked = await client.recv_type(p.AlertEvent, where=lambda f: f.alert.acked_by is not None)
        assert acked.alert.acked_by == "admin"
        await rig.sample(10.0)
        done = await client.recv_type(p.AlertEvent, where=lambda f: f.alert.state == "resolved")
        assert done.alert.id == ev.alert.id
    finally:
        await client.close()


async def test_deleting_a_rule_resolves_its_alerts_and_retention_prunes(rig: Rig) -> None:
    rule = await rig.rule()
    await rig.sample(95.0)
    [a] = await rig.alerts()
    status, _ = await rig.server.request("DELETE", f"/api/v1/alert-rules/{rule['id']}", rig.token)
    assert status == 204
    [a] = await rig.alerts()
    assert a["state"] == "resolved"
    engine = rig.server.core.alerts
    assert await engine.prune(now=a["resolved_at"] + engine.settings.alert_retention - 1) == 0
    assert await engine.prune(now=a["resolved_at"] + engine.settings.alert_retention + 1) == 1
    assert await rig.alerts() == []
    status, _ = await rig.server.request("GET", f"/api/v1/alerts/{a['id']}", rig.token)
    assert status == 404


async def test_a_node_that_never_comes_back_after_a_restart_fires(tmp_path: Path) -> None:
    folder = tmp_path / "core"
    server = await RunningCore(folder).start()
    rig = await Rig(server).start()
    await rig.rule(name="down", metric="offline", **{"for": "10s"})
    await rig.agent.close()
    await wait_until(rig.alerts, lambda a: len(a) == 1, what="offline pending")
    await server.stop()  # the pending alert is open across the restart
    server = await RunningCore(folder).start()
    try:
        rig2 = Rig(server)
        rig2.token = await server.admin_token()
        [pending] = await rig2.alerts()
        assert pending["state"] == "pending"
        await rig2.tick(pending["started_at"] + 11 - time.time())
        [fired] = await rig2.alerts()
        assert (fired["id"], fired["state"]) == (pending["id"], "firing")
    finally:
        await server.stop()


async def test_offline_at_startup_gets_a_heartbeat_timeout_first(tmp_path: Path) -> None:
    folder = tmp_path / "core"
    server = await RunningCore(folder).start()
    rig = await Rig(server).start()
    await rig.agent.close()
    await wait_for(lambda: not server.core.nodes.nodes[rig.node_id].online, what="node offline")
    await server.stop()
    server = await RunningCore(folder).start()  # the node is not connected, but may be on its way
    try:
        rig2 = Rig(server)
        rig2.token = await server.admin_token()
        await rig2.rule(name="down", metric="offline", **{"for": "10s"})
        engine = server.core.alerts
        since = engine.offline_since[rig.node_id]
        grace = server.settings.agent_interval * server.settings.heartbeat_misses + 1
        assert since - time.time() == pytest.approx(grace, abs=1.0)
        engine.tick(since - 0.01)
        assert await rig2.alerts() == []
        engine.tick(since)
        [a] = await rig2.alerts()
        assert (a["state"], a["started_at"]) == ("pending", since)
        engine.tick(since + 10)
        assert [a["state"] for a in await rig2.alerts()] == ["firing"]
    finally:
        await server.stop()


async def test_deleting_a_node_ends_its_alerts(rig: Rig) -> None:
    ch = await rig.channel("hook")
    await rig.rule(channels=[ch])
    await rig.sample(95.0)
    status, _ = await rig.server.request("DELETE", f"/api/v1/nodes/{rig.node_id}", rig.token)
    assert status == 204
    await rig.tick(0)
    [a] = await rig.alerts()
    assert a["state"] == "resolved"
    assert [r[2] for r in await rig.deliveries()] == ["firing", "resolved"]


async def test_end_to_end_a_sample_reaches_the_webhook_receiver_once(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    server = await RunningCore(tmp_path / "core", alert_group_wait=0).start()
    try:
        rig = await Rig(server).start()
        status, ch = await server.request(
            "POST",
            "/api/v1/channels",
            rig.token,
            json={"name": "hook", "kind": "webhook", "url": receiver.url()},
        )
        assert status == 201, ch
        await rig.rule(clear_threshold=80, channels=[ch["id"]])
        t = await rig.sample(97.0)
        await wait_for(lambda: len(receiver.got) == 1, what="the firing notification")
        body = receiver.got[0].json()
        [a] = await rig.alerts()
        assert body == {
            "status": "firing",
            "alerts": [
                {
                    "id": a["id"],
                    "rule": "cpu high",
                    "node": "web-1",
                    "node_id": rig.node_id,
                    "severity": "warning",
                    "value": 97.0,
                    "threshold": 90.0,
                    "started_at": t,
                    "resolved_at": None,
                }
            ],
        }
        t_res = await rig.sample(70.0)
        await wait_for(lambda: len(receiver.got) == 2, what="the resolved notification")
        assert receiver.got[1].json()["status"] == "resolved"
        assert receiver.got[1].json()["alerts"][0]["resolved_at"] == t_res
        detail = await wait_until(
            lambda: rig.detail(a["id"]),
            lambda d: all(x["state"] == "sent" for x in d["deliveries"]),
            what="both deliveries marked sent",
        )
        assert [(x["status"], x["channel"]) for x in detail["deliveries"]] == [
            ("firing", "hook"),
            ("resolved", "hook"),
        ]
        await server.core.outbox.idle()
        assert len(receiver.got) == 2
        await rig.agent.close()
    finally:
        await server.stop()
        await receiver.stop()


async def test_an_alert_id_is_never_given_twice_across_restarts(tmp_path: Path) -> None:
    folder = tmp_path / "core"
    server = await RunningCore(folder).start()
    rig = await Rig(server).start()
    await rig.rule(**{"for": 3600})
    await rig.sample(95.0)
    [pending] = await rig.alerts()
    assert pending["state"] == "pending"
    await rig.sample(10.0)  # dropped before `for`: its row is deleted
    assert await rig.alerts() == []
    rig2 = await rig.restarted()
    try:
        await rig2.sample(96.0)
        [again] = await rig2.alerts()
        assert again["id"] > pending["id"]  # a receiver that saw the old id never sees it reused
    finally:
        await rig2.agent.close()
        await rig2.server.stop()


async def test_alerts_that_fire_a_moment_apart_share_one_notification(tmp_path: Path) -> None:
    """A group opens with the first notification of a channel and status; what follows within
    `alert_group_wait` joins it (one POST), and what comes after it went out opens the next."""
    receiver = await Receiver().start()
    # 3 s, not 1: on a loaded machine the second firing can land over a second after the first.
    server = await RunningCore(tmp_path / "core", **{**QUICK, "alert_group_wait": 3.0}).start()
    second = RawAgent(server, "web-2")
    try:
        rig = await Rig(server).start()
        await second.hello(token=await server.enroll_token())
        status, ch = await server.request(
            "POST",
            "/api/v1/channels",
            rig.token,
            json={"name": "hook", "kind": "webhook", "url": receiver.url()},
        )
        assert status == 201, ch
        await rig.rule(channels=[ch["id"]])
        await rig.sample(97.0)  # web-1 fires
        await second.send_samples(second.make(1, ts=rig.t, cpu=98.0))  # web-2 fires a moment later
        rows = await rig.deliveries()
        assert [(r[2], r[4]) for r in rows] == [("firing", "pending"), ("firing", "pending")]
        assert rows[1][6] > rows[0][6]  # written apart...
        assert rows[1][7] == rows[0][7] == pytest.approx(rows[0][6] + 3.0)  # ...due together
        await wait_for(lambda: len(receiver.got) == 1, what="the grouped notification")
        assert sorted(a["node"] for a in receiver.got[0].json()["alerts"]) == ["web-1", "web-2"]
        # Once that group has gone out, the next firing opens a new one; resolved ones have their own.
        await rig.sample(10.0)  # web-1 resolves...
        await rig.sample(96.0)  # ...and fires again
        rows = await rig.deliveries()
        assert [r[2] for r in rows[2:]] == ["resolved", "firing"]
        assert rows[3][7] == pytest.approx(rows[3][6] + 3.0) and rows[3][7] > rows[0][7] + 0.5
        await wait_for(lambda: len(receiver.got) == 3, what="the next two notifications")
        assert sorted(g.json()["status"] for g in receiver.got[1:]) == ["firing", "resolved"]
        assert all([a["node"] for a in g.json()["alerts"]] == ["web-1"] for g in receiver.got[1:])
        await rig.agent.close()
    finally:
        await second.close()
        await server.stop()
        await receiver.stop()
