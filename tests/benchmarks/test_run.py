"""The benchmark CLI: the Markdown report from a results document, and its flag checks."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.run import main, markdown

MACHINE = {
    "nproc": 2,
    "cpu_model": "Test CPU",
    "mem_total_gib": 3.8,
    "kernel": "6.1.0",
    "python": "3.11.7",
    "sqlite": "3.40.1",
}


def _results() -> dict[str, Any]:
    return {
        "machine": MACHINE,
        "agent_overhead": {
            "agent": {
                "cpu_pct": 0.3,
                "rss_mb_mean": 28.5,
                "rss_mb_max": 33.0,
                "uss_mb_mean": 16.0,
                "cpu_ms_per_sample": 3.1,
            },
            "node_exporter": {
                "cpu_pct": 0.7,
                "rss_mb_mean": 19.0,
                "rss_mb_max": 20.0,
                "cpu_ms_per_scrape": 7.4,
            },
            "ratios": {"cpu_agent_over_node_exporter": 0.429, "rss_agent_over_node_exporter": 1.5},
            "targets": {"agent_cpu_le_half_node_exporter": True, "agent_rss_le_32mb": False},
        },
        "core_load": [
            {
                "agents": 1000,
                "simulator_processes": 1,
                "target_rate": 1000.0,
                "simulator": {"achieved_send_rate": 999.5, "ack_latency_ms": {"p99": 12.0}},
                "core": {"cpu_pct": 20.5, "main_thread_cpu_pct": 15.0, "rss_mb_max": 80.1},
                "push": {"latency_ms": {"p50": 1.2, "p99": 9.9}},
                "machine_cpu": {"busy_pct_of_all_cores": 60.0, "others_pct_of_one_core": 3.5},
            },
            {"agents": 5000, "error": "RuntimeError('boom')"},
        ],
        "storage": {
            "rows": 600,
            "nodes": 20,
            "bytes_per_row_pages": 641.7,
            "bytes_per_row_payload": 504.0,
            "page_fill_pct": 79.5,
            "bytes_per_row_whole_file": 989.9,
        },
        "history": {
            "days": 2,
            "rows_1m": 2880,
            "queries": {
                "1m_cpu_pct": {
                    "resolution": "1m",
                    "points": 2880,
                    "response_bytes": 82815,
                    "p50": 1.5,
                    "p95": 1.6,
                    "first_ms": 6.0,
                },
                "auto_all_fields": {
                    "resolution": "1h",
                    "points": 48,
                    "response_bytes": 9000,
                    "p50": 6.1,
                    "p95": 6.6,
                    "first_ms": 7.0,
                },
            },
            "queries_no_cache": {"1m_cpu_pct": {"p50": 2.0, "p95": 3.0}},
            "sql_only": {"1m_cpu_pct": {"p50": 1.52}},
            "targets": {
                "p50_lt_100ms_one_field": True,
                "p50_lt_100ms_one_field_no_cache": True,
                "p50_lt_100ms_all_fields": False,
            },
        },
    }


def test_report_holds_every_part_with_its_figures_and_verdicts() -> None:
    lines = markdown(_results()).splitlines()
    assert lines[0] == "Machine: 2 cores (Test CPU), 3.8 GiB, Linux 6.1.0, Python 3.11.7, SQLite 3.40.1"
    assert "| CPU (% of one core) | 0.3 | 0.7 | 0.429 | ≤ 0.5 x node_exporter: met |" in lines
    assert "| RSS mean / max (MB) | 28.5 / 33.0 | 19.0 / 20.0 | 1.5 | ≤ 32 MB: MISSED |" in lines
    assert "| CPU ms per sample / per scrape | 3.1 | 7.4 | | |" in lines
    assert "| USS mean (MB) | 16.0 | None | | |" in lines
    assert "| 1000 | 1 | 999.5 of 1000.0 | 20.5 (15.0) | 80.1 | 1.2 / 9.9 | 12.0 | 60.0 (3.5) |" in lines
    assert "| 5000 | | error: RuntimeError('boom') | | | | | |" in lines
    assert "| 600 | 20 | 641.7 | 504.0 | 79.5 % | 989.9 |" in lines
    assert "### 2-day history query (2880 one-minute rollups)" in lines
    assert "| 1m_cpu_pct | 1m | 2880 | 82815 | 1.5 / 1.6 | 6.0 | 2.0 / 3.0 | 1.52 |" in lines
    # A query without a cache-off or SQL-only figure still gets its row, with those cells empty.
    assert "| auto_all_fields | 1h | 48 | 9000 | 6.1 / 6.6 | 7.0 | None / None |  |" in lines
    assert "Target p50 < 100 ms, one field at 1m: met (cache off: met); all 16 fields at 1m: MISSED" in lines


def test_report_leaves_out_parts_that_did_not_run_or_failed() -> None:
    results = {
        "machine": MACHINE,
        "agent_overhead": {"error": "/usr/bin/prometheus-node-exporter is missing"},
        "history": {"error": "RuntimeError('x')"},
    }
    text = markdown(results)
    assert "### Agent overhead (same run, same measurement)" in text
    assert "Error: /usr/bin/prometheus-node-exporter is missing" in text
    assert "| CPU (% of one core)" not in text
    for absent in ("### Core under simulated agents", "### SQLite bytes per raw sample", "history query"):
        assert absent not in text


@pytest.mark.parametrize("flag", ["--load-duration", "--agent-duration"])
def test_measurement_windows_outside_1_to_3600_seconds_are_refused(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([flag, "0"])
    assert exc.value.code == 2
    assert f"{flag} must be between 1 and 3600 seconds" in capsys.readouterr().err
