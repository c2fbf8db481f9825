"""The top-processes collector: every process's CPU, memory and disk I/O read once per sample, the top N of each kept."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import psutil

from servermanager.agent.rates import RateTracker
from servermanager.common.metrics import MAX_PROC_CMD, MAX_PROC_NAME, MAX_PROC_USER, MAX_PROCS_TOP_N, ProcInfo

log = logging.getLogger(__name__)

# psutil raises these for a process that ended, or that another user owns, between the listing
# and the reading; either way that process is simply not in this sample.
_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)

# A process is known by its pid and start time: a pid reused by a new process is a new key, so
# the old one's counters are never diffed against the new one's (which would be a made-up rate).
Key = tuple[int, float]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Raw(NamedTuple):
    """One process as the scan reads it: only what the rankings need."""

    key: Key
    comm: bytes  # the kernel's short name (Linux) or b"": a changed one means the process exec'd
    cpu: float  # user + system seconds
    rss: int  # bytes
    io: tuple[int, int] | None  # read, write bytes; None where the OS does not tell (or may not)


def _read_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


class _LinuxScan:
    """Every process from /proc directly: one read of /proc/PID/stat, and of /proc/PID/io where
    readable. psutil's Process objects cost about 4 times as much CPU for the same numbers, and
    this runs every second."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self.tick = float(os.sysconf("SC_CLK_TCK"))
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.no_io: set[Key] = set()  # refused once (another user's process): not asked again

    def __call__(self) -> list[_Raw]:
        out: list[_Raw] = []
        base = self.proc
        for name in os.listdir(base):
            if not name.isdigit():
                continue
            try:
                stat = _read_file(f"{base}/{name}/stat")
                # The name is in parentheses and may itself hold spaces or ")": split after the last.
                close = stat.rindex(b")")
                f = stat[close + 2 :].split()
                # Fields 14 utime, 15 stime, 22 starttime, 24 rss of proc(5), from field 3 on here.
                key = (int(name), float(f[19]))
                raw_cpu, rss = (int(f[11]) + int(f[12])) / self.tick, int(f[21]) * self.page
                comm = stat[stat.index(b"(") + 1 : close]
            except (OSError, ValueError, IndexError):
                continue  # ended between the listing and the read
            io = None
            if key not in self.no_io:
                try:
                    lines = _read_file(f"{base}/{name}/io").split(b"\n")
                    # read_bytes and write_bytes: the storage layer's, not the page cache's rchar/wchar.
                    io = (int(lines[4].split()[1]), int(lines[5].split()[1]))
                except PermissionError:
                    self.no_io.add(key)
                except (OSError, ValueError, IndexError):
                    pass
            out.append(_Raw(key, comm, raw_cpu, rss, io))
        return out


class _PsutilScan:
    """Every process through psutil, where there is no /proc to read (macOS, Windows, BSD)."""

    def __init__(self) -> None:
        self.no_io: set[Key] = set()

    def __call__(self) -> list[_Raw]:
        out: list[_Raw] = []
        for proc in psutil.process_iter():
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    t = proc.cpu_times()
                    rss = int(proc.memory_info().rss)
                    io = None
                    if key not in self.no_io:
                        try:
                            c = proc.io_counters()  # not on macOS: AttributeError
                            io = (int(c.read_bytes), int(c.write_bytes))
                        except (psutil.AccessDenied, AttributeError, NotImplementedError):
                            self.no_io.add(key)
            except _GONE:
                continue
            out.append(_Raw(key, b"", t.user + t.system, rss, io))
        return out


class _Reading(NamedTuple):
    raw: _Raw
    cpu: float | None  # percent of the whole machine; None on first sight
    io: float | None  # read + write bytes/s, for the ranking; None where unknown
    read_bps: float | None
    write_bps: float | None


