"""A core killed under a live agent: the agent comes back through the load balancer to another core."""

from __future__ import annotations

import time
from pathlib import Path

from devkit.cores import RunningCore
from devkit.tcpproxy import TcpProxy
from servermanager.agent.credentials import CredentialStore
from servermanager.common import protocol as p
from servermanager.core.nodes import RemoteLink
from tests.helpers.cluster import REDIS, copy_data_dir, drop_keys, prefix
from tests.helpers.core import RawClient
from tests.helpers.procs import AgentProcess, CoreProcess
from tests.helpers.wait import wait_for, wait_until


async def test_kill_9_of_a_core_moves_its_agent_to_the_other(tmp_path: Path) -> None:
    pfx = prefix()
    state = tmp_path / "agent-state"
    state.mkdir(mode=0o700)
    # The data dir both cores start from, with a real agent enrolled (see tests/helpers/cluster.py).
    seed = await RunningCore(tmp_path / "seed").start()
    enrol = AgentProcess(seed.url, state, token=await seed.enroll_token()).start()
    try:
        # The agent's stored credential, not the core's "online": the core marks the node online
        # before its welcome reaches the agent, and CI once stopped the agent in that window.
        await wait_for(lambda: CredentialStore(state).load() is not None, what="enrolment")
        assert enrol.terminate() == 0, enrol.log()
    finally:
        enrol.stop()
        await seed.stop()
    [node_id] = list(seed.core.nodes.nodes)

    b = CoreProcess(
        copy_data_dir(tmp_path, "core1"),
        SM_CORE_BUS=REDIS,
        SM_CORE_BUS_PREFIX=pfx,
        SM_CORE_BUS_TTL="2",
        SM_CORE_CORE_ID="core1",
    ).start()
    a = await RunningCore(
        copy_data_dir(tmp_path, "core0"), bus=REDIS, bus_prefix=pfx, bus_ttl=2.0, core_id="core0"
    ).start()
    # The load balancer: B first while it lives, then A.
    lb = await TcpProxy([("127.0.0.1", b.port), ("127.0.0.1", a.port)]).start()
    agent = AgentProcess(f"http://127.0.0.1:{lb.port}", state).start()
    try:
        st = a.core.nodes.nodes[node_id]
        try:
            # Generous: CI once missed 20 s here on a loaded machine, with no log to say why.
            await wait_for(
                lambda: isinstance(st.link, RemoteLink), timeout=60, what="the agent on B, seen from A"
            )
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; A: link={st.link!r} reason={st.offline_reason!r}\n"
                f"--- agent log:\n{agent.log()}\n--- core B log:\n{b.log()}"
            ) from None
        client = RawClient(a)
        await client.connect(await a.admin_token())
        await client.subscribe()
        await client.recv_type(p.SampleEvent, timeout=10)  # streaming through B, pushed by A

        b.kill9()
        killed_at = time.time()
        await wait_for(lambda: st.here, timeout=20, what="the agent to reconnect to A")
        event = await client.recv_type(p.SampleEvent, timeout=10, where=lambda e: e.sample.ts > killed_at)
        assert event.node_id == node_id
        # Stored by A: committed there before the agent was acknowledged.
        await wait_until(
            lambda: a.core.store.latest(node_id),
            lambda s: s is not None and s.ts > killed_at,
            what="A to store the agent's samples",
        )
        await client.close()
    finally:
        agent.stop()
        b.stop()
        await a.stop()
        await lb.stop()
        await drop_keys(pfx)
