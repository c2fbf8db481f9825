"""The reliability script: its checks catch a lost, a doubled and a miscounted sample; and a short real run passes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.harness import REPO
from benchmarks.reliability import Agent, check_database
from servermanager.core.store.schema import migrate_sync

MINUTE = 60_000
T0 = 1_700_000_000_000 // MINUTE * MINUTE  # a minute's start, in ms


def _agent(tmp_path: Path, index: int, node: int, last_seq: int, spooled: list[int]) -> Agent:
    agent = Agent(tmp_path, index, "http://127.0.0.1:1", 1.0)
    agent.state_dir.mkdir()
    (agent.state_dir / "credential").write_text(json.dumps({"node_id": node, "credential": "x"}))
    con = sqlite3.connect(agent.state_dir / "spool.sqlite3")
    con.executescript(
        "CREATE TABLE samples (seq INTEGER PRIMARY KEY, ts REAL NOT NULL, data BLOB NOT NULL);"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    )
    con.executemany("INSERT INTO meta VALUES (?, ?)", [("last_seq", last_seq), ("dropped", 0)])
    con.executemany("INSERT INTO samples VALUES (?, 0, x'')", [(s,) for s in spooled])
    con.commit()
    con.close()
    return agent


def _db(path: Path, rows: dict[int, list[tuple[str, int, int]]], minutes: dict[int, int]) -> None:
    """rows: node -> (table, seq, ts offset in ms); minutes: node -> the count its 1m row says."""
    migrate_sync(path)
    con = sqlite3.connect(path)
    for node, items in rows.items():
        last = max((seq for _, seq, _ in items), default=0)
        con.execute(
            "INSERT INTO nodes (id, name, cred_hash, created_at, last_seq) VALUES (?, ?, ?, 0, ?)",
            (node, f"n{node}", bytes([node]), last),
        )
        for table, seq, dt in items:
            con.execute(f"INSERT INTO {table} (node_id, ts, seq) VALUES (?, ?, ?)", (node, T0 + dt, seq))
        con.execute("INSERT INTO samples_1m (node_id, ts, cnt) VALUES (?, ?, ?)", (node, T0, minutes[node]))
        con.execute(
            "INSERT INTO samples_1h (node_id, ts, cnt) VALUES (?, ?, ?)",
            (node, T0 // 3_600_000 * 3_600_000, minutes[node]),
        )
    con.commit()
    con.close()


def test_the_checks_find_a_lost_a_doubled_and_a_miscounted_sample(tmp_path: Path) -> None:
    good = _agent(tmp_path, 0, 1, last_seq=4, spooled=[4])  # 4 made, 4 not yet acknowledged
    bad = _agent(tmp_path, 1, 2, last_seq=5, spooled=[])
    db = tmp_path / "core.db"
    _db(
        db,
        {
            # seq 4 is still spooled but was committed (its ack lost to a kill): allowed.
            1: [
                ("samples_raw", 1, 0),
                ("samples_raw", 2, 1000),
                ("samples_head", 3, 2000),
                ("samples_raw", 4, 3000),
            ],
            # seq 3 acknowledged yet missing; seq 2 stored twice, under two timestamps; seq 9 never made.
            2: [
                ("samples_raw", 1, 0),
                ("samples_raw", 2, 1000),
                ("samples_head", 2, 1500),
                ("samples_raw", 4, 3000),
                ("samples_raw", 5, 4000),
                ("samples_raw", 9, 5000),
            ],
        },
        minutes={1: 4, 2: 5},  # node 2's minute holds 6 rows
    )
    res = check_database(db, [good, bad])
    assert res["integrity_check"] == "ok"
    ok, broken = res["nodes"]
    assert ok["missing"] == ok["duplicates"] == ok["not_produced"] == ok["gaps_in_stored_range"] == 0
    assert ok["spooled_and_stored"] == 1 and ok["last_seq_matches"]
    assert broken["missing"] == 1 and broken["missing_first"] == [3]
    assert broken["duplicates"] == 1
    assert broken["not_produced"] == 1
    assert broken["gaps_in_stored_range"] == 4  # 3, 6, 7, 8
    assert res["rollups"]["minutes_miscounted"] == 1
    assert res["rollups"]["hours_miscounted"] == 0  # the hour agrees with its (wrong) minute


@pytest.mark.slow
def test_a_short_run_passes_every_check(tmp_path: Path) -> None:
    out = tmp_path / "rel.json"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.reliability",
        "--cycles",
        "2",
        "--agents",
        "2",
        "--ballast",
        "20",
    ]
    cmd += ["--seed", "1", "--out", str(out), "--workdir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=110)
    report = json.loads(out.read_text())
    assert proc.returncode == 0, (proc.stderr[-2000:], report.get("summary"))
    summary = report["summary"]
    assert summary["ok"] and all(summary["checks"].values())
    assert summary["kills"] == 2 and summary["integrity_check"] == "ok"
    assert summary["samples_stored"] > 0 and summary["missing"] == summary["duplicates"] == 0
