"""Several real cores on one real Redis: live events across cores, ownership, routed commands and
logs, one leader, and a core that loses Redis serving on by itself."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from devkit.cores import RunningCore
from devkit.tcpproxy import TcpProxy
from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from servermanager.core.nodes import NodeState, RemoteLink
from tests.helpers.cluster import REDIS, drop_keys, prefix, seeded, start_cores
from tests.helpers.core import RawAgent, RawClient, metrics
from tests.helpers.wait import wait_for, wait_until


@pytest.fixture
async def pfx() -> AsyncIterator[str]:
    name = prefix()
    yield name
    await drop_keys(name)


@pytest.fixture
async def rds() -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(REDIS)
    yield r
    await r.aclose()


async def _stop(*cores: RunningCore) -> None:
    for core in cores:
        await core.stop()


def _on(agent: RawAgent, core: RunningCore) -> RawAgent:
    """The same enrolled agent (its credential), dialling another core."""
    moved = RawAgent(core, agent.name)
    moved.credential, moved.node_id = agent.credential, agent.node_id
    return moved


async def test_live_events_of_an_agent_on_b_reach_a_client_on_a(tmp_path: Path, pfx: str) -> None:
    [seed] = await seeded(tmp_path, ["web1"])
    a, b = await start_cores(tmp_path, pfx, 2)
    try:
        viewer = await a.user_token("vic", "viewer")
        client = RawClient(a)
        await client.connect(viewer)
        snap = await client.subscribe()
        assert [n.online for n in snap.nodes] == [False]

        agent = _on(seed, b)
        await agent.hello()
        status = await client.recv_type(p.NodeStatus)
        assert (status.node_id, status.online) == (seed.node_id, True)
        ack = await agent.send_samples(agent.make(1, cpu=42.5))
        assert ack.upto_seq == agent.seq
        event = await client.recv_type(p.SampleEvent)
        assert (event.node_id, event.sample.metrics.cpu_pct) == (seed.node_id, 42.5)

        # Any core answers REST about any node: A knows it is online, and its latest sample.
        token = await a.admin_token()
        _, node = await a.request("GET", f"/api/v1/nodes/{seed.node_id}", token)
        assert node["online"] is True and node["latest"]["metrics"]["cpu_pct"] == 42.5
        assert node["interval"] == 1.0  # the core's agent_interval, as B told the agent

        # Each event once: B's own client gets it from B, never a second copy through Redis.
        local = RawClient(b)
        await local.connect(await b.admin_token())
        await local.subscribe()
        await agent.send_samples(agent.make(1, cpu=7.0))
        got = await local.recv_type(p.SampleEvent)
        assert got.sample.metrics.cpu_pct == 7.0
        await agent.send_samples(agent.make(1, cpu=8.0))
        got = await local.recv_type(p.SampleEvent)
        assert got.sample.metrics.cpu_pct == 8.0, "the 7.0 sample came twice"

        await agent.close()
        gone = await client.recv_type(p.NodeStatus, where=lambda f: not f.online)
        assert gone.node_id == seed.node_id
        await client.close()
        await local.close()
    finally:
        await _stop(a, b)


async def test_a_command_from_a_runs_on_the_agent_held_by_b(tmp_path: Path, pfx: str) -> None:
    [seed] = await seeded(tmp_path, ["web1"])
    a, b = await start_cores(tmp_path, pfx, 2)
    try:
        agent = _on(seed, b)
        await agent.hello()
        admin = await a.admin_token()
        await wait_until(
            lambda: a.request("GET", f"/api/v1/nodes/{seed.node_id}", admin),
            lambda r: r[1]["online"],
            what="A to see the node online",
        )
        operator = await a.user_token("ops", "operator")
        viewer = await a.user_token("vic", "viewer")
        op_client, viewer_client = RawClient(a), RawClient(a)
        await op_client.connect(operator)
        await op_client.subscribe()
        await viewer_client.connect(viewer)
        await viewer_client.subscribe()

        status, info = await a.request(
            "POST",
            "/api/v1/commands",
            operator,
            json={"targets": {"nodes": [seed.node_id]}, "command": ["uptime"], "timeout": 5},
        )
        assert status == 202, info
        assert [r["status"] for r in info["runs"]] == ["sent"]
        cmd = await agent.recv_type(p.Command)
        assert cmd.command_id == info["id"] and cmd.argv == ["uptime"]
        # While it runs, B (which would read the same rows from the shared database) calls it
        # running, not interrupted: A follows it.
        for table in ("commands", "command_runs"):
            key = "id" if table == "commands" else "command_id"
            rows = await a.core.db.fetchall(f"SELECT * FROM {table} WHERE {key} = ?", (cmd.command_id,))
            marks = ",".join("?" * len(rows[0]))
            for r in rows:
                await b.core.db.execute(f"INSERT INTO {table} VALUES ({marks})", tuple(r))
        _, on_b = await b.request("GET", f"/api/v1/commands/{cmd.command_id}", await b.admin_token())
        assert on_b["status"] == "running", on_b
        assert agent.ws is not None
        chunks = [f"line {i}\n" for i in range(30)]  # they reach A in the order sent
        for chunk in ["up 3 days\n", *chunks]:
            await agent.ws.send_bytes(
                p.encode(p.CommandOutput(command_id=cmd.command_id, stream="stdout", data=chunk))
            )
        await agent.ws.send_bytes(
            p.encode(
                p.CommandResult(
                    command_id=cmd.command_id, status="ok", exit_code=0, duration=0.1, stdout_bytes=10
                )
            )
        )
        out = await op_client.recv_type(p.CommandOutput)
        assert (out.node_id, out.data) == (seed.node_id, "up 3 days\n")
        result = await op_client.recv_type(p.CommandResult)
        assert (result.command_id, result.status) == (cmd.command_id, "ok")

        _, done = await wait_until(
            lambda: a.request("GET", f"/api/v1/commands/{cmd.command_id}", operator),
            lambda r: r[1]["status"] != "running",
            what="the command to finish on A",
        )
        [run] = done["runs"]
        assert (run["status"], run["stdout"], run["exit_code"]) == ("ok", "up 3 days\n" + "".join(chunks), 0)
        # A viewer on A never got the output (GET /commands/{id} needs an operator), nor the result.
        await agent.send_samples(agent.make(1))
        await viewer_client.recv_type(p.SampleEvent)  # later than the output, in the same stream
        assert not any(isinstance(f, p.CommandOutput | p.CommandResult) for f in viewer_client._pending)
        for c in (op_client, viewer_client):
            await c.close()

        # The agent gone from B: A refuses as for any offline node.
        await agent.close()
        await wait_until(
            lambda: a.request("GET", f"/api/v1/nodes/{seed.node_id}", admin),
            lambda r: not r[1]["online"],
            what="A to see the node offline",
        )
        status, info = await a.request(
            "POST",
            "/api/v1/commands",
            operator,
            json={"targets": {"nodes": [seed.node_id]}, "command": "true"},
        )
        assert [r["status"] for r in info["runs"]] == ["offline"]
    finally:
        await _stop(a, b)


async def test_logs_follow_on_a_reads_the_agent_on_b(tmp_path: Path, pfx: str) -> None:
    [seed] = await seeded(tmp_path, ["web1"])
    a, b = await start_cores(tmp_path, pfx, 2)
    try:
        agent = _on(seed, b)
        await agent.hello(log_sources=p.LogSources(journal=True, files=["/var/log/app.log"]))
        operator = await a.user_token("ops", "operator")
        # What the agent offers, as its hello to B said, served by A too (the desktop's log view).
        _, body = await wait_until(
            lambda: a.request("GET", f"/api/v1/nodes/{seed.node_id}/logs/sources", operator),
            lambda r: r[1]["online"] and r[1].get("sources") is not None,
            what="A to know the node's log sources",
        )
        assert body["sources"]["journal"] is True and body["sources"]["files"] == ["/var/log/app.log"]
        client = RawClient(a)
        await client.connect(operator)
        await client.subscribe()
        assert client.ws is not None
        await client.ws.send_bytes(
            p.encode(p.LogsFollow(request_id="mine", node_id=seed.node_id, query=p.LogQuery()))
        )
        req = await agent.recv_type(p.LogsRequest)
        assert req.follow and req.request_id != "mine"  # the core's own id on the agent socket
        assert agent.ws is not None
        line = p.LogEntry(ts=1.0, priority=6, unit=None, message="hello from b")
        await agent.ws.send_bytes(p.encode(p.LogsChunk(request_id=req.request_id, entries=[line])))
        chunk = await client.recv_type(p.LogsChunk)
        assert (chunk.request_id, [e.message for e in chunk.entries]) == ("mine", ["hello from b"])
        await client.ws.send_bytes(p.encode(p.LogsStop(request_id="mine")))
        cancel = await agent.recv_type(p.LogsCancel)
        assert cancel.request_id == req.request_id

        # A one-shot read over REST on A, answered by the agent on B.
        async def answer() -> None:
            once = await agent.recv_type(p.LogsRequest)
            assert not once.follow and agent.ws is not None
            chunk = p.LogsChunk(request_id=once.request_id, entries=[line], eof=True)
            await agent.ws.send_bytes(p.encode(chunk))

        (status, body), _ = await asyncio.gather(
            a.request("GET", f"/api/v1/nodes/{seed.node_id}/logs?lines=10", operator), answer()
        )
        assert status == 200, body
        assert [e[3] for e in body["entries"]] == ["hello from b"]
        await client.close()
        await agent.close()
    finally:
        await _stop(a, b)


async def test_an_inbox_message_that_arrives_between_two_reads_is_delivered(
    tmp_path: Path, pfx: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame routed to the core holding the agent lands in that core's inbox while its reader is
    between two XREADs (one just returned): it is read by the next one, not skipped. Reading from
    "$" on every call lost it, and with it a command or a log request (a CI run hung on one)."""
    [seed] = await seeded(tmp_path, ["web1"])
    a, b = await start_cores(tmp_path, pfx, 2)
    try:
        agent = _on(seed, b)
        await agent.hello()
        assert a.core.cluster is not None and b.core.cluster is not None
        sender, reader = a.core.cluster, b.core.cluster
        real = reader.redis.xread
        landed: list[bool] = []

        async def xread(streams: dict[str, str], **kw: object) -> object:
            got = await real(streams, **kw)  # type: ignore[arg-type]
            if not landed:
                landed.append(True)
                # Core A routes a frame to B's agent now, before B's reader calls XREAD again.
                await sender.to_agent(reader.me, seed.node_id or 0, p.LogsCancel(request_id="between"))
            return got

        monkeypatch.setattr(reader.redis, "xread", xread)
        cancel = await agent.recv_type(p.LogsCancel, timeout=10)
        assert landed == [True] and cancel.request_id == "between"
        await agent.close()
    finally:
        await _stop(a, b)


