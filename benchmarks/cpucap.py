"""Equal CPU slices for the cores a benchmark compares, through the kernel's cgroup CPU quota.

On a 2-CPU machine one core, two cores, PostgreSQL, Redis and the simulated fleet all share the same
two CPUs, so "two cores hold N times the agents of one" cannot be measured by letting each core take
what it can: the machine runs out first. Capping each core at the same share of one CPU (say 40 %)
measures what the issue means instead, each core with a CPU of its own scaled down, as long as the
machine keeps spare CPU for everything else (the scale part records how busy it was).

cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us`) are both handled. It needs write access to the
cgroup tree (root, or a delegated subtree); without it `CpuCap` raises CapError with the reason.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The quota's period. The kernel refills a capped group's quota once per period, and a group that
# spent it waits for the next: 10 ms keeps that wait far below the 100 ms push p99 the runs judge,
# where the default 100 ms period would stall a capped core for up to 60 ms at a time.
PERIOD_US = 10_000


class CapError(RuntimeError):
    """The cap could not be set up; the message says why (no cgroup tree, no write access)."""


def _v2(root: Path) -> bool:
    return (root / "cgroup.controllers").is_file()


def quota_us(pct: float, period_us: int = PERIOD_US) -> int:
    """The quota for `pct` % of one CPU per period (the kernel's minimum is 1 ms)."""
    if not 1 <= pct <= 100 * (os.cpu_count() or 1):
        raise CapError(
            f"a CPU cap must be between 1 and {100 * (os.cpu_count() or 1)} % of one CPU, not {pct:g}"
        )
    return max(1000, round(period_us * pct / 100))


class CpuCap:
    """One cgroup holding processes to `pct` % of one CPU together; `add` moves a process in (all
    its threads), `close` removes the group once its processes have exited."""

    def __init__(self, name: str, pct: float, root: Path = CGROUP_ROOT, period_us: int = PERIOD_US) -> None:
        self.pct = pct
        quota = quota_us(pct, period_us)
        if _v2(root):
            self.path = root / name
            files = {"cpu.max": f"{quota} {period_us}"}
        elif (root / "cpu" / "cpu.cfs_quota_us").is_file():
            self.path = root / "cpu" / name
            files = {"cpu.cfs_period_us": str(period_us), "cpu.cfs_quota_us": str(quota)}
        else:
            raise CapError(f"no cgroup CPU controller under {root} (neither v2 cpu.max nor v1 cpu/)")
        try:
            if _v2(root):
                # The cpu controller must be on for the root's children (it usually is).
                ctl = root / "cgroup.subtree_control"
                if "cpu" not in ctl.read_text().split():
                    ctl.write_text("+cpu")
            self.path.mkdir(exist_ok=True)
            for file, value in files.items():
                (self.path / file).write_text(value)
        except OSError as exc:
            raise CapError(f"cannot set a CPU cap in {self.path}: {exc.strerror or exc}") from None

    def add(self, pid: int) -> None:
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            raise CapError(f"cannot move process {pid} into {self.path}: {exc.strerror or exc}") from None

    def throttled(self) -> dict[str, float]:
        """How often the group hit its quota so far: periods, periods throttled, seconds throttled."""
        stat = {}
        with contextlib.suppress(OSError):
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                stat[key] = float(value)
        periods = stat.get("nr_periods", 0.0)
        throttled = stat.get("nr_throttled", 0.0)
        # v1 says throttled_time in ns, v2 throttled_usec in µs.
        seconds = (
            stat["throttled_usec"] / 1e6
            if "throttled_usec" in stat
            else stat.get("throttled_time", 0.0) / 1e9
        )
        return {"periods": periods, "throttled_periods": throttled, "throttled_s": round(seconds, 3)}

    def close(self) -> None:
        """Move what is still inside back to the parent group, then remove the group."""
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):  # it may have exited meanwhile
                    (self.path.parent / "cgroup.procs").write_text(pid)
            self.path.rmdir()
