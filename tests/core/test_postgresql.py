"""The whole core on PostgreSQL: a real `servermanager core` process on a fresh database and a real agent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.helpers.pg import create_database, drop_database
from tests.helpers.procs import AgentProcess, CoreProcess
from tests.helpers.wait import wait_sync

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database's URL, dropped afterwards (sync tests: real daemons, urllib)."""
    url = asyncio.run(create_database())
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


@pytest.fixture
def procs() -> Iterator[list[CoreProcess | AgentProcess]]:
    running: list[CoreProcess | AgentProcess] = []
    yield running
    for p in running:
        p.stop()


def _pg(url: str, sql: str) -> Any:
    async def run() -> Any:
        con = await asyncpg.connect(url)
        try:
            return await con.fetchval(sql)
        finally:
            await con.close()

    return asyncio.run(run())


def test_a_core_on_postgresql_stores_answers_and_alerts(
    tmp_path: Path, pg_url: str, procs: list[CoreProcess | AgentProcess]
) -> None:
    core = CoreProcess(tmp_path / "core", SM_CORE_DATABASE=pg_url).start()
    procs.append(core)
    assert not (core.data_dir / "core.db").exists()  # nothing stored in the data dir's SQLite file
    token = core.admin_token()  # a user logs in: users and tokens live in PostgreSQL
    status, enroll = core.api("POST", "/api/v1/enroll-tokens", token, {"uses": 1, "ttl": 600})
    assert status == 201, enroll
    status, rule = core.api(
        "POST",
        "/api/v1/alert-rules",
        token,
        {"name": "always", "metric": "cpu_pct", "op": ">", "threshold": -1, "targets": {"all": True}},
    )
    assert status == 201, rule
    agent = AgentProcess(core.url, tmp_path / "agent", enroll["token"])
    procs.append(agent.start())

    def node() -> int | None:
        _, nodes = core.api("GET", "/api/v1/nodes", token)
        return nodes["nodes"][0]["id"] if nodes["nodes"] else None

    wait_sync(lambda: node() is not None, what="the agent enrolled")
    nid = node()

    def history() -> list[float]:
        now = time.time()
        status, body = core.api(
            "GET",
            f"/api/v1/nodes/{nid}/metrics?from={now - 600}&to={now + 5}&resolution=raw&fields=cpu_pct",
            token,
        )
        assert status == 200, body
        return list(body["ts"])

    wait_sync(lambda: len(history()) >= 3, what="three samples in history")
    assert (
        _pg(pg_url, "SELECT count(*) FROM samples_head") + _pg(pg_url, "SELECT count(*) FROM samples_raw")
        >= 3
    )

    def firing() -> bool:
        _, alerts = core.api("GET", "/api/v1/alerts", token)
        return any(a["rule"] == "always" and a["state"] == "firing" for a in alerts["alerts"])

    wait_sync(firing, what="the rule's alert firing")
    assert _pg(pg_url, "SELECT count(*) FROM audit WHERE action LIKE 'rule%'") >= 1

    # A clean stop settles the head into the day's partition of samples_raw; a new core on the
    # same database answers with everything stored before.
    before = history()
    assert core.terminate() == 0, core.log()
    assert _pg(pg_url, "SELECT count(*) FROM samples_head") == 0
    assert _pg(pg_url, f"SELECT count(*) FROM samples_raw_d{int(before[-1] * 1000) // 86_400_000}") >= len(
        before
    )
    again = CoreProcess(tmp_path / "core2", SM_CORE_DATABASE=pg_url).start()
    procs.append(again)
    status, body = again.api("POST", "/api/v1/auth/login", body={"username": "admin", "password": "x" * 12})
    assert status == 401, body  # the same users: the first core's admin, not a new one
    assert not (again.data_dir / "initial-admin-password").exists()


def test_admin_commands_use_the_configured_postgresql(tmp_path: Path, pg_url: str) -> None:
    import os

    from devkit.ports import free_port
    from tests.helpers.procs import cli

    env = {**os.environ, "SM_CORE_DATABASE": pg_url}
    made = cli(
        "admin",
        "create-user",
        "bob",
        "--role",
        "viewer",
        "--data-dir",
        str(tmp_path),
        stdin="password123\n",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    listed = cli("admin", "users", "--data-dir", str(tmp_path), env=env)
    assert "bob" in listed.stdout and not (tmp_path / "servermanager.db").exists()
    assert _pg(pg_url, "SELECT count(*) FROM users WHERE name = 'bob'") == 1
    down = f"postgresql://postgres:pw5@127.0.0.1:{free_port()}/x"
    out = cli("admin", "users", "--data-dir", str(tmp_path), env={**env, "SM_CORE_DATABASE": down})
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "unreachable" in out.stderr, out.stderr
    assert "pw5" not in out.stderr
    # Backup and restore are the SQLite file's: refused in one line rather than copying a stale file.
    for verb in ("backup", "restore"):
        out = cli("admin", verb, str(tmp_path / "b.db"), "--data-dir", str(tmp_path), env=env)
        assert out.returncode == 1 and "pg_dump" in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_two_cores_on_one_database_share_users_and_an_agent_moves_over_without_a_gap(
    tmp_path: Path, pg_url: str, procs: list[CoreProcess | AgentProcess]
) -> None:
    """Two core processes on one PostgreSQL database (no bus between them: live events and routing are
    the Redis bus's, issue 16 item 2): a user made at A signs in at B, and when A is killed its agent,
    pointed at B, goes on from its spool with no seq missing."""
    a = CoreProcess(tmp_path / "a", SM_CORE_DATABASE=pg_url).start()
    procs.append(a)
    b = CoreProcess(tmp_path / "b", SM_CORE_DATABASE=pg_url).start()
    procs.append(b)
    token = a.admin_token()
    status, _ = a.api(
        "POST", "/api/v1/users", token, {"name": "olga", "password": "password123", "role": "viewer"}
    )
    assert status == 201
    status, body = b.api("POST", "/api/v1/auth/login", body={"username": "olga", "password": "password123"})
    assert status == 200, body
    olga = body["access_token"]

    status, enroll = a.api("POST", "/api/v1/enroll-tokens", token, {"uses": 1, "ttl": 600})
    assert status == 201
    agent = AgentProcess(a.url, tmp_path / "agent", enroll["token"])
    procs.append(agent.start())
    wait_sync(lambda: _pg(pg_url, "SELECT count(*) FROM samples_head") >= 3, what="samples through core A")
    a.kill9()
    agent.stop()
    # The same agent (its credential and spool) now dials core B, as behind a load balancer.
    moved = AgentProcess(b.url, tmp_path / "agent")
    procs.append(moved.start())
    nid = _pg(pg_url, "SELECT id FROM nodes")

    def at_b() -> list[float]:
        now = time.time()
        status, h = b.api(
            "GET",
            f"/api/v1/nodes/{nid}/metrics?from={now - 600}&to={now + 5}&resolution=raw&fields=cpu_pct",
            olga,
        )
        return list(h["ts"]) if status == 200 else []

    before = _pg(pg_url, "SELECT max(seq) FROM samples_head")
    wait_sync(lambda: len(at_b()) >= before + 3, what="core B storing the moved agent's samples")
    seqs = _pg(
        pg_url,
        "SELECT array_agg(seq ORDER BY seq) FROM (SELECT seq FROM samples_head UNION SELECT seq FROM samples_raw) s",
    )
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # no gap and no duplicate across the move
