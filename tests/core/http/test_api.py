"""The REST handlers against a real core: login and tokens, node edits with audit, and history."""

from __future__ import annotations

import time
from pathlib import Path

from devkit.cores import RunningCore
from servermanager.core.datadir import initial_admin_password
from tests.helpers.core import RawAgent
from tests.helpers.wait import wait_until


async def test_health_is_open(core_server: RunningCore) -> None:
    status, body = await core_server.request("GET", "/api/v1/health")
    assert status == 200
    assert body["status"] == "ok" and body["version"]


async def test_login_refresh_logout(core_server: RunningCore) -> None:
    await core_server.user_token("olga", "operator", password="s3cret-pass")
    status, pair = await core_server.request(
        "POST", "/api/v1/auth/login", json={"username": "olga", "password": "s3cret-pass"}
    )
    assert status == 200 and 0 < pair["expires_in"] <= core_server.settings.access_token_ttl
    status, me = await core_server.request("GET", "/api/v1/auth/me", pair["access_token"])
    assert (status, me["name"], me["role"]) == (200, "olga", "operator")
    # A refresh token is not an access token.
    status, _ = await core_server.request("GET", "/api/v1/auth/me", pair["refresh_token"])
    assert status == 401
    status, new = await core_server.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert status == 200 and new["access_token"] != pair["access_token"]
    status, _ = await core_server.request("GET", "/api/v1/auth/me", new["access_token"])
    assert status == 200
    status, _ = await core_server.request("POST", "/api/v1/auth/logout", new["access_token"])
    assert status == 204
    status, _ = await core_server.request("GET", "/api/v1/auth/me", new["access_token"])
    assert status == 401
    # Rotation: the old refresh token is spent (reuse: tests/core/http/test_auth_trust.py).
    status, _ = await core_server.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert status == 401


async def test_failed_logins_are_rate_limited(core_server: RunningCore) -> None:
    for _ in range(core_server.settings.login_max_failures):
        status, body = await core_server.request(
            "POST", "/api/v1/auth/login", json={"username": "admin", "password": "wrong"}
        )
        assert status == 401 and body["error"]["code"] == "bad_credentials"
    password = initial_admin_password(core_server.data_dir)
    status, body = await core_server.request(
        "POST", "/api/v1/auth/login", json={"username": "admin", "password": password}
    )
    assert status == 429
    assert body["error"]["code"] == "too_many_attempts"


async def test_access_token_expires(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "c", access_token_ttl=0.3).start()
    try:
        token = await server.admin_token()
        status, _ = await server.request("GET", "/api/v1/nodes", token)
        assert status == 200
        status, body = await wait_until(
            lambda: server.request("GET", "/api/v1/nodes", token), lambda r: r[0] != 200, what="token expiry"
        )
        assert status == 401 and "expired" in body["error"]["message"]
    finally:
        await server.stop()


async def test_api_token_for_scripts(core_server: RunningCore) -> None:
    viewer = await core_server.user_token("bot", "viewer")
    status, body = await core_server.request("POST", "/api/v1/tokens", viewer, json={"name": "grafana"})
    assert status == 201 and body["token"].startswith("smt_") and body["role"] == "viewer"
    status, _ = await core_server.request("GET", "/api/v1/nodes", body["token"])
    assert status == 200


async def test_node_edit_and_audit(core_server: RunningCore) -> None:
    agent = RawAgent(core_server, "db-1")
    welcome = await agent.hello(token=await core_server.enroll_token())
    operator = await core_server.user_token("ops", "operator")
    path = f"/api/v1/nodes/{welcome.node_id}"
    status, node = await core_server.request(
        "PATCH", path, operator, json={"name": "db-primary", "group": "databases", "tags": ["prod", "eu"]}
    )
    assert status == 200
    assert (node["name"], node["group"], node["tags"]) == ("db-primary", "databases", ["eu", "prod"])
    status, body = await core_server.request("PATCH", path, operator, json={"tags": ["bad tag!"]})
    assert status == 400 and "$.tags[0]" in body["error"]["message"]
    status, body = await core_server.request("PATCH", "/api/v1/nodes/abc", operator, json={})
    assert status == 400
    status, body = await core_server.request("GET", "/api/v1/nodes/999", operator)
    assert status == 404
    status, audit = await core_server.request("GET", "/api/v1/audit?action=node.update", operator)
    assert status == 200
    [entry] = audit["entries"]
    assert (entry["actor"], entry["target"], entry["result"]) == ("ops", f"node:{welcome.node_id}", "ok")
    assert entry["detail"]["name"] == "db-primary"


async def test_history_validation(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    welcome = await agent.hello(token=await core_server.enroll_token())
    token = await core_server.admin_token()
    base = f"/api/v1/nodes/{welcome.node_id}/metrics"
    status, body = await core_server.request("GET", base + "?resolution=5s", token)
    assert status == 400 and "resolution" in body["error"]["message"]
    status, body = await core_server.request("GET", base + "?fields=cpu_pct,bogus", token)
    assert status == 400 and "bogus" in body["error"]["message"]
    status, body = await core_server.request("GET", base + "?from=abc", token)
    assert status == 400 and "from" in body["error"]["message"]
    status, body = await core_server.request("GET", base + "?from=200&to=100", token)
    assert status == 400


async def test_history_raw_after_ack(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    welcome = await agent.hello(token=await core_server.enroll_token())
    now = time.time()
    await agent.send_samples(agent.make(10, ts=now - 10, cpu=42.0))
    token = await core_server.admin_token()
    status, body = await core_server.request(
        "GET",
        f"/api/v1/nodes/{welcome.node_id}/metrics?from={now - 60}&to={now}&fields=cpu_pct,mem_pct",
        token,
    )
    assert status == 200, body
    assert body["resolution"] == "raw"
    assert len(body["ts"]) == 10
    assert body["avg"]["cpu_pct"] == [42.0] * 10
    assert set(body["avg"]) == {"cpu_pct", "mem_pct"}
    status, node = await core_server.request("GET", f"/api/v1/nodes/{welcome.node_id}", token)
    assert node["latest"]["seq"] == 10 and node["online"] is True


async def test_history_points_caps_the_answer(core_server: RunningCore) -> None:
    agent = RawAgent(core_server)
    welcome = await agent.hello(token=await core_server.enroll_token())
    now = time.time()
    await agent.send_samples(agent.make(60, ts=now - 60, cpu=10.0))
    token = await core_server.admin_token()
    base = f"/api/v1/nodes/{welcome.node_id}/metrics?from={now - 61}&to={now}&resolution=raw&fields=cpu_pct"
    status, body = await core_server.request("GET", base + "&points=10", token)
    assert status == 200, body
    assert 1 <= len(body["ts"]) <= 10 and body["step"] >= 6.0
    assert body["avg"]["cpu_pct"] == [10.0] * len(body["ts"])
    assert body["min"]["cpu_pct"] == body["max"]["cpu_pct"] == [10.0] * len(body["ts"])
    status, body = await core_server.request("GET", base, token)
    assert len(body["ts"]) == 60 and body.get("step") is None
    status, body = await core_server.request("GET", base + "&points=5", token)
    assert status == 400 and "points" in body["error"]["message"]