async def test_newer_connection_on_another_core_wins(tmp_path: Path, pfx: str, rds: aioredis.Redis) -> None:
    [seed] = await seeded(tmp_path, ["web1"])
    a, b = await start_cores(tmp_path, pfx, 2)
    try:
        old = _on(seed, a)
        await old.hello()
        key = f"{pfx}:owner:{seed.node_id}"
        await wait_until(lambda: rds.get(key), lambda v: v == b"core0", what="core0 to own the node")
        ttl = await rds.pttl(key)
        assert 0 < ttl <= 2000  # bus_ttl: it lapses if core0 dies

        new = _on(seed, b)
        await new.hello()
        while not isinstance(frame := await old.recv(), aiohttp.WSMessage):
            pass  # pings until the close
        assert frame.type == aiohttp.WSMsgType.CLOSE and frame.data == p.CloseCode.REPLACED
        await wait_until(lambda: rds.get(key), lambda v: v == b"core1", what="core1 to own the node")
        await wait_for(
            lambda: isinstance(a.core.nodes.nodes[seed.node_id].link, RemoteLink), what="A to follow"
        )
        ack = await new.send_samples(new.make(1))
        assert ack.upto_seq == new.seq
        await new.close()
    finally:
        await _stop(a, b)


async def test_one_leader_and_a_takeover_when_it_stops(tmp_path: Path, pfx: str, rds: aioredis.Redis) -> None:
    await seeded(tmp_path, [])
    cores = await start_cores(tmp_path, pfx, 3)
    try:
        await wait_for(lambda: sum(c.core.leads() for c in cores) == 1, what="one leader")
        leader = next(c for c in cores if c.core.leads())
        assert await rds.get(f"{pfx}:leader") == leader.core.cluster.me.encode()  # type: ignore[union-attr]
        # Its rollups run on the leader only.
        assert all(not c.core.leads() for c in cores if c is not leader)
        cores.remove(leader)
        await leader.stop()
        await wait_for(lambda: sum(c.core.leads() for c in cores) == 1, timeout=6, what="a new leader")
    finally:
        await _stop(*cores)


