"""Incident snapshots: the top processes (and, if allowed, the journal) when the core asks.

Read-only and bounded: processes through psutil (no command runs for them), the journal through
`journalctl` only where `[incident] journal` allows it, each list, name and line cut to the limits
of common.incidents. The measurement runs in a thread, off the event loop. One snapshot at a time,
and at most one per MIN_GAP seconds: a core that asks more often (a flapping rule, or a hostile
core) gets a refusal with the reason, not a busy agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from servermanager.agent.settings import IncidentSettings
from servermanager.common.incidents import (
    MAX_CMD,
    MAX_JOURNAL_BYTES,
    MAX_LINE,
    MAX_NAME,
    MAX_NOTE,
    MAX_TOP,
    MAX_USER,
    IncidentSnapshot,
    ProcessInfo,
)
from servermanager.common.protocol import Incident, IncidentRequest

log = logging.getLogger(__name__)

WINDOW = 0.4  # seconds between the two readings that CPU % and I/O rates are measured over
MIN_GAP = 10.0  # seconds from the start of one snapshot to the next one accepted
JOURNAL_TIMEOUT = 5.0  # seconds journalctl may take
DISABLED = "snapshots are off in this agent's config ([incident] enabled = false)"
BUSY = "a snapshot is being taken already; one at a time"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _Reading:
    proc: psutil.Process
    at: float  # monotonic time of the reading
    cpu: float  # user + system seconds
    rss: int
    io: tuple[int, int] | None  # read, write bytes; None where the OS does not tell


def _read(proc: psutil.Process) -> _Reading | None:
    try:
        with proc.oneshot():
            t = proc.cpu_times()
            rss = proc.memory_info().rss
            try:
                c = proc.io_counters()  # not on macOS: AttributeError
                io: tuple[int, int] | None = (c.read_bytes, c.write_bytes)
            except (psutil.AccessDenied, AttributeError, NotImplementedError):
                io = None  # another user's process, unless the agent runs as root
            return _Reading(proc, time.monotonic(), t.user + t.system, rss, io)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _info(before: _Reading, after: _Reading, ncpu: int, cmdline: bool) -> ProcessInfo:
    proc = after.proc
    elapsed = max(after.at - before.at, 1e-3)
    name = user = cmd = None
    try:
        name = proc.name()
        user = proc.username()
        if cmdline:
            cmd = " ".join(proc.cmdline()) or None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, KeyError):
        pass  # gone meanwhile, or (KeyError) a uid with no name in the user database
    read_bps = write_bps = None
    if before.io is not None and after.io is not None:
        read_bps = round(max(0, after.io[0] - before.io[0]) / elapsed)
        write_bps = round(max(0, after.io[1] - before.io[1]) / elapsed)
    return ProcessInfo(
        pid=proc.pid,
        name=_cut(name or f"pid {proc.pid}", MAX_NAME),
        cpu_pct=round(100.0 * max(0.0, after.cpu - before.cpu) / elapsed / ncpu, 1),
        rss=after.rss,
        user=_cut(user, MAX_USER) if user else None,
        read_bps=read_bps,
        write_bps=write_bps,
        cmd=_cut(cmd, MAX_CMD) if cmd else None,
    )


def top_processes(
    top: int, cmdline: bool = False, window: float = WINDOW
) -> tuple[list[ProcessInfo], list[ProcessInfo]]:
    """The `top` busiest processes by CPU and the `top` largest by RSS, read twice `window` apart.

    CPU % is of the whole machine (all CPUs), as the cpu_pct metric; processes that start or end
    within the window are left out. Names, users and command lines are read only for the processes
    that make a list.
    """
    top = max(1, min(top, MAX_TOP))
    first = [r for r in map(_read, psutil.process_iter()) if r is not None]
    time.sleep(window)
    pairs = [(b, a) for b in first if (a := _read(b.proc)) is not None]
    ncpu = psutil.cpu_count() or 1

    def cpu_rate(pair: tuple[_Reading, _Reading]) -> float:
        b, a = pair
        return (a.cpu - b.cpu) / max(a.at - b.at, 1e-3)

    by_cpu = sorted(pairs, key=lambda p: (cpu_rate(p), p[1].rss), reverse=True)[:top]
    by_rss = sorted(pairs, key=lambda p: p[1].rss, reverse=True)[:top]
    made: dict[int, ProcessInfo] = {}

    def once(pair: tuple[_Reading, _Reading]) -> ProcessInfo:
        pid = pair[1].proc.pid
        if pid not in made:
            made[pid] = _info(*pair, ncpu, cmdline)
        return made[pid]

    return [once(p) for p in by_cpu], [once(p) for p in by_rss]


def read_journal(lines: int, since: float, timeout: float = JOURNAL_TIMEOUT) -> tuple[list[str], str | None]:
    """The last `lines` lines of the system journal from the last `since` seconds, oldest first,
    each cut to MAX_LINE characters and all together to MAX_JOURNAL_BYTES; and a note on what
    went wrong, if anything did (no journalctl, no permission, too slow)."""
    exe = shutil.which("journalctl")
    if exe is None:
        return [], "journal: journalctl not found on this host"
    minutes = max(1, round(since / 60))
    argv = [exe, f"--since=-{minutes}min", "-n", str(lines), "-o", "short-iso", "--no-pager", "-q"]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""},
        )
    except subprocess.TimeoutExpired:
        return [], f"journal: journalctl took longer than {timeout:g}s"
    except OSError as exc:
        return [], f"journal: could not run journalctl: {exc.strerror or exc}"
    out = done.stdout.decode("utf-8", "replace").splitlines()[-lines:]
    kept: list[str] = []
    size = 0
    for line in reversed(out):  # the newest lines are the ones to keep
        line = _cut(line, MAX_LINE)
        size += len(line.encode()) + 1
        if size > MAX_JOURNAL_BYTES:
            break
        kept.append(line)
    kept.reverse()
    note = None
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        note = f"journal: journalctl exited with {done.returncode}" + (f": {err[-1]}" if err else "")
    elif len(kept) < len(out):
        note = f"journal: only the last {len(kept)} of {len(out)} lines fit"
    elif not out:
        note = f"journal: nothing in the last {minutes} min (or nothing this agent may read)"
    return kept, note


def take(settings: IncidentSettings, lookback: float | None, window: float = WINDOW) -> IncidentSnapshot:
    """One snapshot, blocking: the top processes, then the journal if allowed."""
    by_cpu, by_rss = top_processes(settings.top, settings.cmdline, window)
    journal: list[str] | None = None
    notes: list[str] = []
    if settings.journal:
        since = (
            settings.journal_since if lookback is None else min(max(lookback, 60.0), settings.journal_since)
        )
        journal, note = read_journal(settings.journal_lines, since)
        if note:
            notes.append(note)
    return IncidentSnapshot(
        ts=time.time(),
        window=window,
        top_cpu=by_cpu,
        top_memory=by_rss,
        journal=journal,
        note=_cut("; ".join(notes), MAX_NOTE) if notes else None,
    )


class Snapshots:
    """Answers the core's `incident_request` frames: a snapshot each, one at a time, rate-limited."""

    def __init__(
        self,
        settings: IncidentSettings,
        *,
        window: float = WINDOW,
        min_gap: float = MIN_GAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.window = window
        self.min_gap = min_gap
        self.clock = clock
        self._busy = False
        self._last: float | None = None  # clock() when the last accepted snapshot started
        self.taken = 0
        self.refused = 0

    def _refusal(self) -> str | None:
        if not self.settings.enabled:
            return DISABLED
        if self._busy:
            return BUSY
        now = self.clock()
        if self._last is not None and now - self._last < self.min_gap:
            return (
                f"asked too often: at most one snapshot every {self.min_gap:g}s "
                f"(the last began {now - self._last:.1f}s ago)"
            )
        return None

    async def answer(self, req: IncidentRequest) -> Incident:
        """The `incident` frame that answers `req`; never raises (a failure is its `error`)."""
        why = self._refusal()
        if why is not None:
            self.refused += 1
            log.info("snapshot %s refused: %s", req.request_id, why)
            return Incident(request_id=req.request_id, error=why)
        self._busy = True
        self._last = self.clock()
        try:
            snap = await asyncio.to_thread(take, self.settings, req.lookback, self.window)
        except Exception as exc:
            log.exception("snapshot %s failed", req.request_id)
            return Incident(request_id=req.request_id, error=_cut(f"the snapshot failed: {exc!r}", MAX_NOTE))
        finally:
            self._busy = False
        self.taken += 1
        log.info(
            "snapshot %s taken: %d process(es) by CPU, %d by memory%s",
            req.request_id,
            len(snap.top_cpu),
            len(snap.top_memory),
            f", {len(snap.journal)} journal line(s)" if snap.journal is not None else "",
        )
        return Incident(request_id=req.request_id, snapshot=snap)
