"""The top-processes collector: every process's CPU, memory and disk I/O read once per sample, the top N of each kept."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable

import psutil

from servermanager.agent.rates import RateTracker
from servermanager.common.metrics import MAX_PROC_CMD, MAX_PROC_NAME, MAX_PROC_USER, MAX_PROCS_TOP_N, ProcInfo

log = logging.getLogger(__name__)

# psutil raises these for a process that ended, or that another user owns, between the listing
# and the reading; either way that process is simply not in this sample.
_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)

# The flag of a kernel thread in /proc/PID/stat (include/linux/sched.h).
PF_KTHREAD = 0x00200000

# A process is known by its pid and start time: a pid reused by a new process is a new key, so
# the old one's counters are never diffed against the new one's (which would be a made-up rate).
Key = tuple[int, float]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# One process as a scan reads it, only what the rankings need: its key; the kernel's short name
# (Linux) or b"" (a changed one means the process exec'd); CPU time in the scan's `cpu_unit`;
# resident bytes; read and write bytes (None where the OS does not tell, or may not).
Raw = tuple[Key, bytes, float, int, int | None, int | None]


def _read_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)


def fd_budget() -> int:
    """How many descriptors the scan may keep open: a quarter of the soft limit, at most 4,096,
    so the agent's sockets, spool and plugins always have room (the rest is read the slow way)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 0
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(0, min(4096, soft // 4))


class _LinuxScan:
    """Every process from /proc directly: /proc/PID/stat, and /proc/PID/io where readable
    (not for kernel threads).

    Both files stay open while their process lives and are read again with one pread each
    (the kernel writes them afresh on every read from offset 0): a third of the system calls of
    open, read and close, and psutil's Process objects cost about 4 times as much CPU again. A
    kept descriptor belongs to its process: once it ends, the read fails (ESRCH) and a new
    process that gets the pid is opened anew. At most `budget` descriptors are kept; processes
    past it (counted over every scan of the process) are read with open, read and close.
    """

    cpu_unit: float  # seconds per clock tick
    # Descriptors kept by every scan of this process (the open-files limit is the process's):
    # several collectors in one process (tests, embedded agents) share one budget.
    kept_in_process = 0

    def __init__(self, proc: str = "/proc", budget: int | None = None) -> None:
        self.proc = proc
        self.cpu_unit = 1.0 / os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.no_io: set[Key] = set()  # refused once (another user's process): not asked again
        self.count = 0  # processes seen by the last scan
        self.budget = fd_budget() if budget is None else budget
        self._open: dict[int, list[int]] = {}  # pid -> [stat fd, io fd or -1]
        self._used = 0  # descriptors in _open

    def _stat(self, pid: int, name: str) -> bytes:
        """/proc/PID/stat, through a kept descriptor where there is one (or room for one)."""
        fds = self._open.get(pid)
        if fds is not None:
            try:
                return os.pread(fds[0], 4096, 0)
            except OSError:
                self._forget(pid)  # ended (ESRCH); the pid may already be a new process's
        path = f"{self.proc}/{name}/stat"
        if _LinuxScan.kept_in_process + 2 > self.budget:
            return _read_file(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            data = os.pread(fd, 4096, 0)
        except OSError:
            os.close(fd)
            raise
        self._open[pid] = [fd, -2]  # -2: io not opened yet
        self._keep(1)
        return data

    def _io(self, pid: int, name: str, key: Key) -> tuple[int, int] | None:
        fds = self._open.get(pid)
        if fds is not None and fds[1] == -1:
            return None  # failed before through this descriptor
        try:
            if fds is None:
                data = _read_file(f"{self.proc}/{name}/io")
            else:
                if fds[1] == -2:
                    fds[1] = os.open(f"{self.proc}/{name}/io", os.O_RDONLY)
                    self._keep(1)
                data = os.pread(fds[1], 4096, 0)
            lines = data.split(b"\n")
            # read_bytes and write_bytes: the storage layer's, not the page cache's rchar/wchar.
            return int(lines[4].split()[1]), int(lines[5].split()[1])
        except PermissionError:
            self.no_io.add(key)
        except (OSError, ValueError, IndexError):
            pass
        if fds is not None and fds[1] >= 0:
            _close(fds[1])
            self._keep(-1)
        if fds is not None:
            fds[1] = -1  # not asked again through this descriptor
        return None

    def _keep(self, n: int) -> None:
        self._used += n
        _LinuxScan.kept_in_process += n

    def _forget(self, pid: int) -> None:
        fds = self._open.pop(pid)
        for fd in fds:
            if fd >= 0:
                _close(fd)
                self._keep(-1)

    def __call__(self) -> list[Raw]:
        out: list[Raw] = []
        add = out.append
        page = self.page
        no_io = self.no_io
        kept = self._open
        pread = os.pread
        seen: list[int] = []
        for name in os.listdir(self.proc):
            if not name.isdigit():
                continue
            pid = int(name)
            seen.append(pid)
            fds = kept.get(pid)
            try:
                # The common case inline (both files kept open, one pread each): it runs for every
                # process every second. Anything else goes through _stat and _io.
                stat = self._stat(pid, name) if fds is None else pread(fds[0], 4096, 0)
            except OSError:
                try:
                    stat = self._stat(pid, name)
                except OSError:
                    continue  # ended between the listing and the read
            try:
                # The name is in parentheses and may itself hold spaces or ")": split after the last.
                close = stat.rindex(b")")
                f = stat[close + 2 :].split(None, 22)
                # Fields 9 flags, 14 utime, 15 stime, 22 starttime, 24 rss of proc(5), from field 3 on here.
                key = (pid, float(f[19]))
                ticks, rss = int(f[11]) + int(f[12]), int(f[21]) * page
                kernel = int(f[6]) & PF_KTHREAD
            except (ValueError, IndexError):
                continue
            comm = stat[stat.index(b"(") + 1 : close]
            if kernel or key in no_io:
                # A kernel thread's I/O is not read: what its writeback and journal threads write
                # was counted already, to the process that dirtied the pages; and they are half
                # of a host's processes, so this halves the files read every second.
                add((key, comm, ticks, rss, None, None))
                continue
            fds = kept.get(pid)
            if fds is not None and fds[1] >= 0:
                try:
                    lines = pread(fds[1], 4096, 0).split(b"\n", 6)
                    # read_bytes and write_bytes: the storage layer's, not the page cache's rchar/wchar.
                    add((key, comm, ticks, rss, int(lines[4][12:]), int(lines[5][13:])))
                    continue
                except (OSError, ValueError, IndexError):
                    pass  # _io below says why, and stops asking if it must
            io = self._io(pid, name, key)
            if io is None:
                add((key, comm, ticks, rss, None, None))
            else:
                add((key, comm, ticks, rss, io[0], io[1]))
        self.count = len(seen)
        alive = set(seen)
        for pid in [p for p in kept if p not in alive]:
            self._forget(pid)
        return out

    def close(self) -> None:
        for pid in list(self._open):
            self._forget(pid)


class _PsutilScan:
    """Every process through psutil, where there is no /proc to read (macOS, Windows, BSD)."""

    cpu_unit = 1.0  # psutil gives seconds

    def __init__(self) -> None:
        self.no_io: set[Key] = set()
        self.count = 0

    def __call__(self) -> list[Raw]:
        out: list[Raw] = []
        count = 0
        for proc in psutil.process_iter():
            count += 1
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    t = proc.cpu_times()
                    rss = int(proc.memory_info().rss)
                    rd = wr = None
                    if key not in self.no_io:
                        try:
                            c = proc.io_counters()  # not on macOS: AttributeError
                            rd, wr = int(c.read_bytes), int(c.write_bytes)
                        except (psutil.AccessDenied, AttributeError, NotImplementedError):
                            self.no_io.add(key)
            except _GONE:
                continue
            out.append((key, b"", t.user + t.system, rss, rd, wr))
        self.count = count
        return out

    def close(self) -> None:
        pass


# A process of one scan with its rates: (raw, CPU % of the whole machine or None on first sight,
# read + write bytes/s for the ranking or None, read bytes/s, write bytes/s).
_Reading = tuple[Raw, float | None, float | None, float | None, float | None]


def _by_cpu(r: _Reading) -> float:
    return r[1] or 0.0


def _by_rss(r: _Reading) -> int:
    return r[0][3]


def _by_io(r: _Reading) -> float:
    return r[2] or 0.0


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

    @property
    def count(self) -> int | None:
        """How many processes the last list's scan saw (what psutil.pids() would count), if any."""
        return self._scan.count if self._last is not None else None

    def collect(self) -> list[ProcInfo]:
        """The top list now; empty when `every` has not passed since the last one."""
        now = self._rates.now()
        if self._last is not None and now - self._last < self.every * 0.9:
            return []  # 0.9: a tick that comes a little early must not skip a whole period
        self._last = now
        rates = self._rates.rates
        scale = 100.0 * self._scan.cpu_unit / self._ncpu
        readings: list[_Reading] = []
        add = readings.append
        # One pass, one rate lookup per process (its CPU time and both I/O counters together).
        for raw in self._scan():
            r = rates(raw[0], (raw[2], raw[4], raw[5]), now)
            if r is None:
                add((raw, None, None, None, None))
                continue
            busy, read, write = r
            cpu = None if busy is None else min(100.0, busy * scale)
            io = None if read is None or write is None else read + write
            add((raw, cpu, io, read, write))
        # Forget processes that ended, so a churning host (short-lived jobs) cannot grow memory.
        keys = {r[0][0] for r in readings}
        self._rates.retain(keys)
        self._scan.no_io &= keys
        top = self._top(readings)
        for gone in [k for k in self._names if k not in keys]:
            del self._names[gone]
        return top

    def close(self) -> None:
        """Close the descriptors the scan keeps open (also done when the collector is collected)."""
        self._scan.close()

    def __del__(self) -> None:
        scan = getattr(self, "_scan", None)
        if scan is not None:
            scan.close()

    def _top(self, readings: list[_Reading]) -> list[ProcInfo]:
        n = self.top
        # Idle processes are left out of the CPU and I/O rankings: a list padded with zeros says
        # nothing and costs storage every second. Memory always has its top N.
        by_cpu = sorted((r for r in readings if r[1]), key=_by_cpu, reverse=True)[:n]
        by_mem = sorted(readings, key=_by_rss, reverse=True)[:n]
        by_io = sorted((r for r in readings if r[2]), key=_by_io, reverse=True)[:n]
        out: list[ProcInfo] = []
        pids: set[int] = set()
        for r in (*by_cpu, *by_mem, *by_io):
            pid = r[0][0][0]
            if pid not in pids:
                pids.add(pid)
                out.append(self._info(r))
        return out

    def _lookup(self, raw: Raw) -> tuple[str, str | None, str | None]:
        key, comm = raw[0], raw[1]
        cached = self._names.get(key)
        if cached is not None and cached[0] == comm and comm:
            return cached[1], cached[2], cached[3]
        pid = key[0]
        name = user = cmd = None
        try:
            proc = psutil.Process(pid)
            name = proc.name()
            user = proc.username()
            if self.cmdline:
                cmd = " ".join(proc.cmdline()) or None
        except (*_GONE, KeyError):
            pass  # ended meanwhile, or (KeyError) a uid with no name in the user database
        name = _cut(name or comm.decode(errors="replace") or f"pid {pid}", MAX_PROC_NAME)
        user = _cut(user, MAX_PROC_USER) if user else None
        cmd = _cut(cmd, MAX_PROC_CMD) if cmd else None
        self._names[key] = (comm, name, user, cmd)
        return name, user, cmd

    def _info(self, r: _Reading) -> ProcInfo:
        raw, cpu, _io, read, write = r
        name, user, cmd = self._lookup(raw)
        return ProcInfo(
            pid=raw[0][0],
            name=name,
            cpu_pct=None if cpu is None else round(cpu, 1),
            rss=raw[3],
            user=user,
            read_bps=None if read is None else round(read),
            write_bps=None if write is None else round(write),
            cmd=cmd,
        )