async def test_a_core_that_loses_redis_serves_its_own_and_catches_up(
    tmp_path: Path, pfx: str, rds: aioredis.Redis
) -> None:
    [seed] = await seeded(tmp_path, ["web1"])
    link = await TcpProxy([("127.0.0.1", 6379)]).start()
    # A 10 s interval: the raw agent sends no heartbeats of its own while the test waits.
    a, b = await start_cores(
        tmp_path, pfx, 2, buses=[f"redis://127.0.0.1:{link.port}/0", REDIS], agent_interval=10.0
    )
    try:
        await wait_until(
            lambda: a.request("GET", "/api/v1/health"), lambda r: r[1]["status"] == "ok", what="connected"
        )
        agent = _on(seed, a)
        await agent.hello()
        client = RawClient(a)
        await client.connect(await a.admin_token())
        await client.subscribe()
        await wait_for(lambda: b.core.nodes.nodes[seed.node_id].online, what="B to see the node online")
        far = RawClient(b)
        await far.connect(await b.admin_token())
        await far.subscribe()

        link.cut()
        _, health = await wait_until(
            lambda: a.request("GET", "/api/v1/health"),
            lambda r: r[1]["status"] == "degraded",
            what="degraded",
        )
        [problem] = health["problems"]
        assert problem.startswith("bus:") and "unreachable" in problem
        # Core A goes on with its own agent and client: samples acked, pushed live.
        ack = await agent.send_samples(agent.make(1, cpu=55.0))
        assert ack.upto_seq == agent.seq
        event = await client.recv_type(p.SampleEvent, where=lambda e: e.sample.metrics.cpu_pct == 55.0)
        assert event.node_id == seed.node_id
        # Its ownership key lapses while A cannot renew it, and B sees the node go away.
        await far.recv_type(p.NodeStatus, where=lambda f: not f.online, timeout=8)

        link.restore()
        await wait_until(
            lambda: a.request("GET", "/api/v1/health"),
            lambda r: r[1]["status"] == "ok",
            timeout=15,
            what="ok",
        )
        # Caught up: the key is A's again and B sees the node online and its samples.
        await wait_until(
            lambda: rds.get(f"{pfx}:owner:{seed.node_id}"), lambda v: v == b"core0", what="owner"
        )
        await far.recv_type(p.NodeStatus, where=lambda f: f.online, timeout=8)
        await agent.send_samples(agent.make(1, cpu=66.0))
        await far.recv_type(p.SampleEvent, where=lambda e: e.sample.metrics.cpu_pct == 66.0)
        for c in (client, far):
            await c.close()
        await agent.close()
    finally:
        await _stop(a, b)
        await link.stop()


