"""The real agent against a real in-process core: enrollment, streaming, outage backfill, revocation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.cores import RunningCore
from servermanager.agent.link.connection import AuthFailedError, ConnState
from servermanager.agent.main import Agent
from tests.agent.fakes import AgentRunner, fast_settings
from tests.helpers.wait import wait_until


async def stored(server: RunningCore, node_id: int) -> list[int]:
    return await server.core.store.seqs(node_id)


async def test_enrolls_streams_and_reuses_credential(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    state = tmp_path / "agent"
    agent = Agent(fast_settings(state, real_core.url), await real_core.enroll_token())
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.STREAMING)
        await agent.wait_until(lambda: agent.stats.samples_acked >= 5)
    node_id = agent.node_id
    assert node_id is not None
    seqs = await stored(real_core, node_id)
    assert seqs[:5] == [1, 2, 3, 4, 5]
    assert (state / "credential").stat().st_mode & 0o077 == 0
    node = real_core.core.nodes.get(node_id)
    assert node is not None and node.online and node.host is not None
    await runner.stop(agent)

    # Restart: no token this time; the stored credential gets it the same node, and seq carries on.
    again = Agent(fast_settings(state, real_core.url))
    runner.start(again)
    async with asyncio.timeout(10):
        await again.wait_until(lambda: again.stats.samples_acked >= 3)
    assert again.node_id == node_id
    seqs = await stored(real_core, node_id)
    assert seqs == list(range(1, len(seqs) + 1))


async def test_backfills_after_core_outage(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    agent = Agent(fast_settings(tmp_path / "agent", real_core.url), await real_core.enroll_token())
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.stats.samples_acked >= 3)
    node_id = agent.node_id
    assert node_id is not None
    await real_core.stop()
    async with asyncio.timeout(10):
        await agent.wait_until(lambda: agent.spool.count() >= 20)
    # The same data dir and port: as if the core had been restarted.
    revived = await RunningCore(real_core.data_dir, port=real_core.port, agent_interval=0.0).start()
    try:
        async with asyncio.timeout(20):
            await agent.wait_state(ConnState.STREAMING)
        last = agent.spool.last_seq
        seqs = await wait_until(
            lambda: stored(revived, node_id), lambda s: len(s) >= last, timeout=20, what="backfill"
        )
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        await runner.close()
        await revived.stop()


async def test_deleted_node_is_refused(tmp_path: Path, real_core: RunningCore, runner: AgentRunner) -> None:
    agent = Agent(fast_settings(tmp_path / "agent", real_core.url), await real_core.enroll_token())
    task = runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.STREAMING)
    status, _ = await real_core.request(
        "DELETE", f"/api/v1/nodes/{agent.node_id}", await real_core.admin_token()
    )
    assert status == 204
    with pytest.raises(AuthFailedError):
        async with asyncio.timeout(10):
            await task
    assert agent.state is ConnState.AUTH_FAILED


async def test_used_up_enroll_token_is_refused(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner
) -> None:
    token = await real_core.enroll_token(uses=1)
    first = Agent(fast_settings(tmp_path / "a1", real_core.url), token)
    runner.start(first)
    async with asyncio.timeout(10):
        await first.wait_state(ConnState.STREAMING)
    second = Agent(fast_settings(tmp_path / "a2", real_core.url), token)
    task = runner.start(second)
    with pytest.raises(AuthFailedError):
        async with asyncio.timeout(10):
            await task
    assert not (tmp_path / "a2" / "credential").exists()


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "x = 0\nwhile True: x += 1  # sm-e2e-burner"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


async def test_cpu_burner_reaches_the_processes_endpoint(
    tmp_path: Path, real_core: RunningCore, runner: AgentRunner, burner: subprocess.Popen[bytes]
) -> None:
    settings = fast_settings(tmp_path / "agent", real_core.url, interval=0.2)
    settings.processes.cmdline, settings.processes.interval = True, 0.0  # a list with every sample
    agent = Agent(settings, await real_core.enroll_token())
    runner.start(agent)
    async with asyncio.timeout(10):
        await agent.wait_state(ConnState.STREAMING)
    admin = await real_core.admin_token()
    viewer = await real_core.user_token("vic", "viewer")
    path = f"/api/v1/nodes/{agent.node_id}/processes"

    async def latest() -> dict[str, Any]:
        status, body = await real_core.request("GET", path, admin)
        assert status == 200, body
        return dict(body)

    def burner_first(body: dict[str, Any]) -> bool:
        procs = [x for x in body["processes"] if x.get("cpu_pct")]
        return bool(procs) and max(procs, key=lambda x: x["cpu_pct"])["pid"] == burner.pid

    then = await wait_until(latest, burner_first, timeout=20, what="the burner on top by CPU")
    busy = max(then["processes"], key=lambda x: x.get("cpu_pct") or 0)
    assert "sm-e2e-burner" in busy["cmd"]
    burner.kill()
    burner.wait()
    # Later snapshots no longer list it; the moment of `then` still answers with that snapshot.
    await wait_until(
        latest, lambda b: all(x["pid"] != burner.pid for x in b["processes"]), what="the burner gone"
    )
    status, past = await real_core.request("GET", path, viewer, params={"at": str(then["ts"])})
    assert status == 200 and past["ts"] == then["ts"]
    assert [x["pid"] for x in past["processes"]] == [x["pid"] for x in then["processes"]]
    assert all("cmd" not in x for x in past["processes"])  # a viewer: names, not command lines
    await runner.stop(agent)
