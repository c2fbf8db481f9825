"""Logs end to end: a real core and a real agent whose [logs] config allows one temp file; REST one-shot
reads, /ws/client follows (appends and rotation seen), refusals, audit, and cleanup."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from devkit.cores import RunningCore
from servermanager.agent.link.connection import ConnState
from servermanager.agent.main import Agent
from servermanager.agent.settings import load_agent_settings
from servermanager.common import protocol as p
from tests.agent.fakes import AgentRunner
from tests.helpers.core import RawClient
from tests.helpers.wait import wait_until


@dataclass
class Setup:
    core: RunningCore
    agent: Agent
    node_id: int
    log: Path  # the allowlisted file
    token: str  # an operator's


def write_config(tmp: Path, core_url: str, files: list[str], journal: bool = False) -> Path:
    cfg = tmp / "agent.toml"
    quoted = ", ".join(f'"{f}"' for f in files)
    cfg.write_text(
        f'core = "{core_url}"\nstate_dir = "{tmp / "agent"}"\ninterval = 1\n'
        f"[logs]\njournal = {'true' if journal else 'false'}\nfiles = [{quoted}]\n"
    )
    return cfg


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    core = await RunningCore(tmp_path / "core", agent_interval=0.0).start()
    runner = AgentRunner()
    try:
        logs = tmp_path / "logs"
        logs.mkdir()
        app_log = logs / "app.log"
        app_log.write_text("first line\nsecond line\nthird line\n")
        settings = load_agent_settings(config_file=write_config(tmp_path, core.url, [str(logs / "*.log")]))
        agent = Agent(settings, await core.enroll_token())
        runner.start(agent)
        async with asyncio.timeout(10):
            await agent.wait_state(ConnState.STREAMING)
        assert agent.node_id is not None
        yield Setup(core, agent, agent.node_id, app_log, await core.user_token("ops", "operator"))
    finally:
        await runner.close()
        await core.stop()


def logs_path(s: Setup, **params: str) -> str:
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    return f"/api/v1/nodes/{s.node_id}/logs?{query}"


async def test_sources_and_one_shot_read(setup: Setup) -> None:
    s = setup
    status, body = await s.core.request("GET", f"/api/v1/nodes/{s.node_id}/logs/sources", s.token)
    assert status == 200, body
    assert body["online"] is True
    assert body["sources"]["files"] == [str(s.log)]
    assert body["sources"]["journal"] is False
    assert "journal = false" in body["sources"]["note"]

    status, body = await s.core.request("GET", logs_path(s, source=str(s.log), lines="2"), s.token)
    assert status == 200, body
    assert [e[3] for e in body["entries"]] == ["second line", "third line"]
    assert body["truncated"] is False
    status, body = await s.core.request("GET", logs_path(s, source=str(s.log), match="first"), s.token)
    assert [e[3] for e in body["entries"]] == ["first line"]

    status, body = await s.core.request("GET", f"/api/v1/audit?action=logs.read&node={s.node_id}", s.token)
    assert status == 200
    rows = body["entries"]
    assert [r["actor"] for r in rows] == ["ops", "ops"]
    assert rows[-1]["detail"]["source"] == str(s.log) and rows[-1]["detail"]["lines"] == 2
    assert rows[-1]["result"] == "ok"


async def test_refusals_are_precise(setup: Setup, tmp_path: Path) -> None:
    s = setup
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2\n")
    os.symlink(secret, s.log.parent / "sneaky.log")  # matches the glob, leads out of it
    cases = [
        ({"source": str(secret)}, 403, "not in this agent's [logs] files allowlist"),
        ({"source": str(s.log.parent / ".." / "secret.txt")}, 400, "normalised"),
        ({"source": str(s.log.parent / "sneaky.log")}, 403, "outside the [logs] files allowlist"),
        ({"source": str(s.log), "unit": "nginx.service"}, 400, "filter the journal only"),
        ({"source": "journal"}, 403, "journal = false"),
        ({"source": str(s.log.parent / "missing.log")}, 404, "No such file"),
    ]
    for params, status_wanted, words in cases:
        status, body = await s.core.request("GET", logs_path(s, **params), s.token)
        assert status == status_wanted, (params, body)
        assert words in body["error"]["message"], (params, body)
    status, body = await s.core.request("GET", logs_path(s, priority="9"), s.token)
    assert status == 400 and body["error"]["code"] == "invalid_query"
    viewer = await s.core.user_token("watcher", "viewer")
    status, body = await s.core.request("GET", logs_path(s, source=str(s.log)), viewer)
    assert status == 403 and body["error"]["code"] == "forbidden"
    status, body = await s.core.request("GET", f"/api/v1/nodes/{s.node_id}/logs/sources", viewer)
    assert status == 403
    status, body = await s.core.request("GET", f"/api/v1/audit?action=logs.read&node={s.node_id}", s.token)
    assert status == 200
    results = [r["result"] for r in body["entries"]]
    assert sorted(results) == ["invalid", "invalid", "not_found", "refused", "refused", "refused"]


async def recv_lines(
    client: RawClient, rid: str, want: list[str], timeout: float = 10.0
) -> list[p.LogsChunk]:
    """Chunks of `rid` until every line of `want` arrived; fails if the follow ends first."""
    seen: list[str] = []
    chunks = []
    async with asyncio.timeout(timeout):
        while not all(w in seen for w in want):
            chunk = await client.recv_type(p.LogsChunk, timeout, where=lambda c: c.request_id == rid)
            assert chunk.error is None, chunk
            assert not chunk.eof, chunk
            chunks.append(chunk)
            seen += [e.message for e in chunk.entries]
    return chunks


async def test_follow_streams_appends_and_rotation_to_the_client_that_asked(setup: Setup) -> None:
    s = setup
    client = RawClient(s.core)
    other = RawClient(s.core)
    await client.connect(s.token)
    await client.subscribe()
    await other.connect(await s.core.admin_token())
    await other.subscribe()
    assert client.ws is not None
    query = p.LogQuery(source=str(s.log), lines=1)
    await client.ws.send_bytes(p.encode(p.LogsFollow(request_id="f1", node_id=s.node_id, query=query)))
    first = await recv_lines(client, "f1", ["third line"])
    assert first[0].node_id == s.node_id
    await wait_until(lambda: asyncio.sleep(0, s.agent.logs.following), lambda n: n == 1, what="agent follows")

    with s.log.open("a") as fh:
        fh.write("appended 1\n")
    await recv_lines(client, "f1", ["appended 1"])
    # Rotation: rename and recreate, as logrotate does without copytruncate.
    s.log.rename(s.log.with_suffix(".log.1"))
    with s.log.open("w") as fh:
        fh.write("after rotation\n")
    chunks = await recv_lines(client, "f1", ["after rotation"])
    assert any(c.note and "rotated" in c.note for c in chunks)
    # Truncation (copytruncate): shorter than what was read, so read again from the start.
    s.log.write_text("cut\n")
    chunks = await recv_lines(client, "f1", ["cut"])
    assert any(c.note and "truncated" in c.note for c in chunks)

    # Nobody else got a line of it.
    assert other.ws is not None
    with pytest.raises(TimeoutError):
        await other.recv_type(p.LogsChunk, timeout=0.5)

    await client.ws.send_bytes(p.encode(p.LogsStop(request_id="f1")))
    await wait_until(
        lambda: asyncio.sleep(0, s.agent.logs.following), lambda n: n == 0, what="follow stopped"
    )

    status, body = await s.core.request("GET", f"/api/v1/audit?action=logs.follow&node={s.node_id}", s.token)
    assert status == 200
    [row] = body["entries"]
    assert row["actor"] == "ops" and row["result"] == "ok"
    assert row["detail"] == {"source": str(s.log), "lines": 1, "follow": True}

    # A client that goes away takes its follows with it.
    await client.ws.send_bytes(p.encode(p.LogsFollow(request_id="f2", node_id=s.node_id, query=query)))
    await recv_lines(client, "f2", ["cut"])
    await client.close()
    await wait_until(lambda: asyncio.sleep(0, s.agent.logs.following), lambda n: n == 0, what="cleanup")
    assert s.core.core.logs.follows(client.ws) == []
    await other.close()


async def test_follow_refused_for_a_viewer_and_ends_when_the_node_goes(setup: Setup) -> None:
    s = setup
    viewer = RawClient(s.core)
    await viewer.connect(await s.core.user_token("watcher", "viewer"))
    assert viewer.ws is not None
    query = p.LogQuery(source=str(s.log))
    await viewer.ws.send_bytes(p.encode(p.LogsFollow(request_id="v", node_id=s.node_id, query=query)))
    chunk = await viewer.recv_type(p.LogsChunk)
    assert chunk.eof and chunk.code == "forbidden" and "operator" in (chunk.error or "")
    assert s.agent.logs.following == 0
    await viewer.close()

    client = RawClient(s.core)
    await client.connect(s.token)
    assert client.ws is not None
    await client.ws.send_bytes(
        p.encode(p.LogsFollow(request_id="x", node_id=s.node_id, query=p.LogQuery(source="/etc/passwd")))
    )
    chunk = await client.recv_type(p.LogsChunk)
    assert chunk.eof and chunk.code == "refused"
    await client.ws.send_bytes(p.encode(p.LogsFollow(request_id="y", node_id=s.node_id, query=query)))
    await recv_lines(client, "y", ["third line"])
    s.agent.stop()
    chunk = await client.recv_type(p.LogsChunk, where=lambda c: c.eof)
    assert chunk.request_id == "y" and chunk.code == "offline"
    await client.close()