async def test_a_core_without_redis_starts_degraded(
    tmp_path: Path, pfx: str, caplog: pytest.LogCaptureFixture
) -> None:
    await seeded(tmp_path, [])
    dead = TcpProxy([("127.0.0.1", 6379)])
    dead.open = False  # never started: nothing listens on its port
    [a] = await start_cores(tmp_path, pfx, 1, buses=[f"redis://:hunter2@127.0.0.1:{dead.port}/0"])
    try:
        _, health = await a.request("GET", "/api/v1/health")
        assert health["status"] == "degraded" and health["problems"][0].startswith("bus:")
        assert "redis://:***@127.0.0.1" in health["problems"][0]
        assert a.core.leads() is False
        await wait_for(lambda: "cannot reach Redis" in caplog.text, what="the one log line")
        assert "hunter2" not in caplog.text and "hunter2" not in str(health)
    finally:
        await a.stop()


async def test_an_alert_fires_once_across_the_cluster(tmp_path: Path, pfx: str) -> None:
    [seed] = await seeded(tmp_path, ["web1"])
    a, b = await start_cores(tmp_path, pfx, 2)
    try:
        await wait_for(lambda: sum(c.core.leads() for c in (a, b)) == 1, what="a leader")
        tokens = {}
        for core in (a, b):  # the same rules on every core, as a shared database would hold them
            tokens[core] = token = await core.admin_token()
            for rule in (
                {
                    "name": "cpu high",
                    "metric": "cpu_pct",
                    "op": ">",
                    "threshold": 90,
                    "targets": {"all": True},
                },
                {"name": "down", "metric": "offline", "for": "0s", "targets": {"all": True}},
            ):
                status, body = await core.request("POST", "/api/v1/alert-rules", token, json=rule)
                assert status == 201, body

        async def firing(core: RunningCore) -> list[str]:
            _, body = await core.request("GET", "/api/v1/alerts?state=firing", tokens[core])
            return sorted(x["rule"] for x in body["alerts"])

        agent = _on(seed, b)
        await agent.hello()
        await wait_for(lambda: a.core.nodes.nodes[seed.node_id].online, what="A to see the node online")
        # Samples are evaluated where they arrive (B), never again by A from the bus.
        await agent.send_samples(agent.make(2, cpu=99.0))
        await wait_until(lambda: firing(b), lambda v: v == ["cpu high"], what="the cpu alert on B")
        assert await firing(a) == []

        # The offline rule runs on the leader only: one alert however many cores saw the node go.
        await agent.close()
        leader = a if a.core.leads() else b
        other = b if leader is a else a
        await wait_until(
            lambda: firing(leader), lambda v: "down" in v, what="the offline alert on the leader"
        )
        assert "down" not in await firing(other)
    finally:
        await _stop(a, b)


