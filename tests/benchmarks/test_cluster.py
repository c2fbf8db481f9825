"""The scale benchmark's paper figures: the line per core and the comparison at equal CPU."""

from __future__ import annotations

from typing import Any

from benchmarks.cluster import _non_decreasing, iso_cpu, paper_fit


def _run(cores: list[float], p99: float = 20.0, busy: float = 50.0) -> dict[str, Any]:
    return {
        "push_p99_ms": p99,
        "fraction_of_target": 1.0,
        "machine_busy_pct": busy,
        "cores": [{"cpu_pct": c} for c in cores],
    }


def test_non_decreasing_pools_a_step_that_bends_back_and_repeats_of_one_size() -> None:
    assert _non_decreasing([(500, 20.0), (1000, 30.0), (1500, 28.0), (2000, 40.0)]) == [
        (500, 20.0),
        (1000, 29.0),
        (1500, 29.0),
        (2000, 40.0),
    ]
    assert _non_decreasing([(500, 20.0), (500, 24.0), (1000, 30.0)]) == [(500, 22.0), (1000, 30.0)]


def test_iso_cpu_reads_the_lone_core_at_the_pairs_busiest_core() -> None:
    runs = {
        "postgresql": {500: _run([20.0]), 1000: _run([30.0]), 1500: _run([40.0])},
        "postgresql+redis x2": {
            # Busier core at 25 %: one core serves 750 there, so 1,000 / 750.
            1000: _run([25.0, 21.0]),
            # 35 %: 1,250, so 2,000 / 1,250 = 1.6.
            2000: _run([30.0, 35.0]),
            # Over the lone core's measured curve: no extrapolation, left out.
            3000: _run([45.0, 40.0]),
            # Not held, or on a saturated machine: left out.
            2500: _run([38.0, 30.0], p99=150.0),
            1500: _run([28.0, 25.0], busy=90.0),
        },
    }
    got = iso_cpu(runs)
    assert [(x["agents"], x["one_core_agents"], x["ratio"]) for x in got["points"]] == [
        (1000, 750, 1.33),
        (2000, 1250, 1.6),
    ]
    assert got["median"] == 1.47


def test_paper_fit_carries_the_line_and_the_iso_cpu_figure() -> None:
    runs = {
        "postgresql": {500: _run([20.0]), 1000: _run([30.0])},
        "postgresql+redis x2": {1000: _run([25.0, 20.0]), 2000: _run([35.0, 30.0])},
    }
    out = paper_fit(runs)
    # One core: 10 % + 0.02 % per agent reaches a CPU at 4,500; the pair's core 0: 15 % + 0.01 %, 8,500.
    assert out["postgresql"]["agents_at_one_cpu"] == 4500
    assert out["postgresql+redis x2"]["agents_at_one_cpu"] == 8500
    assert out["two_over_one"] == 1.89
    # At equal CPU only the pair's 1,000 is inside one core's measured 20-30 %: 1,000 / 750.
    assert out["iso_cpu"]["median"] == 1.33
