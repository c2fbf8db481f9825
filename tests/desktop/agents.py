"""Real agents for desktop tests, on the test's qasync loop beside the in-process core."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devkit.cores import RunningCore
from servermanager.agent.link.connection import ConnState
from servermanager.agent.main import Agent
from servermanager.agent.settings import ExecSettings
from tests.agent.fakes import fast_settings
from tests.desktop.conftest import Run, until


class Agents:
    """Real agents on the test's qasync loop, stopped (and their spools closed) at the end."""

    def __init__(self, run: Run, tmp_path: Path) -> None:
        self.run = run
        self.tmp_path = tmp_path
        self.running: list[tuple[Agent, asyncio.Task[None]]] = []

    async def start(self, core: RunningCore, name: str, ex: ExecSettings) -> int:
        ex.validate()
        agent = Agent(fast_settings(self.tmp_path / name, core.url, exec=ex), await core.enroll_token())
        self.running.append((agent, asyncio.get_running_loop().create_task(agent.run())))
        # The test core imposes a long sample interval: welcomed and online is what counts here.
        await until(lambda: agent.state == ConnState.STREAMING, f"agent {name} streaming")
        assert agent.node_id is not None
        node = core.core.nodes.get(agent.node_id)
        await until(lambda: node is not None and node.online, f"node {name} online")
        return agent.node_id

    def stop(self) -> None:
        for agent, _ in self.running:
            agent.stop()
        self.run(asyncio.gather(*(t for _, t in self.running), return_exceptions=True))
        for agent, _ in self.running:
            agent.close()
