"""Incident snapshots on the core: asked once per fired alert, answers matched, bounded and timed
out, kept with the alert (and pruned with it), shown by GET /alerts/{id}, summarised in
notifications; and end to end with a real agent measuring a real CPU burner."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from devkit.cores import RunningCore
from servermanager.agent.main import Agent
from servermanager.agent.settings import IncidentSettings
from servermanager.common import protocol as p
from servermanager.common.alerts import WebhookAlert, WebhookBody
from servermanager.common.incidents import MAX_TOP, IncidentSnapshot, ProcessInfo, summary
from servermanager.core.alerts import incidents
from servermanager.core.alerts.message import Notification, subject, text
from tests.agent.fakes import AgentRunner, fast_settings
from tests.core.alerts.helpers import QUICK, Rig
from tests.helpers.core import RawAgent, RawClient
from tests.helpers.receiver import Receiver
from tests.helpers.wait import wait_for, wait_until

PG = ProcessInfo(
    pid=10, name="postgres", cpu_pct=71.2, rss=3 << 30, user="postgres", read_bps=0, write_bps=5e6
)
NGINX = ProcessInfo(pid=11, name="nginx", cpu_pct=12.0, rss=50 << 20, user="www-data")
JAVA = ProcessInfo(pid=12, name="java", cpu_pct=0.0, rss=6 << 30, user="app")


def snapshot(**over: Any) -> IncidentSnapshot:
    values: dict[str, Any] = dict(
        ts=time.time(), window=0.4, top_cpu=[PG, NGINX, JAVA], top_memory=[JAVA, PG, NGINX]
    )
    values.update(over)
    return IncidentSnapshot(**values)


async def request(agent: RawAgent) -> p.IncidentRequest:
    """The next snapshot request the agent got: it may have come in while the agent waited for an ack."""
    for i, frame in enumerate(agent.skipped):
        if isinstance(frame, p.IncidentRequest):
            del agent.skipped[i]
            return frame
    req: p.IncidentRequest = await agent.recv_type(p.IncidentRequest)
    return req


async def answer(agent: RawAgent, frame: p.Incident, taken: bool = True) -> None:
    """Send the agent's answer; if the core is to take it (the request leaves `pending`), wait
    until what it stores is stored."""
    assert agent.ws is not None
    await agent.ws.send_bytes(p.encode(frame))
    inc = agent.core.core.incidents
    if taken and frame.request_id in inc.pending:
        await wait_for(lambda: frame.request_id not in inc.pending, what="the answer taken")
        await inc.idle()


@pytest.fixture
async def rig(core: RunningCore) -> Rig:
    r = await Rig(core).start()
    r.t = time.time()  # samples of now: a snapshot of now says something about them
    return r


async def detail(rig: Rig, alert_id: int) -> dict[str, Any]:
    await rig.server.core.incidents.idle()
    return await rig.detail(alert_id)


async def test_a_fired_alert_asks_its_agent_once_and_keeps_the_answer(rig: Rig) -> None:
    client = RawClient(rig.server)
    await client.connect(rig.token)
    await client.subscribe()
    try:
        await rig.rule()
        await rig.sample(97.0)
        req = await request(rig.agent)
        assert 60 <= req.lookback < 70  # from a minute before the alert started
        [a] = await rig.alerts()
        d = await detail(rig, a["id"])
        assert (d["snapshot"], d["snapshot_note"]) == (None, incidents.AWAITED)
        await rig.sample(98.0)  # still firing: nothing more is asked

        await answer(rig.agent, p.Incident(request_id=req.request_id, snapshot=snapshot()))
        # Stored, then the alert is announced again so a desktop showing it reloads its story.
        event = await client.recv_type(p.AlertEvent, where=lambda f: f.alert.id == a["id"])
        assert event.alert.state == "firing"
        d = await detail(rig, a["id"])
        assert d["snapshot_note"] is None
        assert [x["name"] for x in d["snapshot"]["top_cpu"]] == ["postgres", "nginx", "java"]
        assert d["snapshot"]["top_memory"][0] == {"pid": 12, "name": "java", "cpu_pct": 0.0,
                                                   "rss": 6 << 30, "user": "app"}  # fmt: skip
        row = await rig.server.core.db.fetchone(
            "SELECT summary FROM alert_snapshots WHERE alert_id = ?", (a["id"],)
        )
        assert row == ("top: postgres 71 %, nginx 12 %",)
        await rig.sample(99.0)
        assert rig.server.core.incidents.requested == 1  # once, however long it fires
    finally:
        await client.close()


async def test_alerts_that_fire_together_share_one_snapshot_and_later_ones_reuse_it(rig: Rig) -> None:
    await rig.rule()
    await rig.rule(name="memory", metric="mem_pct", threshold=20)  # the samples carry 25 %
    await rig.sample(97.0)
    req = await request(rig.agent)
    await answer(rig.agent, p.Incident(request_id=req.request_id, snapshot=snapshot()))
    await rig.server.core.incidents.idle()
    by_metric = {a["metric"]: a["id"] for a in await rig.alerts()}
    rows = dict(await rig.server.core.db.fetchall("SELECT alert_id, summary FROM alert_snapshots"))
    assert rows == {
        by_metric["cpu_pct"]: "top: postgres 71 %, nginx 12 %",
        by_metric["mem_pct"]: "top: java 6.0 GiB, postgres 3.0 GiB, nginx 50.0 MiB",
    }
    # A third alert of the node, right after: the snapshot of a moment ago serves it, unasked.
    await rig.rule(name="load", metric="load1", threshold=0.1)
    await rig.sample(97.0)
    [load] = [a for a in await rig.alerts() if a["metric"] == "load1"]
    d = await detail(rig, load["id"])
    assert d["snapshot_note"] is None and d["snapshot"]["top_cpu"][0]["name"] == "postgres"
    assert rig.server.core.incidents.pending == {} and rig.server.core.incidents.requested == 1


async def test_refusals_timeouts_and_answers_nobody_waits_for(rig: Rig) -> None:
    inc = rig.server.core.incidents
    await rig.rule()
    await rig.sample(97.0)
    req = await request(rig.agent)
    [a] = await rig.alerts()
    # An answer for a request that does not exist, and one from another node: dropped.
    other = RawAgent(rig.server, "db-1")
    await other.hello(token=await rig.server.enroll_token())
    try:
        await answer(other, p.Incident(request_id=req.request_id, snapshot=snapshot()), taken=False)
        await answer(rig.agent, p.Incident(request_id="no-such-request", snapshot=snapshot()))
        await wait_for(lambda: inc.dropped == 2, what="both answers dropped")
        assert req.request_id in inc.pending
    finally:
        await other.close()
    # The agent takes too long: the request is given up, and its late answer dropped too.
    real = inc.clock
    inc.clock = lambda: real() + incidents.TIMEOUT + 1
    try:
        await inc.sweep()
    finally:
        inc.clock = real
    d = await detail(rig, a["id"])
    assert (d["snapshot"], d["snapshot_note"]) == (None, "no snapshot: the agent did not answer within 15s")
    await answer(rig.agent, p.Incident(request_id=req.request_id, snapshot=snapshot()))
    await wait_for(lambda: inc.dropped == 3, what="the late answer dropped")
    assert (await detail(rig, a["id"]))["snapshot"] is None  # the first word stays


async def test_a_refusal_or_an_oversized_snapshot_is_the_note(rig: Rig) -> None:
    await rig.rule()
    await rig.rule(name="memory", metric="mem_pct", threshold=20, targets={"nodes": [rig.node_id]})
    await rig.sample(97.0)
    req = await request(rig.agent)
    off = "snapshots are off in this agent's config ([incident] enabled = false)"
    await answer(rig.agent, p.Incident(request_id=req.request_id, error=off))
    for a in await rig.alerts():
        d = await detail(rig, a["id"])
        assert (d["snapshot"], d["snapshot_note"]) == (None, f"no snapshot: {off}")

    rig2 = await Rig(rig.server).start()
    rig2.t = time.time()
    await rig2.sample(97.0)
    req = await request(rig2.agent)
    too_many = snapshot(top_cpu=[PG] * 21)
    await answer(rig2.agent, p.Incident(request_id=req.request_id, snapshot=too_many))
    [a] = await rig2.alerts(node=rig2.node_id)
    d = await detail(rig2, a["id"])
    assert (
        d["snapshot_note"] == "no snapshot kept: the agent's was too big (more than 20 processes in a list)"
    )


async def test_no_snapshot_for_offline_backfilled_or_too_many_at_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rig.rule()
    # A sample from an outage, sent late: what runs now says nothing about it.
    await rig.sample(97.0, at=-300.0)
    [a] = await rig.alerts()
    d = await detail(rig, a["id"])
    assert d["snapshot_note"].startswith("no snapshot: the alert fired on a sample from 30")
    # Requests in flight are bounded.
    monkeypatch.setattr(incidents, "MAX_PENDING", 1)
    rigs = [await Rig(rig.server).start() for _ in range(2)]
    for r in rigs:
        r.t = time.time()
        await r.sample(97.0)
    notes = [(await detail(r, (await r.alerts(node=r.node_id))[0]["id"]))["snapshot_note"] for r in rigs]
    assert notes == [incidents.AWAITED, "no snapshot: too many were being taken at once"]
    # The offline rule asks nobody: the agent is gone.
    await rig.rule(name="down", metric="offline", **{"for": 0})
    node = rig.server.core.nodes.get(rigs[0].node_id)
    assert node is not None
    await rigs[0].agent.close()
    await wait_for(lambda: not node.online, what="the node offline")
    rig.server.core.alerts.tick(time.time() + 60)
    offline = await wait_until(
        lambda: rigs[0].alerts(node=rigs[0].node_id, state="firing"),
        lambda found: any(x["metric"] == "offline" for x in found),
        what="the offline alert",
    )
    [down] = [x for x in offline if x["metric"] == "offline"]
    assert (await detail(rig, down["id"]))["snapshot_note"] is None


async def test_a_snapshot_goes_with_its_alert(rig: Rig) -> None:
    await rig.rule()
    await rig.sample(97.0)
    req = await request(rig.agent)
    await answer(rig.agent, p.Incident(request_id=req.request_id, snapshot=snapshot()))
    await rig.server.core.incidents.idle()
    await rig.sample(10.0)
    [a] = await rig.alerts(state="resolved")
    db = rig.server.core.db
    assert await db.fetchone("SELECT count(*) FROM alert_snapshots") == (1,)
    engine = rig.server.core.alerts
    assert await engine.prune(now=time.time() + engine.settings.alert_retention + 10) == 1
    assert await db.fetchone("SELECT count(*) FROM alert_snapshots") == (0,)
    status, _ = await rig.server.request("GET", f"/api/v1/alerts/{a['id']}", rig.token)
    assert status == 404


def test_the_summary_ends_the_notification_line() -> None:
    a = WebhookAlert(id=3, rule="cpu high", node="web-1", node_id=1, severity="critical", value=97.0,
                     threshold=90.0, started_at=1.0, resolved_at=None,
                     snapshot="top: postgres 71 %, nginx 12 %")  # fmt: skip
    n = Notification(body=WebhookBody(status="firing", alerts=[a]), details={3: ("cpu_pct", ">")})
    assert subject(n) == (
        "[FIRING] cpu_pct 97 > 90 on web-1 (rule cpu high, critical); top: postgres 71 %, nginx 12 %"
    )
    assert "cpu_pct 97 > 90 on web-1 (rule cpu high, critical); top: postgres 71 %, nginx 12 %" in text(n)


# ---------------------------------------------------------------- end to end


async def test_a_real_agent_snapshots_a_real_burner_into_the_alert_and_the_webhook(tmp_path: Path) -> None:
    receiver = await Receiver().start()
    # A group wait long enough for a loaded machine: the snapshot comes in well before the send.
    server = await RunningCore(tmp_path / "core", **{**QUICK, "alert_group_wait": 3.0}).start()
    runner = AgentRunner()
    burner = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print('ready', flush=True)\nwhile True: pass", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert burner.stdout is not None and await burner.stdout.readline() == b"ready\n"
        token = await server.admin_token()
        status, ch = await server.request(
            "POST", "/api/v1/channels", token, json={"name": "hook", "kind": "webhook", "url": receiver.url()}
        )
        assert status == 201, ch
        rule = {"name": "busy", "metric": "cpu_pct", "op": ">", "threshold": -1, "targets": {"all": True},
                "channels": [ch["id"]]}  # fmt: skip
        assert (await server.request("POST", "/api/v1/alert-rules", token, json=rule))[0] == 201
        # Every process the agent may list: on a busy machine others may outdo the burner.
        settings = fast_settings(tmp_path / "agent", server.url, incident=IncidentSettings(top=MAX_TOP))
        agent = Agent(settings, await server.enroll_token())
        runner.start(agent)

        async def firing() -> list[dict[str, Any]]:
            return list((await server.request("GET", "/api/v1/alerts?state=firing", token))[1]["alerts"])

        [a] = await wait_until(firing, lambda found: len(found) == 1, what="the alert")
        d = await wait_until(
            lambda: server.request("GET", f"/api/v1/alerts/{a['id']}", token),
            lambda r: r[1]["snapshot"] is not None or r[1]["snapshot_note"] != incidents.AWAITED,
            what="the snapshot",
        )
        snap = d[1]["snapshot"]
        assert snap is not None, d[1]["snapshot_note"]
        assert burner.pid in [x["pid"] for x in snap["top_cpu"]]
        assert snap["journal"] is None  # not unless the agent's config allows it
        await wait_for(lambda: len(receiver.got) == 1, what="the firing notification")
        [sent] = receiver.got[0].json()["alerts"]
        assert sent["id"] == a["id"]
        stored = msgspec.convert(snap, IncidentSnapshot)
        assert sent["snapshot"] == summary(stored, "cpu_pct") and sent["snapshot"].startswith("top: ")
        assert agent.snapshots.taken == 1
    finally:
        burner.kill()
        await burner.wait()
        await runner.close()
        await server.stop()
        await receiver.stop()


async def test_the_openapi_document_describes_the_snapshot(rig: Rig) -> None:
    status, doc = await rig.server.request("GET", "/api/v1/openapi.json", rig.token)
    assert status == 200
    schemas = doc["components"]["schemas"]
    detail = schemas["AlertDetail"]["properties"]
    assert detail["snapshot"]["anyOf"][0] == {"$ref": "#/components/schemas/IncidentSnapshot"}
    assert detail["snapshot_note"]["anyOf"][0] == {"type": "string"}
    assert set(schemas["IncidentSnapshot"]["required"]) == {"ts", "window", "top_cpu", "top_memory"}
    assert set(schemas["ProcessInfo"]["properties"]) == {
        "pid", "name", "cpu_pct", "rss", "user", "read_bps", "write_bps", "cmd"
    }  # fmt: skip
    assert "snapshot" in schemas["AlertDetail"]["description"]