async def test_a_core_stopping_leaves_the_other_cores_agents_alone(tmp_path: Path, pfx: str) -> None:
    [seed] = await seeded(tmp_path, ["web1"])
    a, b = await start_cores(tmp_path, pfx, 2)
    try:
        agent = _on(seed, b)
        await agent.hello()
        await wait_for(lambda: a.core.nodes.nodes[seed.node_id].online, what="A to see the node online")
        await a.stop()  # a clean stop closes A's own agents ("going away"), not B's
        ack = await agent.send_samples(agent.make(1))
        assert ack.upto_seq == agent.seq
        assert b.core.nodes.nodes[seed.node_id].here
        await agent.close()
    finally:
        await b.stop()


async def test_a_rule_edited_on_a_is_taken_in_by_b(tmp_path: Path, pfx: str) -> None:
    await seeded(tmp_path, [])
    a, b = await start_cores(tmp_path, pfx, 2)
    try:
        rule = {"name": "cpu high", "metric": "cpu_pct", "op": ">", "threshold": 90, "targets": {"all": True}}
        for core in (a, b):  # the same row in both copies, as in the one database they would share
            status, body = await core.request(
                "POST", "/api/v1/alert-rules", await core.admin_token(), json=rule
            )
            assert status == 201 and body["id"] == 1, body
        # B's copy already holds the edit, as the database A writes would for both; B's memory not.
        row = await b.core.db.fetchone("SELECT spec FROM alert_rules WHERE id = 1")
        assert row is not None
        await b.core.db.execute(
            "UPDATE alert_rules SET spec = ? WHERE id = 1",
            (json.dumps({**json.loads(row[0]), "threshold": 75}),),
        )
        assert b.core.alerts.rules[1].cond.threshold == 90
        token = await a.admin_token()
        status, body = await a.request("PATCH", "/api/v1/alert-rules/1", token, json={"threshold": 75})
        assert status == 200, body
        await wait_for(lambda: b.core.alerts.rules[1].cond.threshold == 75, what="B to reload the rule")
        _, seen = await b.request("GET", "/api/v1/alert-rules/1", await b.admin_token())
        assert seen["threshold"] == 75
    finally:
        await _stop(a, b)


