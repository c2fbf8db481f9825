"""The benchmark harness: millisecond percentiles, log tails, process measurement, child process shutdown."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil

from benchmarks.harness import ProcWatch, pcts_ms, spawned, tail, terminate, to_ms


def test_to_ms_rounds_to_hundredths_and_keeps_none() -> None:
    assert to_ms(0.0123456) == 12.35
    assert to_ms(2.0) == 2000.0
    assert to_ms(None) is None


def test_pcts_ms_converts_every_percentile_but_not_the_count() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
    assert pcts_ms(values, (50, 95)) == {"p50": 50.0, "p95": 95.0, "max": 100.0, "n": 100}
    assert pcts_ms([]) == {"p50": None, "p95": None, "p99": None, "max": None, "n": 0}


def test_tail_gives_the_last_lines_and_nothing_for_a_missing_file(tmp_path: Path) -> None:
    log = tmp_path / "core.log"
    log.write_text("".join(f"line {i}\n" for i in range(40)))
    assert tail(log, 3) == "line 37\nline 38\nline 39"
    assert tail(log).splitlines()[0] == "line 25"
    assert tail(tmp_path / "missing.log") == ""


def test_procwatch_counts_cpu_time_spent_in_its_window() -> None:
    watch = ProcWatch(os.getpid(), "self", uss=True, children=False)
    me = psutil.Process()
    watch.begin()
    t0 = sum(me.cpu_times()[:2])
    deadline = time.monotonic() + 30
    # Burn a known amount of CPU time, however busy the shared machine is.
    while sum(me.cpu_times()[:2]) - t0 < 0.2 and time.monotonic() < deadline:
        sum(i * i for i in range(10_000))
    watch.sample()
    res = watch.end()
    assert res["cpu_seconds"] >= 0.2
    assert res["cpu_pct"] is not None and res["cpu_pct"] > 0
    assert res["rss_mb_mean"] == res["rss_mb_max"] > 1
    assert 0 < res["uss_mb_mean"] <= res["rss_mb_max"]


async def test_spawned_stops_its_child_on_exit(tmp_path: Path) -> None:
    async with spawned(["sleep", "60"], tmp_path / "sleep.log") as proc:
        assert proc.returncode is None
    assert proc.returncode == -signal.SIGTERM


async def test_terminate_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    async with spawned([sys.executable, "-c", code], tmp_path / "stubborn.log", pipes=True) as proc:
        assert proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
        t0 = time.monotonic()
        assert await terminate(proc, timeout=0.5) == -signal.SIGKILL
        assert time.monotonic() - t0 < 10
