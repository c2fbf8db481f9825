"""Zero loss with real processes: the core is kill -9'ed mid-stream, agents restart while it is down."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from servermanager.agent.spool import SPOOL_FILE
from servermanager.core.datadir import DB_FILENAME
from tests.helpers.procs import AgentProcess, CoreProcess
from tests.helpers.wait import wait_sync

pytestmark = pytest.mark.slow


def stored_seqs(core: CoreProcess) -> dict[int, list[int]]:
    """Read the core's database directly, as a second process would after a crash."""
    with sqlite3.connect(f"file:{core.data_dir / DB_FILENAME}?mode=ro", uri=True) as con:
        # Both tiers: after a crash the head holds the last commits. A resent sample may sit in both
        # until the next settle; UNION on (node, ts, seq) counts it once, but a sample stored twice
        # under different timestamps would still show as a duplicate.
        rows = con.execute(
            "SELECT node_id, seq FROM (SELECT node_id, ts, seq FROM samples_raw "
            "UNION SELECT node_id, ts, seq FROM samples_head) ORDER BY node_id, seq"
        ).fetchall()
    out: dict[int, list[int]] = {}
    for node, seq in rows:
        out.setdefault(node, []).append(seq)
    return out


def spool_state(agent: AgentProcess) -> tuple[list[int], int]:
    """(seqs still spooled, last seq ever produced) from the agent's own spool file."""
    path = agent.state_dir / SPOOL_FILE
    if not path.exists():
        return [], 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        seqs = [r[0] for r in con.execute("SELECT seq FROM samples ORDER BY seq")]
        last = con.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0]
    return seqs, int(last)


def node_of(agent: AgentProcess) -> int:
    import json

    return int(json.loads((agent.state_dir / "credential").read_text())["node_id"])


@pytest.fixture
def procs() -> Iterator[list[CoreProcess | AgentProcess]]:
    running: list[CoreProcess | AgentProcess] = []
    yield running
    for p in running:
        p.stop()


def _assert_complete(core: CoreProcess, agents: list[AgentProcess]) -> None:
    """Every seq each agent produced is stored exactly once, or (if the agent stopped first) still spooled."""
    stored = stored_seqs(core)
    for agent in agents:
        seqs = stored.get(node_of(agent), [])
        spooled, last = spool_state(agent)
        assert len(seqs) == len(set(seqs)), "duplicate samples stored"
        assert seqs == list(range(1, len(seqs) + 1)), f"gap in stored seqs: {seqs}"
        assert set(seqs) | set(spooled) == set(range(1, last + 1)), (seqs, spooled, last)


def test_core_kill9_mid_stream_loses_nothing(tmp_path: Path, procs: list[CoreProcess | AgentProcess]) -> None:
    core = CoreProcess(tmp_path / "core").start()
    procs.append(core)
    token = core.admin_token()
    status, body = core.api("POST", "/api/v1/enroll-tokens", token, {"uses": 2, "ttl": 600})
    assert status == 201
    agents = [AgentProcess(core.url, tmp_path / f"agent{i}", body["token"]) for i in range(2)]
    for a in agents:
        procs.append(a.start())

    wait_sync(
        lambda: len(stored_seqs(core)) == 2 and all(len(s) >= 2 for s in stored_seqs(core).values()),
        what="streaming",
    )
    core.kill9()
    # Agents keep sampling into their spools while the core is gone.
    before = {node_of(a): spool_state(a)[1] for a in agents}
    wait_sync(
        lambda: all(spool_state(a)[1] >= before[node_of(a)] + 2 for a in agents),
        what="spooling during outage",
    )

    outage = {node_of(a): spool_state(a)[1] for a in agents}  # the last seq made while it was down
    core.start()
    # Backfill done: everything produced up to now is stored, and the spools hold none of it. (An
    # acknowledged sample leaves the spool with the agent's next commit, so the newest one or two
    # are always there: drained means nothing from the outage is left.)
    wait_sync(
        lambda: all(
            len(stored_seqs(core).get(node_of(a), [])) >= outage[node_of(a)]
            and min(spool_state(a)[0], default=outage[node_of(a)] + 1) > outage[node_of(a)]
            for a in agents
        ),
        timeout=30,
        what="backfill",
    )
    for a in agents:
        assert a.terminate() == 0, a.log()
    assert core.terminate() == 0
    _assert_complete(core, agents)
    assert "Traceback" not in core.log()


def test_agent_restarted_while_core_down_delivers_its_spool(
    tmp_path: Path, procs: list[CoreProcess | AgentProcess]
) -> None:
    core = CoreProcess(tmp_path / "core").start()
    procs.append(core)
    status, body = core.api("POST", "/api/v1/enroll-tokens", core.admin_token(), {"uses": 1, "ttl": 600})
    assert status == 201
    agent = AgentProcess(core.url, tmp_path / "agent", body["token"])
    procs.append(agent.start())
    wait_sync(lambda: len(stored_seqs(core).get(1, [])) >= 2, what="first samples")

    assert core.terminate() == 0
    wait_sync(lambda: len(spool_state(agent)[0]) >= 2, what="spooling")
    assert agent.terminate() == 0
    spooled_before_restart, _ = spool_state(agent)
    assert spooled_before_restart

    agent2 = AgentProcess(core.url, agent.state_dir)  # no token: it uses its stored credential
    procs.append(agent2.start())
    wait_sync(
        lambda: spool_state(agent2)[1] >= spooled_before_restart[-1] + 2, what="restarted agent spooling"
    )
    outage = spool_state(agent2)[1]  # the last seq made while the core was down
    core.start()
    wait_sync(
        lambda: set(spooled_before_restart) <= set(stored_seqs(core).get(1, [])),
        timeout=30,
        what="spool delivered",
    )
    # Drained of the outage: an acknowledged sample leaves the spool with the next commit, so the
    # newest one or two are always there.
    wait_sync(
        lambda: min(spool_state(agent2)[0], default=outage + 1) > outage, timeout=30, what="spool drained"
    )
    assert set(range(1, outage + 1)) <= set(stored_seqs(core).get(1, []))
    assert agent2.terminate() == 0
    assert core.terminate() == 0
    _assert_complete(core, [agent2])
