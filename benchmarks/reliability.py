"""Reliability: kill -9 the core under live agents, again and again, then check that nothing was lost.

    .venv/bin/python -m benchmarks.reliability                  # 100 cycles, 8 agents: about 4 minutes
    .venv/bin/python -m benchmarks.reliability --cycles 2 --agents 2 --ballast 20 --out /tmp/rel.json

A real `servermanager core` runs on a loopback port with a data dir that persists across cycles,
and real `servermanager agent` processes (each with its own spool) sample every second and stream
to it, beside 200 simulated agents (`benchmarks.fleet`, in this process) that make every group
commit and settle bigger, so more kills land inside one. Each cycle kills the core with SIGKILL at a random moment after it was spawned (during
start-up, while the agents reconnect and backfill, while they stream, during a settle or rollup
pass: the rollup job runs every 0.5 s here), waits a random while, and starts it again on the same
data dir and port. The agents are never stopped: they keep sampling into their spools while the
core is down and resend whatever was not acknowledged.

After the last cycle the core runs until every agent's backlog is delivered; then the agents and
the core are stopped with SIGTERM and the database is checked with the core stopped:

- `PRAGMA integrity_check` says ok;
- for every agent (its spool is the source of truth): every seq it produced (1 .. the spool's
  last_seq) that is no longer in its spool, so was acknowledged, is stored exactly once
  (samples_raw and samples_head together); no seq is stored twice (under two timestamps); no seq
  is stored that the agent never produced; the spool evicted nothing;
- the simulated agents do not spool (they drop what was not acknowledged), so for them only: no
  seq stored twice;
- nodes.last_seq is each node's highest stored seq, and no extra node was enrolled;
- every minute of raw rows has a 1m rollup row that counts them, or is still marked for the
  rollup job (and the same for hours over the minutes);
- no traceback in the core's or the agents' logs; the final SIGTERMs exit 0.

The JSON report goes to --out (default benchmarks/results/reliability.json); the exit status is 0
only if every check passed (1 otherwise). A failed run keeps its data dir and logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from benchmarks.fleet import Fleet, raise_nofile_limit
from benchmarks.harness import RESULTS, SystemCpu, log, machine_info, servermanager_cmd, spawned, terminate
from devkit.ports import free_port
from servermanager.agent.credentials import CREDENTIAL_FILE
from servermanager.agent.spool import SPOOL_FILE
from servermanager.core.datadir import DB_FILENAME, initial_admin_password
from servermanager.core.store.schema import ROLLUP_TABLES


@dataclass(frozen=True)
class Options:
    cycles: int = 100
    agents: int = 8
    ballast: int = 200  # simulated agents (benchmarks.fleet) that make the commits and settles bigger
    interval: float = 1.0  # the agents' sample interval (the agent's minimum is 1 s)
    kill_within: float = 3.0  # the kill comes uniformly within this many seconds after the spawn
    down_max: float = 1.0  # the core stays down uniformly up to this long
    rollup_every: float = 0.5  # the core's settle + rollup pass, often so kills land in it
    drain_timeout: float = 90.0
    seed: int | None = None


def loadavg() -> list[float]:
    with contextlib.suppress(OSError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return []


# ---------------------------------------------------------------- the core, again and again


class CoreRunner:
    """`servermanager core` on one port and one data dir, spawned once per cycle."""

    def __init__(self, workdir: Path, rollup_every: float) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "core"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "core.log"
        self.env = {**os.environ, "SM_CORE_ROLLUP_EVERY": str(rollup_every)}
        self.cmd = [
            *servermanager_cmd(),
            "core",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
        ]
        self.token: str | None = None

    async def healthy(self, http: aiohttp.ClientSession) -> bool:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with http.get(self.url + "/api/v1/health", timeout=aiohttp.ClientTimeout(total=1)) as r:
                return r.status == 200
        return False

    async def wait_healthy(
        self, http: aiohttp.ClientSession, proc: asyncio.subprocess.Process, timeout: float = 60.0
    ) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if proc.returncode is not None:
                raise RuntimeError(f"the core exited with {proc.returncode} during start-up; see {self.log}")
            if await self.healthy(http):
                return time.monotonic() - t0
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the core did not answer /api/v1/health within {timeout:g}s")

    async def login(self, http: aiohttp.ClientSession) -> str:
        body = {"username": "admin", "password": initial_admin_password(self.data_dir)}
        async with http.post(self.url + "/api/v1/auth/login", json=body) as r:
            if r.status != 200:
                raise RuntimeError(f"login -> {r.status}: {await r.text()}")
            self.token = str((await r.json())["access_token"])
        return self.token

    async def enroll_token(self, http: aiohttp.ClientSession, uses: int) -> str:
        body = {"uses": uses, "ttl": 3600}
        async with http.post(self.url + "/api/v1/enroll-tokens", json=body, headers=self._auth()) as r:
            if r.status != 201:
                raise RuntimeError(f"enroll-tokens -> {r.status}: {await r.text()}")
            return str((await r.json())["token"])

    async def samples_written(self, http: aiohttp.ClientSession) -> int | None:
        """This process's sm_core_samples_written_total, or None if it cannot say right now."""
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
            async with http.get(
                self.url + "/metrics", headers=self._auth(), timeout=aiohttp.ClientTimeout(total=1)
            ) as r:
                if r.status != 200:
                    return None
                for line in (await r.text()).splitlines():
                    if line.startswith("sm_core_samples_written_total "):
                        return int(float(line.split()[1]))
        return None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


