"""The fleet simulator's frames: pooled readings spliced into real, decodable samples frames."""

from __future__ import annotations

import msgspec

from benchmarks.fleet import Fleet, SimAgent
from servermanager.common import protocol as p


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
