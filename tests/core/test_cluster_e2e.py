"""The cluster end to end: two real core processes on one PostgreSQL database and one Redis behind the
loopback balancer, a real agent process with its spool, a /ws/client on each core; then kill -9 of the
core holding the agent, and the database checked for a gap or a duplicate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from devkit.tcpproxy import TcpProxy
from servermanager.common import protocol as p
from tests.helpers.cluster import REDIS, drop_keys, prefix
from tests.helpers.pg import fresh_database
from tests.helpers.procs import AgentProcess, CoreProcess
from tests.helpers.wait import wait_until

pytestmark = pytest.mark.slow

_dec = p.decoder(p.CoreToClient)


class Client:
    """A /ws/client of one core process: auth, subscribe all, then its frames one at a time."""

    def __init__(self, http: aiohttp.ClientSession, core: CoreProcess) -> None:
        self.http, self.core = http, core
        self.frames: list[Any] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def start(self, token: str) -> Client:
        self.ws = await self.http.ws_connect(self.core.url.replace("http", "ws") + "/ws/client")
        await self.ws.send_bytes(p.encode(p.Auth(token=token)))
        await self.ws.send_bytes(p.encode(p.Subscribe(all=True)))
        return self

    async def wait(self, cls: type, where: Any = lambda f: True, timeout: float = 20.0) -> Any:
        """The first frame of `cls` that `where` accepts, among those seen or still to come."""
        assert self.ws is not None
        deadline = time.monotonic() + timeout
        while True:
            for f in self.frames:
                if isinstance(f, cls) and where(f):
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {cls.__name__} at {self.core.url} in {timeout}s")
            msg = await self.ws.receive(timeout=left)
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                raise AssertionError(f"the client socket of {self.core.url} ended: {msg}")
            self.frames.extend(p.decode_all(_dec, msg.data))


async def _pg(url: str, sql: str) -> Any:
    con = await asyncpg.connect(url)
    try:
        return await con.fetchval(sql)
    finally:
        await con.close()


def _api(core: CoreProcess, method: str, path: str, token: str, body: Any = None) -> Any:
    return asyncio.to_thread(core.api, method, path, token, body)


async def test_two_cores_on_postgresql_and_redis_as_one_fleet(tmp_path: Path) -> None:
    pfx = prefix()
    async with fresh_database() as url:
        env = {
            "SM_CORE_DATABASE": url,
            "SM_CORE_BUS": REDIS,
            "SM_CORE_BUS_PREFIX": pfx,
            "SM_CORE_BUS_TTL": "2",
        }
        a = CoreProcess(tmp_path / "a", SM_CORE_CORE_ID="a", **env).start()
        b = CoreProcess(tmp_path / "b", SM_CORE_CORE_ID="b", **env).start()
        cores = {"a": a, "b": b}
        lb = await TcpProxy([("127.0.0.1", a.port), ("127.0.0.1", b.port)]).start()
        agent: AgentProcess | None = None
        try:
            async with aiohttp.ClientSession() as http:
                token = await asyncio.to_thread(a.admin_token)  # valid at B too: one database
                status, rule = await _api(
                    a,
                    "POST",
                    "/api/v1/alert-rules",
                    token,
                    {
                        "name": "always",
                        "metric": "cpu_pct",
                        "op": ">",
                        "threshold": -1,
                        "targets": {"all": True},
                    },
                )
                assert status == 201, rule
                ca, cb = await Client(http, a).start(token), await Client(http, b).start(token)

                # Enrolled through A (the balancer's first live backend), with remote commands on.
                status, enroll = await _api(
                    a, "POST", "/api/v1/enroll-tokens", token, {"uses": 1, "ttl": 600}
                )
                assert status == 201, enroll
                agent = AgentProcess(f"http://127.0.0.1:{lb.port}", tmp_path / "agent", enroll["token"])
                agent.env.update(SM_AGENT_EXEC_ENABLED="true", SM_AGENT_EXEC_ALLOW="echo *")
                agent.start()
                live = await cb.wait(p.SampleEvent)  # an agent held by A, streaming live at B
                nid = live.node_id
                await ca.wait(p.SampleEvent, lambda e: e.node_id == nid)

                # History identical from both cores.
                path = f"/api/v1/nodes/{nid}/metrics?from=0&to=9999999999&resolution=raw&fields=cpu_pct"
                await wait_until(
                    lambda: _api(a, "GET", path, token), lambda r: len(r[1]["ts"]) >= 3, what="3 stored"
                )
                _, at_a = await _api(a, "GET", path, token)
                _, at_b = await _api(b, "GET", path, token)
                n = min(len(at_a["ts"]), len(at_b["ts"]))
                assert n >= 3 and at_a["ts"][:n] == at_b["ts"][:n]

                # A command asked at B runs on the agent that A holds; B's client sees its result.
                status, cmd = await _api(
                    b,
                    "POST",
                    "/api/v1/commands",
                    token,
                    {"targets": {"nodes": [nid]}, "command": ["echo", "hi"]},
                )
                assert status == 202, cmd
                result = await cb.wait(p.CommandResult, lambda r: r.command_id == cmd["id"])
                assert result.status == "ok" and result.exit_code == 0
                _, done = await wait_until(
                    lambda: _api(b, "GET", f"/api/v1/commands/{cmd['id']}", token),
                    lambda r: r[1]["status"] != "running",
                    what="the command finished",
                )
                assert done["runs"][0]["stdout"] == "hi\n", done

                # The rule made at A fires once, seen by both clients with the same id.
                fired = await ca.wait(p.AlertEvent, lambda e: e.alert.state == "firing")
                again = await cb.wait(p.AlertEvent, lambda e: e.alert.state == "firing")
                assert fired.alert.id == again.alert.id
                _, alerts = await _api(b, "GET", "/api/v1/alerts", token)
                assert [x["id"] for x in alerts["alerts"]] == [fired.alert.id]

                # kill -9 of the core holding the agent: it comes back through the balancer at B.
                owner = await _owner(pfx, nid)
                killed, other = (cores[owner], cores["b" if owner == "a" else "a"])
                oc = cb if other is b else ca
                before = await _pg(url, "SELECT count(*) FROM samples_head")
                killed.kill9()
                killed_at = time.time()
                await oc.wait(
                    p.SampleEvent, lambda e: e.node_id == nid and e.sample.ts > killed_at + 1, timeout=30
                )
                # Backfilled: the seqs stored form one run from 1, none missing, none twice.
                await wait_until(
                    lambda: _pg(url, "SELECT count(*) FROM samples_head"),
                    lambda c: c >= before + 3,
                    what="more",
                )
                seqs = await _pg(
                    url,
                    "SELECT array_agg(seq ORDER BY seq) FROM "
                    "(SELECT seq FROM samples_head UNION ALL SELECT seq FROM samples_raw) s",
                )
                assert seqs == list(range(1, len(seqs) + 1)), seqs
                # Still one alert, continued by the core that holds the agent now.
                _, alerts = await _api(other, "GET", "/api/v1/alerts", token)
                assert [(x["id"], x["state"]) for x in alerts["alerts"]] == [(fired.alert.id, "firing")]
        finally:
            if agent is not None:
                agent.stop()
            a.stop()
            b.stop()
            await lb.stop()
            await drop_keys(pfx)


async def _owner(pfx: str, node_id: int) -> str:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(REDIS)
    try:
        raw = await r.get(f"{pfx}:owner:{node_id}")
    finally:
        await r.aclose()
    assert isinstance(raw, bytes), raw
    return raw.decode()
