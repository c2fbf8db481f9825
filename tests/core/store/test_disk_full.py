"""A full disk, made real by SQLite's own size limit: said once, health degraded, 503s, no sample lost, recovery by itself."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from servermanager.core.datadir import initial_admin_password
from servermanager.core.store.db import StorageFull
from tests.helpers.core import RawAgent


async def _fill(server: RunningCore) -> None:
    """Cap the database at its current size, then fill what is left: every write needing a page fails
    with SQLITE_FULL, exactly as on a full disk."""
    db = server.core.db
    async with db.transaction() as con:
        cur = await con.execute("PRAGMA page_count")
        (pages,) = await cur.fetchone()  # type: ignore[misc]
        await con.execute(f"PRAGMA max_page_count = {pages + 2}")
        await con.execute("CREATE TABLE IF NOT EXISTS filler (b BLOB)")
    for _ in range(10_000):
        try:
            await db.execute("INSERT INTO filler VALUES (randomblob(200))")
        except StorageFull:
            return
    raise AssertionError("the capped database never filled up")


async def _free(server: RunningCore) -> None:
    async with server.core.db.transaction() as con:
        await con.execute("PRAGMA max_page_count = 1073741823")


async def test_disk_full_is_said_once_refused_with_503_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await RunningCore(tmp_path / "c").start()
    try:
        admin = await server.admin_token()
        agent = RawAgent(server, "web")
        await agent.hello(token=await server.enroll_token())
        # Stamped apart from the big batch below: samples of one node at the same millisecond are one row.
        await agent.send_samples(agent.make(5, ts=time.time() - 10, step=1.0))
        await _fill(server)

        # A batch that cannot be stored is not acknowledged: the agent is told to back off (1013).
        big = agent.make(200, step=0.01)
        assert agent.ws is not None
        await agent.ws.send_bytes(p.encode(p.Samples(samples=big)))
        msg = await agent.recv_type(aiohttp.WSMessage)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, p.CloseCode.TRY_AGAIN_LATER), msg

        status, health = await server.request("GET", "/api/v1/health")
        assert status == 200 and health["status"] == "degraded"
        assert "disk full" in health["problems"][0]

        # Logins go on until the disk cannot take their tokens; then a precise 503, never a 500.
        password = initial_admin_password(server.data_dir)
        for _ in range(300):
            status, body = await server.request(
                "POST", "/api/v1/auth/login", json={"username": "admin", "password": password}
            )
            if status != 200:
                break
        assert status == 503 and body["error"]["code"] == "storage_full", body
        # Those 503s were not wrong passwords: no lockout.
        status, body = await server.request(
            "POST", "/api/v1/auth/login", json={"username": "admin", "password": password}
        )
        assert status == 503, body

        full_lines = [r for r in caplog.records if "disk full" in r.getMessage()]
        assert len(full_lines) == 1 and full_lines[0].levelno == logging.ERROR
        assert not [r for r in caplog.records if r.exc_info], "no tracebacks for a full disk"

        await _free(server)
        # The agent reconnects and resends what was never acknowledged; all of it is stored.
        await agent.hello()
        ack = await agent.send_samples(big)
        assert (ack.from_seq, ack.upto_seq, ack.rejected) == (big[0].seq, big[-1].seq, [])
        status, health = await server.request("GET", "/api/v1/health")
        assert health["status"] == "ok" and health["problems"] == []
        assert any("disk space is back" in r.getMessage() for r in caplog.records)
        status, body = await server.request(
            "POST", "/api/v1/auth/login", json={"username": "admin", "password": password}
        )
        assert status == 200
        await server.core.store.drain()
        rows = await server.core.db.fetchall(
            "SELECT seq FROM samples_head WHERE node_id = ? UNION SELECT seq FROM samples_raw WHERE node_id = ?",
            (agent.node_id, agent.node_id),
        )
        assert sorted(r[0] for r in rows) == list(range(1, 206))
        assert admin
    finally:
        await server.stop()


async def test_a_poisoned_batch_fails_alone_in_a_group_commit(tmp_path: Path) -> None:
    """One batch the database refuses must not fail the others that share its commit."""
    server = await RunningCore(tmp_path / "c").start()
    try:
        a, b = RawAgent(server, "a"), RawAgent(server, "b")
        await a.hello(token=await server.enroll_token())
        await b.hello(token=await server.enroll_token())
        store = server.core.store
        # A trigger plays the part of any row the database refuses (a value it cannot hold).
        async with server.core.db.transaction() as con:
            await con.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON samples_head WHEN NEW.cpu_pct = 66.6 "
                "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
            )
        good, bad = a.make(3, cpu=10.0), b.make(3, cpu=66.6)
        outcomes: dict[str, BaseException | None] = {}
        store.writer.submit(a.node_id or 0, good, lambda exc: outcomes.__setitem__("good", exc))
        store.writer.submit(b.node_id or 0, bad, lambda exc: outcomes.__setitem__("bad", exc))
        await store.drain()
        assert outcomes["good"] is None
        assert isinstance(outcomes["bad"], sqlite3.IntegrityError | sqlite3.OperationalError)
    finally:
        await server.stop()
