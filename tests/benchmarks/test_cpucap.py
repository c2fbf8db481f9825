"""The benchmarks' CPU cap writes the kernel's cgroup files as each cgroup version wants them."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cpucap import PERIOD_US, CapError, CpuCap, quota_us


def _v1(root: Path) -> Path:
    cpu = root / "cpu"
    cpu.mkdir(parents=True)
    (cpu / "cpu.cfs_quota_us").write_text("-1")
    (cpu / "cgroup.procs").write_text("")
    return cpu


def _v2(root: Path, controllers: str = "cpu io memory") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu io memory")
    (root / "cgroup.subtree_control").write_text(controllers)
    (root / "cgroup.procs").write_text("")
    return root


def test_quota_is_the_share_of_the_period_and_out_of_range_is_refused() -> None:
    assert quota_us(40) == 4000
    assert quota_us(40, 100_000) == 40_000
    assert quota_us(5, 10_000) == 1000  # the kernel's minimum quota is 1 ms
    with pytest.raises(CapError, match="between 1 and"):
        quota_us(0)
    with pytest.raises(CapError, match="between 1 and"):
        quota_us(10_000)


def test_v1_sets_period_and_quota_and_moves_a_process_in(tmp_path: Path) -> None:
    cpu = _v1(tmp_path)
    cap = CpuCap("bench", 40, root=tmp_path)
    group = cpu / "bench"
    assert (group / "cpu.cfs_period_us").read_text() == str(PERIOD_US)
    assert (group / "cpu.cfs_quota_us").read_text() == "4000"
    cap.add(1234)
    assert (group / "cgroup.procs").read_text() == "1234"


def test_v2_writes_cpu_max_and_turns_the_controller_on_when_off(tmp_path: Path) -> None:
    root = _v2(tmp_path, controllers="io memory")
    CpuCap("bench", 25, root=root)
    assert (root / "bench" / "cpu.max").read_text() == f"2500 {PERIOD_US}"
    assert (root / "cgroup.subtree_control").read_text() == "+cpu"


def test_throttled_reads_both_versions_units(tmp_path: Path) -> None:
    _v1(tmp_path / "a")
    v1 = CpuCap("g", 40, root=tmp_path / "a")
    (v1.path / "cpu.stat").write_text("nr_periods 200\nnr_throttled 50\nthrottled_time 1500000000\n")
    assert v1.throttled() == {"periods": 200.0, "throttled_periods": 50.0, "throttled_s": 1.5}
    v2 = CpuCap("g", 40, root=_v2(tmp_path / "b"))
    (v2.path / "cpu.stat").write_text("usage_usec 9\nnr_periods 10\nnr_throttled 4\nthrottled_usec 250000\n")
    assert v2.throttled() == {"periods": 10.0, "throttled_periods": 4.0, "throttled_s": 0.25}


def test_close_moves_what_is_left_to_the_parent(tmp_path: Path) -> None:
    cpu = _v1(tmp_path)
    cap = CpuCap("g", 40, root=tmp_path)
    cap.add(77)
    cap.close()
    assert (cpu / "cgroup.procs").read_text() == "77"


def test_no_cpu_controller_or_no_write_access_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CapError, match="no cgroup CPU controller"):
        CpuCap("g", 40, root=tmp_path)
    cpu = _v1(tmp_path)
    (cpu / "bench").write_text("a file where the group would go")
    with pytest.raises(CapError, match="cannot set a CPU cap in"):
        CpuCap("bench", 40, root=tmp_path)