class Agent:
    def __init__(self, workdir: Path, index: int, core_url: str, interval: float) -> None:
        self.state_dir = workdir / f"agent{index}"
        self.log = workdir / f"agent{index}.log"
        self.cmd = [
            *servermanager_cmd(),
            "agent",
            "--core",
            core_url,
            "--state-dir",
            str(self.state_dir),
            "--interval",
            f"{interval:g}",
        ]
        self.proc: asyncio.subprocess.Process | None = None

    def node_id(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return int(json.loads((self.state_dir / CREDENTIAL_FILE).read_text())["node_id"])
        return None

    def spool(self) -> dict[str, Any]:
        """What the agent's own spool says: the seqs still waiting, the last seq ever made, evictions."""
        path = self.state_dir / SPOOL_FILE
        if not path.exists():
            return {"spooled": [], "last_seq": 0, "dropped": 0}
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            spooled = [int(r[0]) for r in con.execute("SELECT seq FROM samples ORDER BY seq")]
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()
        return {"spooled": spooled, "last_seq": int(meta["last_seq"]), "dropped": int(meta["dropped"])}


# ---------------------------------------------------------------- the checks


def check_database(db_path: Path, agents: list[Agent]) -> dict[str, Any]:
    """Everything the module docstring promises, read with the core stopped."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        integrity = [r[0] for r in con.execute("PRAGMA integrity_check")]
        raw_rows = int(con.execute("SELECT count(*) FROM samples_raw").fetchone()[0])
        head_rows = int(con.execute("SELECT count(*) FROM samples_head").fetchone()[0])
        # A resent sample may sit in both tiers until the next settle: UNION counts the same
        # (node, ts, seq) once. The same seq under two timestamps would be a real duplicate.
        stored: dict[int, list[int]] = {}
        for node, seq in con.execute(
            "SELECT node_id, seq FROM (SELECT node_id, ts, seq FROM samples_raw "
            "UNION SELECT node_id, ts, seq FROM samples_head) ORDER BY node_id, seq"
        ):
            stored.setdefault(int(node), []).append(int(seq))
        last_seq = {int(n): int(s) for n, s in con.execute("SELECT id, last_seq FROM nodes")}
        rollups = _check_rollups(con)
    finally:
        con.close()

    mine = {a.node_id() for a in agents}
    ballast = {n: seqs for n, seqs in stored.items() if n not in mine}
    nodes: list[dict[str, Any]] = []
    for agent in agents:
        node = agent.node_id()
        sp = agent.spool()
        seqs = stored.get(node, []) if node is not None else []
        have = set(seqs)
        made = set(range(1, sp["last_seq"] + 1))
        acked = made - set(sp["spooled"])
        missing = sorted(acked - have)  # acknowledged (gone from the spool) yet not stored: lost
        dupes = len(seqs) - len(have)
        unknown = sorted(have - made)
        db_gaps = sorted(set(range(1, max(have) + 1)) - have) if have else []
        nodes.append(
            {
                "agent": agent.state_dir.name,
                "node_id": node,
                "produced": sp["last_seq"],
                "stored": len(have),
                "still_spooled": len(sp["spooled"]),
                "spooled_and_stored": len(set(sp["spooled"]) & have),  # committed, ack lost to a kill
                "spool_evicted": sp["dropped"],
                "missing": len(missing),
                "missing_first": missing[:20],
                "duplicates": dupes,
                "not_produced": len(unknown),
                "gaps_in_stored_range": len(db_gaps),
                "gaps_first": db_gaps[:20],
                "nodes_last_seq": last_seq.get(node) if node is not None else None,
                "last_seq_matches": node is not None and last_seq.get(node) == (max(have) if have else 0),
            }
        )
    return {
        "integrity_check": integrity[0] if len(integrity) == 1 else integrity[:20],
        "samples_raw_rows": raw_rows,
        "samples_head_rows": head_rows,
        "nodes_in_db": len(last_seq),
        "ballast_nodes": len(ballast),
        "ballast_samples": sum(len(v) for v in ballast.values()),
        "ballast_duplicates": sum(len(v) - len(set(v)) for v in ballast.values()),
        "nodes": nodes,
        "rollups": rollups,
    }


def ack_lost(db_path: Path, agents: list[Agent]) -> int | None:
    """Samples the killed core had committed whose ack never reached the agent: still in its spool
    and already in the database. They are sent again after the restart and must be stored once.

    Read-only, with no checkpoint on close, so the database is left exactly as the kill left it for
    the next core to recover; None when SQLite cannot read it that way (a wal-index to rebuild).
    """
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return None
    try:
        lost = 0
        for agent in agents:
            node = agent.node_id()
            spooled = agent.spool()["spooled"]
            if node is None or not spooled:
                continue
            lo, hi = spooled[0], spooled[-1]
            stored = {
                int(r[0])
                for r in con.execute(
                    "SELECT seq FROM samples_raw WHERE node_id = ? AND seq BETWEEN ? AND ? "
                    "UNION SELECT seq FROM samples_head WHERE node_id = ? AND seq BETWEEN ? AND ?",
                    (node, lo, hi, node, lo, hi),
                )
            }
            lost += len(stored & set(spooled))
        return lost
    except sqlite3.Error:
        return None
    finally:
        con.close()


def _check_rollups(con: sqlite3.Connection) -> dict[str, int]:
    """Each 1m row counts its minute's raw rows and each 1h row its minutes, unless still marked dirty."""
    m_step, h_step = ROLLUP_TABLES["1m"][1], ROLLUP_TABLES["1h"][1]
    raw = "(SELECT node_id, ts FROM samples_raw UNION SELECT node_id, ts FROM samples_head)"
    minute_bad = con.execute(
        f"""
        WITH r AS (SELECT node_id, ts / {m_step} * {m_step} AS b, count(*) AS n FROM {raw} GROUP BY 1, 2),
             both AS (SELECT r.node_id, r.b, r.n, m.cnt FROM r LEFT JOIN samples_1m m
                        ON m.node_id = r.node_id AND m.ts = r.b
                      UNION ALL
                      SELECT m.node_id, m.ts, 0, m.cnt FROM samples_1m m
                      WHERE NOT EXISTS (SELECT 1 FROM r WHERE r.node_id = m.node_id AND r.b = m.ts))
        SELECT count(*) FROM both
        WHERE (cnt IS NULL OR cnt != n)
          AND NOT EXISTS (SELECT 1 FROM rollup_dirty d WHERE d.res = '1m' AND d.node_id = both.node_id AND d.ts = both.b)
        """
    ).fetchone()[0]
    hour_bad = con.execute(
        f"""
        WITH m AS (SELECT node_id, ts / {h_step} * {h_step} AS b, sum(cnt) AS n FROM samples_1m GROUP BY 1, 2)
        SELECT count(*) FROM m LEFT JOIN samples_1h h ON h.node_id = m.node_id AND h.ts = m.b
        WHERE (h.cnt IS NULL OR h.cnt != m.n)
          AND NOT EXISTS (SELECT 1 FROM rollup_dirty d WHERE d.node_id = m.node_id
                          AND ((d.res = '1h' AND d.ts = m.b)
                               OR (d.res = '1m' AND d.ts >= m.b AND d.ts < m.b + {h_step})))
        """
    ).fetchone()[0]
    minutes = con.execute("SELECT count(*) FROM samples_1m").fetchone()[0]
    pending = con.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0]
    return {
        "rows_1m": int(minutes),
        "marked_pending": int(pending),
        "minutes_miscounted": int(minute_bad),
        "hours_miscounted": int(hour_bad),
    }


