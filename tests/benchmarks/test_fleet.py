"""The fleet simulator: pooled readings spliced into real, decodable samples frames; unacknowledged
samples sent again after a reconnect."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from benchmarks.fleet import Fleet, SimAgent
from devkit.cores import RunningCore
from devkit.tcpproxy import TcpProxy
from servermanager.common import protocol as p
from tests.helpers.wait import wait_for


def _agent(pool: int) -> SimAgent:
    fleet = Fleet("http://127.0.0.1:1", "token", 2, interval=1.0, seed=3, pool=pool)
    return fleet.agents[0]


def test_pooled_frames_decode_and_replay_the_pool_in_order() -> None:
    agent = _agent(pool=3)
    dec = p.decoder(p.AgentToCore)
    frames = [p.decode(dec, agent._frame(seq, 1_800_000_000.25 + seq)) for seq in range(1, 8)]
    assert all(isinstance(f, p.Samples) and len(f.samples) == 1 for f in frames)
    samples = [f.samples[0] for f in frames]
    assert [s.seq for s in samples] == list(range(1, 8))
    assert [s.ts for s in samples] == [1_800_000_000.25 + seq for seq in range(1, 8)]
    readings = [msgspec.json.encode(s.metrics) for s in samples]
    assert len(set(readings[:3])) == 3  # a random walk, not one reading
    assert all(readings[i] == readings[i + 3] for i in range(4))  # then the pool again, in order


def test_without_a_pool_every_frame_is_a_fresh_reading() -> None:
    agent = _agent(pool=0)
    dec = p.decoder(p.AgentToCore)
    metrics = [p.decode(dec, agent._frame(seq, 1_800_000_000.0)).samples[0].metrics for seq in range(1, 5)]
    assert len({msgspec.json.encode(m) for m in metrics}) == 4


def test_a_top_list_in_every_sample_decodes_as_the_agents_would_send_it() -> None:
    fleet = Fleet("http://127.0.0.1:1", "token", 2, interval=1.0, seed=3, pool=2, procs_top=15)
    dec = p.decoder(p.AgentToCore)
    frames = [p.decode(dec, fleet.agents[0]._frame(seq, 1_800_000_000.0 + seq)) for seq in (1, 2)]
    for frame in frames:
        assert isinstance(frame, p.Samples)
        procs = frame.samples[0].metrics.procs_top
        assert len(procs) == 15 and len({pr.pid for pr in procs}) == 15
        assert all(pr.cpu_pct is not None and pr.rss > 0 and pr.user for pr in procs)
    assert _agent(pool=2)._frame(1, 1_800_000_000.0).count(b"postgres") == 0  # none unless asked


async def test_unacknowledged_samples_are_sent_again_after_a_reconnect(tmp_path: Path) -> None:
    """As the real agent's spool does: a sample the core never acknowledged (here: lost in a cut
    link) goes again on the next connection, so the core stores every seq once."""
    core = await RunningCore(tmp_path / "core").start()
    link = await TcpProxy([("127.0.0.1", core.port)]).start()
    fleet = Fleet(
        f"http://127.0.0.1:{link.port}",
        await core.enroll_token(),
        1,
        interval=0.2,
        backoff_initial=0.05,
        backoff_max=0.1,
        seed=1,
    )
    try:
        await fleet.start()
        agent = fleet.agents[0]
        await wait_for(lambda: agent.acked >= 3, what="a few samples acknowledged")
        # A send lost with the link: the agent counted it, the core never saw it.
        agent.seq += 1
        agent.unacked[agent.seq] = time.time()
        lost = agent.seq
        link.cut()
        link.restore()
        await wait_for(lambda: fleet.samples_resent >= 1 and lost not in agent.unacked, what="the resend")
        assert agent.node_id is not None
        seqs = await core.core.store.seqs(agent.node_id)
        assert lost in seqs and seqs == list(range(1, len(seqs) + 1)), seqs
    finally:
        await fleet.stop()
        await link.stop()
        await core.stop()