class ProcessCollector:
    """The `top` processes by CPU, by resident memory and by disk I/O, as one deduplicated list.

    One pass over every process per call, reading only what the rankings need (CPU time, RSS, I/O
    counters); name, owner and command line are read only for the few that make a list, and kept
    while the process stays the same. Rates are per process key and come from the shared
    RateTracker, so the first sight of a process has no CPU % or I/O rate rather than a guess.
    `cmdline=False` never reads command lines at all. `every` (seconds) spaces the lists out:
    samples in between carry none.
    """

    def __init__(
        self,
        top: int = 10,
        cmdline: bool = True,
        clock: Callable[[], float] = time.monotonic,
        *,
        every: float = 0.0,
    ) -> None:
        if not 1 <= top <= MAX_PROCS_TOP_N:
            raise ValueError(f"top must be 1 to {MAX_PROCS_TOP_N}, got {top}")
        self.top = top
        self.cmdline = cmdline
        self.every = every
        self._rates = RateTracker(clock)
        self._ncpu = psutil.cpu_count() or 1
        self._scan: _LinuxScan | _PsutilScan = (
            _LinuxScan()
            if sys.platform.startswith("linux") and os.path.isdir("/proc/self")
            else _PsutilScan()
        )
        # Name, owner and command line of the processes that made a list, by key, with the comm
        # they were read under: a process that stays on top is not looked up again every second.
        self._names: dict[Key, tuple[bytes, str, str | None, str | None]] = {}
        self._last: float | None = None

    def collect(self) -> list[ProcInfo]:
        """The top list now; empty when `every` has not passed since the last one."""
        now = self._rates.now()
        if self._last is not None and now - self._last < self.every * 0.9:
            return []  # 0.9: a tick that comes a little early must not skip a whole period
        self._last = now
        readings = [self._rated(raw, now) for raw in self._scan()]
        # Forget processes that ended, so a churning host (short-lived jobs) cannot grow memory.
        keys = {r.raw.key for r in readings}
        self._rates.retain(k for key in keys for k in ((key, "cpu"), (key, "r"), (key, "w")))
        self._scan.no_io &= keys
        top = self._top(readings)
        for gone in [k for k in self._names if k not in keys]:
            del self._names[gone]
        return top

    def _rated(self, raw: _Raw, now: float) -> _Reading:
        busy = self._rates.rate((raw.key, "cpu"), raw.cpu, now)
        cpu = None if busy is None else min(100.0, busy * 100.0 / self._ncpu)
        read = write = io = None
        if raw.io is not None:
            read = self._rates.rate((raw.key, "r"), raw.io[0], now)
            write = self._rates.rate((raw.key, "w"), raw.io[1], now)
            if read is not None and write is not None:
                io = read + write
        return _Reading(raw, cpu, io, read, write)

    def _top(self, readings: list[_Reading]) -> list[ProcInfo]:
        n = self.top
        # Idle processes are left out of the CPU and I/O rankings: a list padded with zeros says
        # nothing and costs storage every second. Memory always has its top N.
        by_cpu = sorted((r for r in readings if r.cpu), key=lambda r: r.cpu or 0.0, reverse=True)[:n]
        by_mem = sorted(readings, key=lambda r: r.raw.rss, reverse=True)[:n]
        by_io = sorted((r for r in readings if r.io), key=lambda r: r.io or 0.0, reverse=True)[:n]
        out: list[ProcInfo] = []
        pids: set[int] = set()
        for r in (*by_cpu, *by_mem, *by_io):
            if r.raw.key[0] not in pids:
                pids.add(r.raw.key[0])
                out.append(self._info(r))
        return out

    def _lookup(self, raw: _Raw) -> tuple[str, str | None, str | None]:
        cached = self._names.get(raw.key)
        if cached is not None and cached[0] == raw.comm and raw.comm:
            return cached[1], cached[2], cached[3]
        pid = raw.key[0]
        name = user = cmd = None
        try:
            proc = psutil.Process(pid)
            name = proc.name()
            user = proc.username()
            if self.cmdline:
                cmd = " ".join(proc.cmdline()) or None
        except (*_GONE, KeyError):
            pass  # ended meanwhile, or (KeyError) a uid with no name in the user database
        name = _cut(name or raw.comm.decode(errors="replace") or f"pid {pid}", MAX_PROC_NAME)
        user = _cut(user, MAX_PROC_USER) if user else None
        cmd = _cut(cmd, MAX_PROC_CMD) if cmd else None
        self._names[raw.key] = (raw.comm, name, user, cmd)
        return name, user, cmd

    def _info(self, r: _Reading) -> ProcInfo:
        name, user, cmd = self._lookup(r.raw)
        return ProcInfo(
            pid=r.raw.key[0],
            name=name,
            cpu_pct=None if r.cpu is None else round(r.cpu, 1),
            rss=r.raw.rss,
            user=user,
            read_bps=None if r.read_bps is None else round(r.read_bps),
            write_bps=None if r.write_bps is None else round(r.write_bps),
            cmd=cmd,
        )
