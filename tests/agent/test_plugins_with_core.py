"""A real agent's [[custom]] and [[check]] entries through a real core: REST series and history, an alert rule on a check."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from devkit.cores import RunningCore
from servermanager.agent.link.connection import ConnState
from servermanager.agent.main import Agent
from servermanager.agent.plugins.config import CheckSettings, CustomSettings
from tests.agent.fakes import AgentRunner, fast_settings
from tests.helpers.wait import wait_until


@pytest.fixture
def listener() -> Any:
    """A real TCP server on loopback (the kernel accepts; nothing needs to answer)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield s
    finally:
        s.close()


async def test_custom_series_and_check_alert_end_to_end(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    settings = fast_settings(
        tmp_path / "agent",
        real_core.url,
        interval=0.2,
        custom=[
            CustomSettings(
                name="queue", command=["/bin/sh", "-c", "echo queue_depth 42"], interval=1, timeout=2
            )
        ],
        check=[CheckSettings(name="db", type="tcp", target=f"127.0.0.1:{port}", interval=1, timeout=1)],
    )
    agent = Agent(settings, await real_core.enroll_token())
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.STREAMING)
    nid = agent.node_id
    viewer = await real_core.user_token("vic", "viewer")
    admin = await real_core.admin_token()

    async def listed() -> dict[str, Any]:
        status, body = await real_core.request("GET", f"/api/v1/nodes/{nid}/series", viewer)
        assert status == 200, body
        return dict(body)

    def has_all(body: dict[str, Any]) -> bool:
        names = {s["selector"]: s.get("last_value") for s in body["series"]}
        return (
            names.get("queue_depth") == 42
            and names.get('check_up{check="db"}') == 1
            and 'plugin_up{plugin="queue"}' in names
            and {p["name"] for p in body["plugins"]} == {"queue", "db"}
        )

    body = await wait_until(listed, has_all, timeout=20, what="the agent's series listed")
    assert all(p["ok"] for p in body["plugins"])

    # History, in the metrics history's shape, by selector and by name + labels.
    status, hist = await real_core.request(
        "GET",
        f"/api/v1/nodes/{nid}/series/history",
        viewer,
        params={"series": "queue_depth", "resolution": "raw"},
    )
    assert status == 200, hist
    assert hist["fields"] == ["queue_depth"] and hist["avg"]["queue_depth"][-1] == 42 and hist["ts"]
    status, hist = await real_core.request(
        "GET",
        f"/api/v1/nodes/{nid}/series/history",
        viewer,
        params={"name": "check_up", "labels": '{"check": "db"}'},
    )
    assert status == 200 and hist["avg"]['check_up{check="db"}'][-1] == 1
    status, err = await real_core.request(
        "GET", f"/api/v1/nodes/{nid}/series/history", viewer, params={"series": "nope{"}
    )
    assert status == 400 and "series selector" in err["error"]["message"]
    status, err = await real_core.request(
        "GET", f"/api/v1/nodes/{nid}/series/history", viewer, params={"series": "missing_one"}
    )
    assert status == 404

    # A rule on the check: fires once the server behind it goes away.
    status, rule = await real_core.request(
        "POST",
        "/api/v1/alert-rules",
        admin,
        json={
            "name": "db down",
            "metric": 'series:check_up{ check = "db" }',
            "op": "<",
            "threshold": 1,
            "targets": {"nodes": [nid]},
        },
    )
    assert status == 201, rule
    assert rule["metric"] == 'series:check_up{check="db"}'
    status, bad = await real_core.request(
        "POST",
        "/api/v1/alert-rules",
        admin,
        json={"name": "bad", "metric": "series:9bad", "targets": {"all": True}},
    )
    assert status == 400 and "series selector" in bad["error"]["message"]

    async def firing() -> list[Any]:
        status, body = await real_core.request("GET", "/api/v1/alerts", admin, params={"state": "firing"})
        assert status == 200, body
        return list(body["alerts"] if isinstance(body, dict) else body)

    assert await firing() == []
    listener.close()
    alerts = await wait_until(firing, lambda a: len(a) == 1, timeout=20, what="the db check's alert firing")
    assert alerts[0]["rule"] == "db down" and alerts[0]["value"] == 0
    body = await listed()
    db = next(p for p in body["plugins"] if p["name"] == "db")
    assert not db["ok"] and "cannot connect" in db["error"]
    await runner.stop(agent)
