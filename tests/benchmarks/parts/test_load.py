"""The load part's pure pieces: py-spy profile shares, merged simulator percentiles, core log trouble counts."""

from __future__ import annotations

from pathlib import Path

from benchmarks.parts.load import core_log_counts, fleet_sizes, merge_pcts, summarize_profile


def test_profile_shares_count_self_time_and_each_frame_once_per_stack(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "main (/srv/core.py:10);run (/usr/lib/asyncio/base_events.py:5);handle (/srv/gateway.py:40) 30\n"
        "main (/srv/core.py:10);run (/usr/lib/asyncio/base_events.py:5) 10\n"
        # A recursive frame is inclusive time once, not twice.
        "main (/srv/core.py:10);commit (/srv/db.py:7);commit (/srv/db.py:9) 60\n"
        "py-spy warning: not a stack\n"
    )
    prof = summarize_profile(raw)
    assert prof["samples"] == 100
    assert prof["self_pct"] == [
        ("commit (db.py)", 60.0),
        ("handle (gateway.py)", 30.0),
        ("run (base_events.py)", 10.0),
    ]
    assert prof["inclusive_pct"] == [
        ("main (core.py)", 100.0),
        ("commit (db.py)", 60.0),
        ("run (base_events.py)", 40.0),
        ("handle (gateway.py)", 30.0),
    ]
    assert summarize_profile(raw, top=1)["inclusive_pct"] == [("main (core.py)", 100.0)]


def test_merged_percentiles_take_the_worst_process_and_the_total_count() -> None:
    merged = merge_pcts(
        [
            {"p50": 3.0, "p99": 40.0, "max": 90.0, "n": 1000},
            {"p50": 5.0, "p99": 20.0, "max": None, "n": 0},
            {"p50": None, "p99": None, "max": None, "n": 0},
        ]
    )
    assert merged == {"p50": 5.0, "p99": 40.0, "max": 90.0, "n": 1000}
    assert merge_pcts([{"p99": None, "n": 0}]) == {"p99": None, "n": 0}


def test_core_log_counts_each_kind_of_trouble(tmp_path: Path) -> None:
    log = tmp_path / "core.log"
    log.write_text(
        "2025-01-01 00:00:00 INFO core: listening\n"
        "2025-01-01 00:00:01 WARNING agents: node 3 silent for 31s, closing\n"
        "2025-01-01 00:00:02 INFO agents: node 4 connected; replaces the old one\n"
        "2025-01-01 00:00:02 INFO agents: node 5 connected; replaces the old one\n"
        "2025-01-01 00:00:03 ERROR store: sample commit failed: disk I/O error\n"
    )
    assert core_log_counts(log) == {
        "heartbeat_timeouts": 1,
        "replaced_connections": 2,
        "commit_failures": 1,
        "errors": 1,
    }
    assert core_log_counts(tmp_path / "missing.log") == dict.fromkeys(
        ("heartbeat_timeouts", "replaced_connections", "commit_failures", "errors"), 0
    )


def test_each_core_of_a_cluster_gets_the_same_share_of_the_fleet() -> None:
    # Process i dials core i modulo the cores: three processes for a pair gave one core twice the
    # agents of the other, and the pair was then judged by its fuller core.
    for count in (10, 1_000, 1_200, 1_500, 2_500, 3_500):
        for cores in (1, 2, 3):
            sizes = fleet_sizes(count, 500, cores)
            assert sum(sizes) == count and max(sizes) <= 500
            shares = [sum(sizes[i::cores]) for i in range(cores)]
            assert max(shares) - min(shares) <= len(sizes) // cores, (count, cores, sizes)
    assert fleet_sizes(1_500, 500, 2) == [375, 375, 375, 375]
    assert fleet_sizes(1_500, 500) == [500, 500, 500]
