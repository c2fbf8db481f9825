"""What the alerting tests share: a real core, a real agent sending samples, rules over REST."""

from __future__ import annotations

import json
import time
from typing import Any

from devkit.cores import RunningCore
from tests.helpers.core import RawAgent

# The alerting tests' core: retries in tenths of a second, so a test sees several; a generous
# timeout for a loaded machine (a test about timeouts sets its own).
QUICK = {"alert_retry_initial": 0.05, "alert_retry_max": 0.2, "alert_delivery_timeout": 5.0}

RULE: dict[str, Any] = {
    "name": "cpu high",
    "metric": "cpu_pct",
    "op": ">",
    "threshold": 90,
    "targets": {"all": True},
}


class Rig:
    """A core, one agent and the admin's token; samples carry explicit, increasing timestamps."""

    def __init__(self, server: RunningCore) -> None:
        self.server = server
        self.agent = RawAgent(server, "web-1")
        self.token = ""
        self.t = time.time() - 200.0

    async def start(self) -> Rig:
        self.token = await self.server.admin_token()
        await self.agent.hello(token=await self.server.enroll_token())
        return self

    async def restarted(self) -> Rig:
        """Stop this core, start a new one on the same data dir; the same agent reconnects to it."""
        credential, folder = self.agent.credential, self.server.data_dir
        await self.agent.close()
        await self.server.stop()
        server = await RunningCore(folder).start()
        rig = Rig(server)
        rig.agent.credential = credential
        await rig.agent.hello()
        rig.token, rig.t = await server.admin_token(), self.t
        return rig

    @property
    def node_id(self) -> int:
        assert self.agent.node_id is not None
        return self.agent.node_id

    async def channel(self, name: str) -> int:
        return await self.server.core.db.insert(
            "INSERT INTO channels (name, kind, config, enabled, created_at) VALUES (?, ?, ?, 1, ?)",
            (name, "webhook", json.dumps({"url": "http://127.0.0.1:9/hook"}), time.time()),
        )

    async def rule(self, **over: Any) -> dict[str, Any]:
        status, body = await self.server.request(
            "POST", "/api/v1/alert-rules", self.token, json={**RULE, **over}
        )
        assert status == 201, body
        return dict(body)

    async def sample(self, cpu: float, at: float | None = None, **over: Any) -> float:
        """Send one sample `at` seconds after the previous one (1 s by default); returns its ts."""
        self.t += 1.0 if at is None else at
        await self.agent.send_samples(self.agent.make(1, ts=self.t, cpu=cpu, **over))
        await self.server.core.alerts.sync()
        return self.t

    async def alerts(self, **query: Any) -> list[dict[str, Any]]:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        status, body = await self.server.request("GET", f"/api/v1/alerts?{q}", self.token)
        assert status == 200, body
        return list(body["alerts"])

    async def detail(self, alert_id: int) -> dict[str, Any]:
        status, body = await self.server.request("GET", f"/api/v1/alerts/{alert_id}", self.token)
        assert status == 200, body
        return dict(body)

    async def deliveries(self) -> list[tuple[Any, ...]]:
        await self.server.core.alerts.sync()
        rows = await self.server.core.db.fetchall(
            "SELECT alert_id, channel_id, status, payload, state, attempts, created_at, next_attempt_at "
            "FROM alert_deliveries ORDER BY id"
        )
        return [tuple(r) for r in rows]

    async def tick(self, later: float) -> None:
        """The engine's sweep as it will run `later` seconds from now (repeats, grace, silences)."""
        self.server.core.alerts.tick(time.time() + later)
        await self.server.core.alerts.sync()