async def test_a_result_sent_while_its_core_is_cut_off_arrives_when_it_is_back(
    tmp_path: Path, pfx: str
) -> None:
    [seed] = await seeded(tmp_path, ["web1"])
    link = await TcpProxy([("127.0.0.1", 6379)]).start()
    a, b = await start_cores(
        tmp_path, pfx, 2, buses=[REDIS, f"redis://127.0.0.1:{link.port}/0"], agent_interval=10.0
    )
    try:
        agent = _on(seed, b)
        await agent.hello()
        await wait_for(lambda: a.core.nodes.nodes[seed.node_id].online, what="A to see the node online")
        operator = await a.user_token("ops", "operator")
        status, info = await a.request(
            "POST",
            "/api/v1/commands",
            operator,
            json={"targets": {"nodes": [seed.node_id]}, "command": "date"},
        )
        assert status == 202, info
        cmd = await agent.recv_type(p.Command)

        link.cut()
        await wait_until(
            lambda: b.request("GET", "/api/v1/health"),
            lambda r: r[1]["status"] == "degraded",
            what="B degraded",
        )
        # Meanwhile A cannot reach the node: a new command is refused as offline.
        await wait_for(lambda: not a.core.nodes.nodes[seed.node_id].online, what="A to lose the node")
        _, refused = await a.request(
            "POST",
            "/api/v1/commands",
            operator,
            json={"targets": {"nodes": [seed.node_id]}, "command": "true"},
        )
        assert [r["status"] for r in refused["runs"]] == ["offline"]

        assert agent.ws is not None  # the agent answers B, which holds the answer for A
        await agent.ws.send_bytes(
            p.encode(p.CommandOutput(command_id=cmd.command_id, stream="stdout", data="Mon Nov 30\n"))
        )
        await agent.ws.send_bytes(
            p.encode(p.CommandResult(command_id=cmd.command_id, status="ok", exit_code=0, duration=0.1))
        )
        await agent.send_samples(agent.make(1))  # B has read both frames when this is acked
        link.restore()
        _, done = await wait_until(
            lambda: a.request("GET", f"/api/v1/commands/{cmd.command_id}", operator),
            lambda r: r[1]["status"] == "done",
            timeout=15,
            what="the result on A",
        )
        [run] = done["runs"]
        assert (run["status"], run["stdout"]) == ("ok", "Mon Nov 30\n")
        await agent.close()
    finally:
        await _stop(a, b)
        await link.stop()