def count_lines(path: Path, marks: dict[str, str]) -> dict[str, int]:
    counts = dict.fromkeys(marks, 0)
    with contextlib.suppress(OSError), path.open(errors="replace") as fh:
        for line in fh:
            for key, mark in marks.items():
                if mark in line:
                    counts[key] += 1
    return counts


LOG_MARKS = {"tracebacks": "Traceback", "errors": " ERROR ", "critical": " CRITICAL "}


# ---------------------------------------------------------------- the run


async def _until(predicate: Any, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while True:
        res = predicate()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)


async def run(opts: Options, workdir: Path) -> dict[str, Any]:
    rng = random.Random(opts.seed)
    core = CoreRunner(workdir, opts.rollup_every)
    agents = [Agent(workdir, i, core.url, opts.interval) for i in range(opts.agents)]
    cycles: list[dict[str, Any]] = []
    out: dict[str, Any] = {"core_url": core.url}
    t_run = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        # One core process per cycle, each in a stack of its own (closed after its kill), so a
        # failure anywhere still stops the one running now.
        current = [contextlib.AsyncExitStack()]
        stack.push_async_callback(lambda: current[0].aclose())
        proc = await current[0].enter_async_context(spawned(core.cmd, core.log, core.env))
        await core.wait_healthy(http, proc)
        await core.login(http)
        token = await core.enroll_token(http, opts.agents)
        env = {
            **os.environ,
            "SM_AGENT_ENROLL_TOKEN": token,
            "SM_AGENT_BACKOFF_INITIAL": "0.2",
            "SM_AGENT_BACKOFF_MAX": "1",
        }
        for agent in agents:
            agent.proc = await stack.enter_async_context(spawned(agent.cmd, agent.log, env))
        # Everyone enrolled and streaming before the first kill: enrollment itself is not what is tested.
        await _until(
            lambda: all(a.node_id() is not None for a in agents), 60, "every agent to enroll", every=0.1
        )
        await _until(
            lambda: all(a.spool()["last_seq"] >= 2 for a in agents), 60, "every agent's first samples"
        )
        fleet: Fleet | None = None
        if opts.ballast:
            # They do not spool (unacknowledged samples are dropped on reconnect), so only their
            # stored seqs are checked for duplicates; what they add is load on every commit.
            fleet = Fleet(
                core.url,
                await core.enroll_token(http, opts.ballast),
                opts.ballast,
                interval=1.0,
                name_prefix="ballast",
                backoff_initial=0.2,
                backoff_max=1.0,
                seed=opts.seed,
            )
            await fleet.start()
            stack.push_async_callback(fleet.stop)
        log(
            f"{opts.agents} agents and {opts.ballast} simulated ones enrolled and streaming; "
            f"{opts.cycles} kill cycles"
        )
        spawned_at = time.monotonic()
        for i in range(opts.cycles):
            kill_after = rng.uniform(0.0, opts.kill_within)
            cycle: dict[str, Any] = {"cycle": i + 1, "kill_after_s": round(kill_after, 3)}
            deadline = spawned_at + kill_after
            healthy_at: float | None = None
            written: int | None = None
            while (now := time.monotonic()) < deadline:
                if healthy_at is None:
                    if await core.healthy(http):
                        healthy_at = now
                else:
                    written = await core.samples_written(http) or written
                await asyncio.sleep(min(0.05 if healthy_at is None else 0.2, max(0.0, deadline - now)))
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            code = await proc.wait()
            await current[0].aclose()
            cycle["killed"] = code == -signal.SIGKILL
            if not cycle["killed"]:
                cycle["exit_code"] = code  # it died by itself before the kill: a crash
            cycle["healthy_after_s"] = None if healthy_at is None else round(healthy_at - spawned_at, 3)
            cycle["samples_written_before_kill"] = written  # at the last poll, so at least this many
            down = rng.uniform(0.0, opts.down_max)
            cycle["down_s"] = round(down, 3)
            t_down = time.monotonic()
            cycle["ack_lost_at_kill"] = ack_lost(core.data_dir / DB_FILENAME, agents)
            await asyncio.sleep(max(0.0, down - (time.monotonic() - t_down)))
            cycle["seconds"] = round(time.monotonic() - spawned_at, 3)
            cycles.append(cycle)
            if (i + 1) % 10 == 0 or i + 1 == opts.cycles:
                log(f"cycle {i + 1}/{opts.cycles}: killed {kill_after:.2f}s after the spawn")
            current[0] = contextlib.AsyncExitStack()
            proc = await current[0].enter_async_context(spawned(core.cmd, core.log, core.env))
            spawned_at = time.monotonic()
        # The last core lives: every backlog is delivered, then everything stops cleanly.
        await core.wait_healthy(http, proc)
        t_drain = time.monotonic()
        marks = {a.state_dir.name: a.spool()["last_seq"] for a in agents}

        def drained() -> bool:
            # Everything spooled up to the final start is acknowledged (deleted from the spool).
            return all(not [s for s in a.spool()["spooled"] if s <= marks[a.state_dir.name]] for a in agents)

        await _until(drained, opts.drain_timeout, "the agents' backlogs to be acknowledged")
        out["drain_seconds"] = round(time.monotonic() - t_drain, 2)
        if fleet is not None:
            out["ballast"] = {
                "agents": opts.ballast,
                "samples_sent": fleet.samples_sent,
                "samples_acked": fleet.samples_acked,
                "reconnects": fleet.reconnects,
                "enrolled": fleet.enrolled,
            }
            await fleet.stop()
        out["agent_exit_codes"] = [await terminate(a.proc) for a in agents if a.proc is not None]
        out["core_exit_code"] = await terminate(proc)
    out["seconds"] = round(time.monotonic() - t_run, 1)
    out["cycles"] = cycles
    out["database"] = check_database(core.data_dir / DB_FILENAME, agents)
    out["core_log"] = count_lines(core.log, LOG_MARKS)
    out["core_log"]["starts"] = count_lines(core.log, {"n": "core ready;"})["n"]
    agent_logs = [count_lines(a.log, LOG_MARKS) for a in agents]
    out["agent_logs"] = {k: sum(c[k] for c in agent_logs) for k in LOG_MARKS}
    return out


