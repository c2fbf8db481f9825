"""The /ws/agent gateway against a real core: enrollment, acks after commit, and every kind of bad input."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp

from devkit.cores import RunningCore
from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from tests.helpers.core import RawAgent, RawClient, host_facts
from tests.helpers.wait import wait_for


async def test_enroll_then_reconnect_with_credential(core_server: RunningCore) -> None:
    token = await core_server.enroll_token()
    agent = RawAgent(core_server, "web-1")
    welcome = await agent.hello(token=token)
    assert welcome.credential and welcome.credential.startswith("smn_")
    assert welcome.interval == core_server.settings.agent_interval
    assert core_server.core.nodes.get(welcome.node_id).online  # type: ignore[union-attr]
    await agent.close()
    await wait_for(lambda: not core_server.core.nodes.get(welcome.node_id).online, what="offline")  # type: ignore[union-attr]

    again = RawAgent(core_server, "web-1")
    welcome2 = await again.hello(credential=welcome.credential)
    assert welcome2.node_id == welcome.node_id
    assert welcome2.credential is None  # only handed out at enrollment
    await again.close()


async def test_enroll_token_use_count_and_expiry(core_server: RunningCore) -> None:
    token = await core_server.enroll_token(uses=1)
    await RawAgent(core_server).hello(token=token)
    second = RawAgent(core_server)
    ws = await second.connect()
    await ws.send_bytes(
        p.encode(
            p.Hello(
                protocol=p.PROTOCOL_VERSION,
                host=mt.HostFacts("h", "", "", "", "", "", 1, 1, ""),
                enroll_token=token,
            )
        )
    )
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == p.CloseCode.UNAUTHORIZED

    expired = await core_server.enroll_token(ttl=0.01)
    gone = time.time() + 0.02
    await wait_for(lambda: time.time() > gone, what="token expiry")
    late = RawAgent(core_server)
    ws = await late.connect()
    await ws.send_bytes(
        p.encode(
            p.Hello(
                protocol=p.PROTOCOL_VERSION,
                host=mt.HostFacts("h", "", "", "", "", "", 1, 1, ""),
                enroll_token=expired,
            )
        )
    )
    msg = await ws.receive(timeout=5)
    assert ws.close_code == p.CloseCode.UNAUTHORIZED
    assert "expired" in msg.extra


async def _refused(core: RunningCore, hello: p.Hello) -> str:
    """The close reason for a hello the core must refuse with 4401."""
    ws = await RawAgent(core).connect()
    await ws.send_bytes(p.encode(hello))
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == p.CloseCode.UNAUTHORIZED, msg
    return str(msg.extra)


async def test_an_agent_that_missed_its_welcome_gets_its_node_again(core_server: RunningCore) -> None:
    """An overloaded core can send the welcome after the agent gave up waiting for it. The agent
    retries with the same token and enroll id: it gets the node it already has, with a new
    credential, and spends no second use of the token; the credential it never saw is void."""
    token = await core_server.enroll_token(uses=1)
    mine = "ab" * 16
    first = RawAgent(core_server, "web-1")
    lost = await first.hello(token=token, enroll_id=mine)
    await first.close()  # as if the welcome never arrived: its credential is never used

    again = RawAgent(core_server, "web-1")
    welcome = await again.hello(token=token, enroll_id=mine)
    assert welcome.node_id == lost.node_id
    assert welcome.credential and welcome.credential != lost.credential
    assert list(core_server.core.nodes.nodes) == [lost.node_id]
    await again.close()
    facts = host_facts("web-1")
    reason = await _refused(
        core_server, p.Hello(protocol=p.PROTOCOL_VERSION, host=facts, credential=lost.credential)
    )
    assert "credential" in reason

    # Another agent with the same (spent) token and its own id enrolls nothing.
    other = p.Hello(protocol=p.PROTOCOL_VERSION, host=facts, enroll_token=token, enroll_id="cd" * 16)
    assert "used up" in await _refused(core_server, other)

    # Once a hello has used the credential, the agent has it: the same id is not taken up again.
    ok = RawAgent(core_server, "web-1")
    assert (await ok.hello(credential=welcome.credential)).node_id == lost.node_id
    await ok.close()
    retry = p.Hello(protocol=p.PROTOCOL_VERSION, host=facts, enroll_token=token, enroll_id=mine)
    assert "used up" in await _refused(core_server, retry)
    assert list(core_server.core.nodes.nodes) == [lost.node_id]

    status, body = await core_server.request(
        "GET", "/api/v1/audit?action=node.enroll", await core_server.admin_token()
    )
    assert status == 200, body
    detail = [e.get("detail") or {} for e in body["entries"] if e["action"] == "node.enroll"]
    assert sum("again" in d for d in detail) == 1, detail


async def test_an_enroll_id_is_hex_of_bounded_length(core_server: RunningCore) -> None:
    token = await core_server.enroll_token()
    ws = await RawAgent(core_server).connect()
    bad = p.Hello(protocol=p.PROTOCOL_VERSION, host=host_facts("h"), enroll_token=token, enroll_id="x" * 16)
    await ws.send_bytes(p.encode(bad))
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    assert "$.enroll_id" in msg.extra  # the precise reason, and no node made
    assert core_server.core.nodes.nodes == {}


async def test_bad_credential_closes_4401(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    ws = await agent.connect()
    await ws.send_bytes(
        p.encode(
            p.Hello(protocol=1, host=mt.HostFacts("h", "", "", "", "", "", 1, 1, ""), credential="smn_forged")
        )
    )
    await ws.receive(timeout=5)
    assert ws.close_code == p.CloseCode.UNAUTHORIZED


async def test_protocol_mismatch_closes_4426(core_server: RunningCore) -> None:
    ws = await RawAgent(core_server).connect()
    await ws.send_bytes(
        p.encode(p.Hello(protocol=99, host=mt.HostFacts("h", "", "", "", "", "", 1, 1, ""), credential="x"))
    )
    await ws.receive(timeout=5)
    assert ws.close_code == p.CloseCode.UNSUPPORTED_PROTOCOL


async def test_ack_only_after_commit(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    samples = agent.make(5)
    ack = await agent.send_samples(samples)
    assert (ack.from_seq, ack.upto_seq, ack.rejected) == (1, 5, [])
    # The ack arrived, so the rows must already be readable by another connection.
    assert await core_server.core.store.seqs(agent.node_id) == [1, 2, 3, 4, 5]  # type: ignore[arg-type]
    # Replays are idempotent.
    await agent.send_samples(samples)
    assert await core_server.core.store.seqs(agent.node_id) == [1, 2, 3, 4, 5]  # type: ignore[arg-type]


async def test_oversized_frame_closes_1009(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    assert agent.ws is not None
    await agent.ws.send_str(
        '{"type":"ping","ts":1,"pad":"' + "x" * (core_server.settings.max_frame_bytes + 10) + '"}'
    )
    msg = await agent.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert agent.ws.close_code == p.CloseCode.MESSAGE_TOO_BIG


async def test_bad_frames_get_errors_and_others_keep_streaming(core_server: RunningCore) -> None:
    good, bad = RawAgent(core_server, "good"), RawAgent(core_server, "bad")
    await good.hello(token=await core_server.enroll_token())
    await bad.hello(token=await core_server.enroll_token())
    assert bad.ws is not None

    await bad.ws.send_str('{"type":"reboot_everything"}')
    err = await bad.recv_type(p.Error)
    assert err.code == "unknown_type" and "reboot_everything" in err.message

    await bad.ws.send_str('{"type":"samples","samples":[{"seq":"one","ts":1,"metrics":{}}]}')
    err = await bad.recv_type(p.Error)
    assert err.code == "invalid_frame" and "$.samples[0].seq" in err.message

    await bad.ws.send_str("{broken")
    err = await bad.recv_type(p.Error)
    assert err.code == "malformed_json"

    # Nothing half-stored from the bad batch, and the good agent is unaffected.
    assert await core_server.core.store.seqs(bad.node_id) == []  # type: ignore[arg-type]
    ack = await good.send_samples(good.make(3))
    assert ack.upto_seq == 3
    # The bad agent is still served after its mistakes.
    ack = await bad.send_samples(bad.make(1))
    assert ack.upto_seq == 1


async def test_clock_skew_rejected_not_stored(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    now = time.time()
    future = agent.make(1, ts=now + 3600)
    past = agent.make(1, ts=now - 10 * 86400)
    fine = agent.make(1, ts=now)
    assert agent.ws is not None
    await agent.ws.send_bytes(p.encode(p.Samples(samples=future + past + fine)))
    err = await agent.recv_type(p.Error)
    assert err.code == "clock_skew"
    ack = await agent.recv_type(p.Ack)
    assert sorted(ack.rejected) == [1, 2]
    assert await core_server.core.store.seqs(agent.node_id) == [3]  # type: ignore[arg-type]


async def test_second_connection_replaces_first(core_server: RunningCore) -> None:
    first = RawAgent(core_server)
    welcome = await first.hello(token=await core_server.enroll_token())
    second = RawAgent(core_server)
    await second.hello(credential=welcome.credential)
    assert first.ws is not None
    msg = await first.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert first.ws.close_code == p.CloseCode.REPLACED
    node = core_server.core.nodes.get(welcome.node_id)
    assert node is not None and node.online
    ack = await second.send_samples(second.make(1))
    assert ack.upto_seq == 1


async def test_missed_heartbeats_mark_offline_and_push_status(core_server: RunningCore) -> None:
    client = RawClient(core_server)
    await client.connect(await core_server.admin_token())
    await client.subscribe()
    agent = RawAgent(core_server)
    welcome = await agent.hello(token=await core_server.enroll_token())
    online = await client.recv_type(p.NodeStatus, where=lambda f: f.node_id == welcome.node_id)
    assert online.online is True
    # Say nothing: after heartbeat_misses intervals the core gives up on the socket.
    offline = await client.recv_type(p.NodeStatus, timeout=10, where=lambda f: not f.online)
    assert offline.node_id == welcome.node_id
    assert agent.ws is not None
    # What the agent is told is the close frame. (aiohttp's client records 1006 instead when its
    # reply finds the socket already gone, which depends on how soon the test reads.)
    msg = await agent.ws.receive(timeout=5)
    assert (msg.type, msg.data, msg.extra) == (
        aiohttp.WSMsgType.CLOSE,
        p.CloseCode.TIMEOUT,
        "heartbeat timeout",
    )
    node = core_server.core.nodes.get(welcome.node_id)
    assert node is not None and node.last_seen is not None


async def test_deleting_node_revokes_credential(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    welcome = await agent.hello(token=await core_server.enroll_token())
    status, _ = await core_server.request(
        "DELETE", f"/api/v1/nodes/{welcome.node_id}", await core_server.admin_token()
    )
    assert status == 204
    assert agent.ws is not None
    msg = await agent.ws.receive(timeout=5)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, p.CloseCode.UNAUTHORIZED)
    again = RawAgent(core_server)
    ws = await again.connect()
    await ws.send_bytes(
        p.encode(
            p.Hello(
                protocol=1,
                host=mt.HostFacts("h", "", "", "", "", "", 1, 1, ""),
                credential=welcome.credential,
            )
        )
    )
    await ws.receive(timeout=5)
    assert ws.close_code == p.CloseCode.UNAUTHORIZED


async def test_agent_keeps_its_interval_unless_core_imposes_one(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "c", agent_interval=0.0, heartbeat_misses=3).start()
    try:
        agent = RawAgent(server)
        ws = await agent.connect()
        hello = p.Hello(
            protocol=p.PROTOCOL_VERSION,
            host=host_facts(),
            enroll_token=await server.enroll_token(),
            interval=2.0,
        )
        await ws.send_bytes(p.encode(hello))
        welcome = await agent.recv_type(p.Welcome)
        assert welcome.interval is None
        assert welcome.heartbeat_timeout == 2.0 * 3 + 1
        assert server.core.nodes.get(welcome.node_id).interval == 2.0  # type: ignore[union-attr]
    finally:
        await server.stop()


async def test_last_seen_of_online_nodes_is_persisted(core_server: RunningCore) -> None:
    agents = [RawAgent(core_server) for _ in range(3)]
    ids = [(await a.hello(token=await core_server.enroll_token())).node_id for a in agents]
    core = core_server.core
    for i, nid in enumerate(ids):
        st = core.nodes.get(nid)
        assert st is not None
        st.last_seen = 1_800_000_000.0 + i
    await core.nodes.persist_last_seen()
    rows = await core.db.fetchall(
        f"SELECT id, last_seen FROM nodes WHERE id IN ({','.join('?' * len(ids))}) ORDER BY id", ids
    )
    assert [tuple(r) for r in rows] == [(nid, 1_800_000_000.0 + i) for i, nid in enumerate(sorted(ids))]


async def test_hellos_and_goodbyes_do_not_wait_for_the_writer(core_server: RunningCore) -> None:
    """A fleet reconnecting at once while a long commit holds the write lock: every session goes on,
    and a goodbye is heard (a transaction per hello stalled each session behind the lock, and queued
    the commits behind them all); what the hellos and goodbyes changed reaches the nodes table in the
    next flush."""
    core = core_server.core
    agents = [RawAgent(core_server, f"host-{i}") for i in range(20)]
    for a in agents:
        await a.hello(token=await core_server.enroll_token())
        await a.close()
    await core.nodes.flush()
    async with core.db.transaction() as con:  # the writer, busy
        for a in agents:
            a.name = f"renamed-{a.name}"
            await a.hello()  # asserts the Welcome
        await agents[0].close()
        await wait_for(lambda: not core.nodes.nodes[agents[0].node_id].online, what="a goodbye")  # type: ignore[index]
        async with con.execute("SELECT count(*) FROM nodes WHERE host LIKE '%renamed-%'") as cur:
            row = await cur.fetchone()
        assert row is not None and row[0] == 0  # nothing written yet: the lock is ours
    await core.nodes.flush()
    rows = await core.db.fetchall("SELECT id, host, last_seen FROM nodes ORDER BY id")
    hosts = {r[0]: r[1] for r in rows}
    assert all(f'"renamed-host-{i}"' in hosts[a.node_id] for i, a in enumerate(agents))  # type: ignore[index]
    gone = core.nodes.nodes[agents[0].node_id]  # type: ignore[index]
    assert {r[0]: r[2] for r in rows}[gone.id] == gone.last_seen
    for a in agents[1:]:
        await a.close()


async def test_a_deleted_nodes_id_is_not_given_to_the_next_node(core_server: RunningCore) -> None:
    first = RawAgent(core_server, "old-host")
    w1 = await first.hello(token=await core_server.enroll_token())
    await first.close()
    admin = await core_server.admin_token()
    status, _ = await core_server.request("DELETE", f"/api/v1/nodes/{w1.node_id}", admin)
    assert status == 204
    second = RawAgent(core_server, "new-host")
    w2 = await second.hello(token=await core_server.enroll_token())
    assert w2.node_id > w1.node_id  # the new host does not inherit the old one's audit trail
    _, audit = await core_server.request("GET", f"/api/v1/audit?node={w2.node_id}", admin)
    assert [e["action"] for e in audit["entries"]] == ["node.enroll"]  # its own, nothing of the old host


async def test_the_core_says_why_a_node_went_offline(core_server: RunningCore) -> None:
    """The reason reaches clients live (node_status) and over REST (offline_reason)."""
    admin = await core_server.admin_token()
    client = RawClient(core_server)
    await client.connect(admin)
    await client.subscribe()

    async def offline(agent: RawAgent) -> tuple[p.NodeStatus, Any]:
        status = await client.recv_type(
            p.NodeStatus, where=lambda f: not f.online and f.node_id == agent.node_id
        )
        _, node = await core_server.request("GET", f"/api/v1/nodes/{agent.node_id}", admin)
        return status, node

    # A clean stop: the agent says goodbye as it does on SIGTERM.
    stopped = RawAgent(core_server, "stopped")
    await stopped.hello(token=await core_server.enroll_token())
    _, node = await core_server.request("GET", f"/api/v1/nodes/{stopped.node_id}", admin)
    assert node["online"] and node.get("offline_reason") is None
    assert stopped.ws is not None
    await stopped.ws.close(code=p.CloseCode.GOING_AWAY, message=b"agent stopping")
    status, node = await offline(stopped)
    assert status.reason == node["offline_reason"] == "agent stopped"

    # Silence: the watchdog's sweep.
    silent = RawAgent(core_server, "silent")
    await silent.hello(token=await core_server.enroll_token())
    await core_server.core.nodes.watchdog(lambda _interval: 0.0)
    status, node = await offline(silent)
    assert status.reason is not None and status.reason.startswith("heartbeat timeout: nothing heard for")
    assert node["offline_reason"] == status.reason

    # A clock far off: every sample rejected, then the link ends.
    skewed = RawAgent(core_server, "skewed")
    await skewed.hello(token=await core_server.enroll_token())
    ack = await skewed.send_samples(skewed.make(2, ts=time.time() + 86400))
    assert ack.rejected
    await skewed.close()
    status, node = await offline(skewed)
    assert "clock is off" in (status.reason or "") and node["offline_reason"] == status.reason
    await client.close()