def test_another_cores_sample_is_kept_encoded_until_something_reads_it() -> None:
    """A core receives every other core's samples and almost none is read before the next: each is
    decoded only when read (NodeState.latest), a newer one replaces it unread, an older one is
    ignored, and this core's own agent's sample replaces a pending one."""
    st = NodeState(7, "web1", "", [], 0.0, None, None)

    def event(ts: float, cpu: float) -> bytes:
        return p.encode(p.SampleEvent(node_id=7, sample=mt.Sample(seq=1, ts=ts, metrics=metrics(cpu=cpu))))

    assert st.newer_event(100.0, event(100.0, 10.0))
    assert st.newer_event(101.0, event(101.0, 20.0))
    assert not st.newer_event(100.5, event(100.5, 99.0))  # older than what it has
    assert st._latest is None and st.latest_ts == 101.0  # nothing decoded yet
    latest = st.latest
    assert latest is not None and (latest.ts, latest.metrics.cpu_pct) == (101.0, 20.0)
    assert st.latest is latest  # decoded once

    assert st.newer_event(102.0, event(102.0, 30.0))
    own = mt.Sample(seq=2, ts=101.5, metrics=metrics(cpu=5.0))
    st.latest = own  # this core's agent now: what is set is what is read, the pending event goes
    assert st.latest is own and st.latest_ts == 101.5

    assert st.newer_event(103.0, event(103.0, 40.0))
    assert st._latest is None  # the sample decoded before is let go: its lists are not kept alive
    latest = st.latest
    assert latest is not None and latest.metrics.cpu_pct == 40.0
    assert st.newer_event(104.0, b'{"type":"sample","node_id":7,"sample":{"ts":"garbage"}}')
    assert st.latest is None  # unreadable (never expected): no sample rather than a wrong one


async def test_a_core_serves_the_newest_of_another_cores_samples(tmp_path: Path, pfx: str) -> None:
    [seed] = await seeded(tmp_path, ["web1"])
    a, b = await start_cores(tmp_path, pfx, 2)
    try:
        client = RawClient(a)
        await client.connect(await a.admin_token())
        await client.subscribe()
        agent = _on(seed, b)
        await agent.hello()
        token = await a.admin_token()
        for cpu in (11.0, 22.0, 33.0):
            await agent.send_samples(agent.make(1, cpu=cpu))
            event = await client.recv_type(p.SampleEvent)
            assert event.sample.metrics.cpu_pct == cpu
            _, node = await a.request("GET", f"/api/v1/nodes/{seed.node_id}", token)
            assert node["latest"]["metrics"]["cpu_pct"] == cpu
        # Backfill (older than the newest) reaches storage, never the latest sample A serves.
        await agent.send_samples(agent.make(1, ts=time.time() - 60, cpu=99.0))
        await agent.send_samples(agent.make(1, cpu=44.0))
        await client.recv_type(p.SampleEvent)
        _, node = await a.request("GET", f"/api/v1/nodes/{seed.node_id}", token)
        assert node["latest"]["metrics"]["cpu_pct"] == 44.0
    finally:
        await _stop(a, b)


async def test_hundreds_of_agents_going_at_once_do_not_read_as_redis_lost(tmp_path: Path, pfx: str) -> None:
    # Each agent that goes frees its ownership key with a call of its own; when a network blip drops
    # a few hundred at once those calls overlap. redis-py's default pool refused the 101st with "Too
    # many connections", which the core took for Redis lost: the bus went down, leadership flapped.
    [seed] = await seeded(tmp_path, ["web1"])
    [a] = await start_cores(tmp_path, pfx, 1)
    try:
        assert a.core.cluster is not None
        await wait_for(lambda: a.core.bus.problem is None, what="the bus to connect")
        st = a.core.nodes.nodes[seed.node_id]
        await asyncio.gather(*(a.core.cluster.release(st) for _ in range(500)))
        assert a.core.bus.problem is None
        token = await a.admin_token()
        _, health = await a.request("GET", "/api/v1/health", token)
        assert health["status"] == "ok", health
    finally:
        await a.stop()