def summarize(out: dict[str, Any], opts: Options) -> dict[str, Any]:
    cycles = out["cycles"]
    db = out["database"]
    nodes = db["nodes"]
    secs = [c["seconds"] for c in cycles]
    ups = [c["healthy_after_s"] for c in cycles if c["healthy_after_s"] is not None]
    written = [c["samples_written_before_kill"] or 0 for c in cycles]
    checks = {
        "every_kill_was_sigkill": all(c["killed"] for c in cycles),
        "integrity_ok": db["integrity_check"] == "ok",
        "no_missing": sum(n["missing"] for n in nodes) == 0,
        "no_duplicates": sum(n["duplicates"] for n in nodes) == 0,
        "nothing_unknown_stored": sum(n["not_produced"] for n in nodes) == 0,
        "no_gaps_in_stored_range": sum(n["gaps_in_stored_range"] for n in nodes) == 0,
        "no_spool_evictions": sum(n["spool_evicted"] for n in nodes) == 0,
        "nodes_last_seq_right": all(n["last_seq_matches"] for n in nodes),
        "one_node_per_agent": db["nodes_in_db"] == len(nodes) + opts.ballast,
        "no_ballast_duplicates": db["ballast_duplicates"] == 0,
        "rollups_consistent": db["rollups"]["minutes_miscounted"] == 0
        and db["rollups"]["hours_miscounted"] == 0,
        "no_tracebacks": out["core_log"]["tracebacks"] == 0 and out["agent_logs"]["tracebacks"] == 0,
        "clean_exits": out["core_exit_code"] == 0 and all(c == 0 for c in out["agent_exit_codes"]),
    }
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "cycles": len(cycles),
        "kills": sum(1 for c in cycles if c["killed"]),
        "kills_before_healthy": sum(1 for c in cycles if c["healthy_after_s"] is None),
        "core_starts": out["core_log"]["starts"],
        "agents": len(nodes),
        "samples_stored": sum(n["stored"] for n in nodes),
        "samples_produced": sum(n["produced"] for n in nodes),
        "still_spooled_at_stop": sum(n["still_spooled"] for n in nodes),
        "committed_but_ack_lost": sum(n["spooled_and_stored"] for n in nodes),
        "kills_that_lost_acks": sum(1 for c in cycles if c.get("ack_lost_at_kill")),
        "acks_lost_to_kills": sum(c.get("ack_lost_at_kill") or 0 for c in cycles),
        "ack_lost_unreadable": sum(1 for c in cycles if c.get("ack_lost_at_kill") is None),
        "missing": sum(n["missing"] for n in nodes),
        "duplicates": sum(n["duplicates"] for n in nodes),
        "gaps_in_stored_range": sum(n["gaps_in_stored_range"] for n in nodes),
        "integrity_check": db["integrity_check"],
        "samples_written_by_killed_cores_at_least": sum(written),
        "seconds_per_cycle": {
            "mean": round(statistics.fmean(secs), 2) if secs else None,
            "p50": round(statistics.median(secs), 2) if secs else None,
            "max": round(max(secs), 2) if secs else None,
        },
        "core_healthy_after_spawn_s": {
            "p50": round(statistics.median(ups), 2) if ups else None,
            "max": round(max(ups), 2) if ups else None,
        },
        "drain_seconds": out["drain_seconds"],
        "total_seconds": out["seconds"],
    }


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    per = s["seconds_per_cycle"]
    failed = [k for k, v in s["checks"].items() if not v]
    return "\n".join(
        [
            "| cycles | kills (in start-up) | agents | samples stored | missing | duplicates | gaps | "
            "integrity | s per cycle (mean / max) | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {s['cycles']} | {s['kills']} ({s['kills_before_healthy']}) | {s['agents']} | "
            f"{s['samples_stored']:,} | {s['missing']} | {s['duplicates']} | {s['gaps_in_stored_range']} | "
            f"{s['integrity_check']} | {per['mean']} / {per['max']} | "
            f"{'ok' if s['ok'] else 'FAILED: ' + ', '.join(failed)} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.reliability", description=__doc__.split("\n\n")[0]
    )
    d = Options()
    ap.add_argument("--cycles", type=int, default=d.cycles, help="kill -9 and restart this many times")
    ap.add_argument("--agents", type=int, default=d.agents, help="real agent processes")
    ap.add_argument(
        "--ballast", type=int, default=d.ballast, help="simulated agents adding load (not spooling)"
    )
    ap.add_argument("--interval", type=float, default=d.interval, help="the agents' sample interval (>= 1 s)")
    ap.add_argument(
        "--kill-within",
        type=float,
        default=d.kill_within,
        help="kill uniformly within this after a spawn (s)",
    )
    ap.add_argument("--down-max", type=float, default=d.down_max, help="longest time the core stays down (s)")
    ap.add_argument(
        "--rollup-every", type=float, default=d.rollup_every, help="the core's rollup (and settle) period"
    )
    ap.add_argument("--seed", type=int, default=None, help="seed of the kill and down times")
    ap.add_argument("--workdir", default=None, help="parent of the throwaway data dir (default: system temp)")
    ap.add_argument("--keep-data", action="store_true", help="keep the data dir and logs even on success")
    ap.add_argument("--out", default=str(RESULTS / "reliability.json"), help="where the JSON report goes")
    args = ap.parse_args(argv)
    if (
        args.cycles < 1
        or args.agents < 1
        or args.ballast < 0
        or args.interval < 1
        or args.kill_within <= 0
        or args.down_max < 0
    ):
        ap.error(
            "need --cycles >= 1, --agents >= 1, --ballast >= 0, --interval >= 1, --kill-within > 0, --down-max >= 0"
        )
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    opts = Options(
        cycles=args.cycles,
        agents=args.agents,
        ballast=args.ballast,
        interval=args.interval,
        kill_within=args.kill_within,
        down_max=args.down_max,
        rollup_every=args.rollup_every,
        seed=seed,
    )
    raise_nofile_limit()
    workdir = Path(tempfile.mkdtemp(prefix="sm-reliability-", dir=args.workdir))
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.reliability", *sys.argv[1:]]),
        "options": msgspec.to_builtins(opts),
        "machine": machine_info(),
        "loadavg_before": loadavg(),
    }
    ok = False
    busy = SystemCpu()
    busy.begin()
    try:
        out = asyncio.run(run(opts, workdir))
        report["loadavg_after"] = loadavg()
        report["machine_busy_during"] = busy.end()
        report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        report["summary"] = summarize(out, opts)
        report["details"] = out
        ok = bool(report["summary"]["ok"])
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("interrupted: children stopped")
        report["error"] = "interrupted"
    except Exception as exc:
        report["error"] = repr(exc)
        log(f"run failed: {exc!r}")
    finally:
        if ok and not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"data dir and logs kept in {workdir}")
            report["workdir"] = str(workdir)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    if "summary" in report:
        print(markdown(report))
    log(f"report written to {out_path}; {'all checks passed' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
