"""All of a command's processes, found, stopped and verified gone; their orphans reaped (Linux).

A command runs as a session leader (subproc), so its process group id is its main process's pid.
Signalling that group misses three kinds of process: `nohup cmd &` once the main process has
ended on its own (nothing signals the group then), `setsid cmd &` (a session and group of its own)
and the double-forked daemon (setsid, and its parent gone). On Linux the agent finds them all:

- While commands run, the agent is a child subreaper (prctl PR_SET_CHILD_SUBREAPER):
  a command's orphans are re-parented to the agent instead of PID 1. So every process a command
  started is under its main process, in its group, or under one of the agent's re-parented
  orphans: nothing is out of reach, whatever session or group it moved to.
- Each command's environment carries SM_COMMAND_ID, which tells whose an orphan is while several
  commands run. An orphan that dropped it (`env -i`) is told by its start time: it belongs to a
  command that was running when it started, and is left alone while another such command runs.
  Without the subreaper (the prctl refused) the marker is all there is: every process is read.
- stop() sends SIGTERM to them all, SIGKILL after a grace, scans again until none is left (one
  that forked meanwhile is caught by the next scan), and reports which processes it stopped and
  which still run (one that switched to a user the agent may not signal, say).

The agent reaps its re-parented orphans (reap_orphans) and only them: never a child it started
itself (subproc.OWN_CHILDREN), whose exit status asyncio's child watcher collects by pid, and never
a child in the agent's own session, which no command's process can join.

On other systems the runner keeps to the process group (subproc.terminate_group), as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from servermanager.agent.exec.subproc import OWN_CHILDREN, OwnChildren, sigkill, terminate_group

log = logging.getLogger(__name__)

# Set in every command's environment: the command's id, so its processes can be told apart.
MARK_ENV = "SM_COMMAND_ID"
LINUX = sys.platform.startswith("linux")
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
# How often stop() looks whether what it signalled is gone.
POLL = 0.02
# SIGKILL rounds (scan, kill, wait) before whatever still runs is reported as surviving.
KILL_ROUNDS = 5
# A process's start time (clock ticks) against a command's (read just before it was admitted).
START_SLACK = 0.1
# Most survivors named in a result; the rest are counted.
MAX_NAMED = 5
_DEAD = ("Z", "X", "x")


# ---------------------------------------------------------------- the subreaper


@dataclass
class _Subreaper:
    holders: int = 0
    active: bool = False
    set_here: bool = False  # this module set it, so it clears it when the last holder goes
    warned: bool = False


_SUBREAPER = _Subreaper()


@functools.cache
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _prctl_subreaper(value: int | None) -> bool | None:
    """Set the flag (value 0 or 1) or read it (None); None if the call failed."""
    import ctypes  # only an agent that runs commands pays for ctypes

    try:
        libc = _libc()
        if value is None:
            flag = ctypes.c_int(0)
            ok = libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0
            result: bool | None = bool(flag.value) if ok else None
        else:
            ok = libc.prctl(_PR_SET_CHILD_SUBREAPER, value, 0, 0, 0) == 0
            result = True if ok else None
        if not ok:
            log.debug("prctl(child subreaper) failed: %s", os.strerror(ctypes.get_errno()))
        return result
    except (OSError, AttributeError) as exc:
        log.debug("prctl(child subreaper) is not available: %s", exc)
        return None


def acquire_subreaper() -> bool:
    """Make this process the reaper of its commands' orphans (Linux); True if it is one now."""
    st = _SUBREAPER
    if LINUX and st.holders == 0:
        already = _prctl_subreaper(None)
        if already:
            st.active, st.set_here = True, False
        elif _prctl_subreaper(1):
            st.active, st.set_here = True, True
            log.debug("child subreaper: commands' orphaned processes are re-parented to the agent")
        else:
            st.active = False
            if not st.warned:
                st.warned = True
                log.warning(
                    "could not make the agent a child subreaper: a command's process that leaves "
                    "its session and clears %s may outlive the command",
                    MARK_ENV,
                )
    st.holders += 1
    return st.active


def release_subreaper() -> None:
    """One holder fewer; the last one clears the flag this module set."""
    st = _SUBREAPER
    st.holders = max(0, st.holders - 1)
    if st.holders == 0:
        if st.set_here:
            _prctl_subreaper(0)
        st.active = st.set_here = False


def is_subreaper() -> bool:
    return _SUBREAPER.active


# ---------------------------------------------------------------- /proc


@dataclass(frozen=True)
class _Stat:
    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    start: int  # clock ticks after boot
    vsize: int  # 0 once an exiting process has released its memory

    @property
    def gone(self) -> bool:
        """Dead, or exiting: its memory released, it runs no more code (and closes its files)."""
        return self.state in _DEAD or self.vsize == 0


def _stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        rest = data[data.rindex(b")") + 2 :].split()
        return _Stat(
            pid, rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[3]), int(rest[19]), int(rest[20])
        )
    except (OSError, ValueError, IndexError):
        return None


def _all_stats() -> dict[int, _Stat]:
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            stats[st.pid] = st
    return stats


def _own_children() -> set[int]:
    """This process's children, from the kernel's per-thread lists (all of /proc without them)."""
    pids: set[int] = set()
    me = os.getpid()
    if not os.path.exists(f"/proc/{me}/task/{me}/children"):  # CONFIG_PROC_CHILDREN is off
        return {st.pid for st in _all_stats().values() if st.ppid == me}
    for tid in os.listdir(f"/proc/{me}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{me}/task/{tid}/children") as f:
            pids.update(int(p) for p in f.read().split())
    return pids


def _marker(pid: int) -> str | None:
    """The process's SM_COMMAND_ID, or None (not set, or its environment is unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return None
    key = MARK_ENV.encode() + b"="
    for item in env.split(b"\0"):
        if item.startswith(key):
            return item[len(key) :].decode("utf-8", errors="replace")
    return None


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def boot_clock() -> float:
    """Seconds since boot on the clock /proc/PID/stat start times use (monotonic elsewhere)."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()


# ---------------------------------------------------------------- reaping


def reap_orphans(own: OwnChildren = OWN_CHILDREN) -> int:
    """Collect every re-parented orphan that has exited; how many. Call it from the event loop.

    It runs in the thread that starts the agent's own children, so a child it started is either
    registered in `own` or counted as pending: it is never taken for an orphan. Children in the
    agent's own session are not a command's (a command's processes cannot join that session).
    """
    if not LINUX or own.pending:
        return 0
    me, my_sid = os.getpid(), os.getsid(0)
    reaped = 0
    for pid in _own_children():
        if pid in own.pids:
            continue
        st = _stat(pid)
        if st is None or st.state != "Z" or st.ppid != me or st.session == my_sid:
            continue
        with contextlib.suppress(ChildProcessError):
            reaped += os.waitpid(pid, os.WNOHANG)[0] == pid
    return reaped


def _exiting_orphans(own: OwnChildren) -> bool:
    """Whether one of the agent's orphans is exiting: its memory released, not yet a zombie."""
    me, my_sid = os.getpid(), os.getsid(0)
    for pid in _own_children():
        if pid in own.pids:
            continue
        st = _stat(pid)
        if (
            st is not None
            and st.ppid == me
            and st.session != my_sid
            and st.vsize == 0
            and st.state not in _DEAD
        ):
            return True
    return False


# ---------------------------------------------------------------- one command's processes


@dataclass
class Mark:
    """What tells one command's processes from another's."""

    token: str  # its SM_COMMAND_ID
    started: float  # boot_clock() before it started
    ending: bool = False  # being stopped: no longer claims orphans that lost their marker


@dataclass(frozen=True)
class Proc:
    pid: int
    name: str
    user: str
    why: str = ""  # for one that still runs: why it could not be stopped
    grouped: bool = False  # in the command's process group when last seen

    def __str__(self) -> str:
        who = f" (user {self.user})" if self.user else ""
        return f"pid {self.pid} {self.name}{who}" + (f": {self.why}" if self.why else "")


@dataclass
class Outcome:
    """What stop() did."""

    sent: int | None = None  # the last signal the running main process was sent
    stopped: list[Proc] = field(default_factory=list)  # verified gone (the main process aside)
    running: list[Proc] = field(default_factory=list)  # still running after every round
    group_only: bool = False  # not Linux: only the process group was signalled
    group_left: bool = False  # ...and it still had members afterwards

    def describe(self, *, ended: bool) -> str | None:
        """The result's words for it. `ended`: the main process ended on its own."""
        parts = []
        if self.group_only:
            if self.group_left:
                parts.append("processes of the command still ran after SIGKILL was sent to its process group")
            elif ended and self.sent is not None:
                parts.append("processes it started kept its output open; its process group was stopped")
        # After a timeout or cancel, its process group going down with it is no news; whatever
        # had left the group is. After an end of its own, whatever was left is news.
        stopped = self.stopped if ended else [p for p in self.stopped if not p.grouped]
        if stopped:
            n = len(stopped)
            names = _names(p.name for p in stopped)
            s, were = ("", "was") if n == 1 else ("es", "were")
            if ended:
                parts.append(f"{n} leftover process{s} ({names}) {were} stopped after the command ended")
            else:
                parts.append(
                    f"{n} process{s} that had left the command's process group ({names}) {were} stopped too"
                )
        if self.running:
            n = len(self.running)
            listed = "; ".join(str(p) for p in self.running[:MAX_NAMED])
            more = f"; and {n - MAX_NAMED} more" if n > MAX_NAMED else ""
            s, run = ("", "runs") if n == 1 else ("es", "run")
            parts.append(
                f"{n} process{s} of the command could not be stopped and still {run}: {listed}{more}"
            )
        return "; ".join(parts) or None


def _names(names: Iterable[str]) -> str:
    counts = Counter(names)
    return ", ".join(f"{c} {name}" if c > 1 else name for name, c in sorted(counts.items()))


class CommandTree:
    """One running command's processes: its main process, its group, its orphans, their children."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        mark: Mark,
        marks: Callable[[], Iterable[Mark]],
        own: OwnChildren = OWN_CHILDREN,
    ) -> None:
        self.proc = proc
        self.pgid = proc.pid  # a session leader: its pid is its group's id
        self.mark = mark
        self._marks = marks
        self._own = own
        self._seen: dict[int, Proc] = {}  # every process found alive, the main one aside
        self._denied: dict[int, str] = {}

    # ------------------------------------------------------------ finding them

    def _claims(self, st: _Stat, others: list[Mark]) -> bool:
        """Whether the agent's re-parented orphan `st` is this command's."""
        token = _marker(st.pid)
        if token is not None:
            return token == self.mark.token
        # It cleared its environment (or hides it from the agent): its group or start time tells.
        started = st.start / _TICKS
        if started < self.mark.started - START_SLACK:
            return False
        if st.pgrp == self.pgid:
            return True
        return not any(not m.ending and m.started - START_SLACK <= started for m in others)

    def _scan(
        self, main_alive: bool, own_pids: frozenset[int], others: list[Mark]
    ) -> dict[int, psutil.Process]:
        """Every live process of the command now (a blocking read of /proc).

        The process group counts only while the main process is unreaped: after that its id may
        be reused. Its members are reached anyway: with the subreaper as the agent's orphans or
        their children, without it by their marker.
        """
        stats = _all_stats()
        me, my_sid = os.getpid(), os.getsid(0)
        children: defaultdict[int, list[int]] = defaultdict(list)
        for st in stats.values():
            children[st.ppid].append(st.pid)
        seeds = []
        if main_alive:
            seeds = [self.pgid, *(st.pid for st in stats.values() if st.pgrp == self.pgid)]
        if is_subreaper():
            for pid in children[me]:
                st = stats[pid]
                if pid in own_pids or st.session == my_sid or st.gone:
                    continue
                if self._claims(st, others):
                    seeds.append(pid)
        else:  # orphans went to PID 1 (or another subreaper): the marker is all there is
            seeds += [
                st.pid
                for st in stats.values()
                if st.pid != me and not st.gone and _marker(st.pid) == self.mark.token
            ]
        found: dict[int, psutil.Process] = {}
        stack, visited = seeds, {me}
        while stack:
            pid = stack.pop()
            if pid in visited:
                continue
            visited.add(pid)
            seen = stats.get(pid)
            if seen is None or (pid == self.pgid and not main_alive):
                continue
            stack.extend(children[pid])
            if seen.gone:  # exiting on its own: nothing to stop, but its children may remain
                continue
            try:
                p = psutil.Process(pid)
            except psutil.Error:
                continue
            again = _stat(pid)
            if again is None or again.start != seen.start:  # gone, or its pid already reused
                continue
            found[pid] = p
            if pid != self.pgid:  # its latest name (it may have exec'd since) and group
                self._seen[pid] = _describe(p, grouped=again.pgrp == self.pgid)
        return found

    async def _find(self) -> dict[int, psutil.Process]:
        others = [m for m in self._marks() if m is not self.mark]
        main_alive = self.proc.returncode is None
        return await asyncio.to_thread(self._scan, main_alive, frozenset(self._own.pids), others)

    def _nothing_left(self) -> bool:
        """Cheap check once the main process is reaped: the agent has no live orphan at all.

        With the subreaper, whatever the command left is one of them or under one of them.
        """
        if not is_subreaper() or self.proc.returncode is None:
            return False
        me, my_sid = os.getpid(), os.getsid(0)
        for pid in _own_children():
            if pid in self._own.pids:
                continue
            st = _stat(pid)
            # An exiting one counts: its children are not re-parented yet.
            if st is not None and st.ppid == me and st.session != my_sid and st.state not in _DEAD:
                return False
        return True

    async def _reap_exiting(self, timeout: float) -> None:
        """Reap the orphans that have exited, waiting (briefly) for those still exiting."""
        deadline = time.monotonic() + timeout
        while True:
            reap_orphans(self._own)
            if not _exiting_orphans(self._own) or time.monotonic() >= deadline:
                return
            await asyncio.sleep(POLL)

    # ------------------------------------------------------------ stopping them

    def _signal(self, found: dict[int, psutil.Process], sig: int) -> None:
        # The group first, in one go (as before): a shell must not see its child die of our
        # SIGTERM before it gets its own. Also reaches whatever joined the group since the scan
        # (an unreaped leader's id is not reused).
        group = False
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)
                group = True
        for pid, p in found.items():
            in_group = pid == self.pgid or (pid in self._seen and self._seen[pid].grouped)
            if group and in_group and sig != sigkill():  # no second SIGTERM ("press again to force")
                continue
            try:
                p.send_signal(sig)  # psutil checks the pid was not reused meanwhile
            except psutil.NoSuchProcess:
                pass
            except psutil.AccessDenied:
                self._denied[pid] = "permission denied"

    async def _wait_gone(self, found: dict[int, psutil.Process], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            reap_orphans(self._own)
            alive = await asyncio.to_thread(_alive, found)
            if not alive and self.proc.returncode is None and self.pgid in found:
                alive = [self.pgid]  # a zombie until asyncio's watcher collects it
            if not alive or time.monotonic() >= deadline:
                return
            await asyncio.sleep(POLL)

    async def stop(
        self, grace: float, *, also_wait: Sequence[asyncio.Future[Any]] = (), pipes_open: bool = False
    ) -> Outcome:
        """Stop every process of the command: SIGTERM, `grace`, then SIGKILL until none is left.

        Call it when the main process has ended (to stop what it left behind) or to stop it.
        Elsewhere than on Linux: the process group only, as subproc.terminate_group does, and
        only while the main process runs or `pipes_open` (something holds its output).
        """
        if not LINUX:
            return await self._stop_group(grace, also_wait, pipes_open)
        if await asyncio.to_thread(self._nothing_left):
            await self._reap_exiting(grace)
            return Outcome()
        out = Outcome()
        found = await self._find()
        if found:
            if self.pgid in found:
                out.sent = int(signal.SIGTERM)
            self._signal(found, signal.SIGTERM)
            await self._wait_gone(found, grace)
        for _ in range(KILL_ROUNDS):
            found = await self._find()
            if not found:
                break
            if self.pgid in found:
                out.sent = sigkill()
            self._signal(found, sigkill())
            await self._wait_gone(found, grace)
        left = await self._find()
        await self._reap_exiting(grace)
        out.stopped = [p for pid, p in self._seen.items() if pid not in left]
        for pid, p in left.items():
            info = self._seen.get(pid) or _describe(p)
            why = self._denied.get(pid) or _why_alive(p)
            if pid == self.pgid:
                info = Proc(pid, f"{info.name} (the main process)", info.user)
            out.running.append(Proc(info.pid, info.name, info.user, why))
        if out.running:
            log.warning(
                "command %s: %d process(es) could not be stopped: %s",
                self.mark.token,
                len(out.running),
                "; ".join(str(p) for p in out.running[:MAX_NAMED]),
            )
        return out

    async def _stop_group(
        self, grace: float, also_wait: Sequence[asyncio.Future[Any]], pipes_open: bool
    ) -> Outcome:
        out = Outcome(group_only=True)
        if self.proc.returncode is not None and not pipes_open:
            return out
        out.sent = await terminate_group(self.proc, grace=grace, also_wait=list(also_wait))
        if sys.platform != "win32":
            try:
                os.killpg(self.pgid, 0)
                out.group_left = True
            except ProcessLookupError:
                pass
            except PermissionError:
                out.group_left = True
        return out

    def kill_now(self) -> None:
        """SIGKILL every process of the command without waiting: for a task being cancelled."""
        from servermanager.agent.exec.subproc import kill_group_now

        kill_group_now(self.proc)
        if LINUX:
            others = [m for m in self._marks() if m is not self.mark]
            with contextlib.suppress(OSError):
                found = self._scan(self.proc.returncode is None, frozenset(self._own.pids), others)
                self._signal(found, sigkill())


def _describe(p: psutil.Process, *, grouped: bool = False) -> Proc:
    try:
        name = p.name()
    except psutil.Error:
        name = "?"
    try:
        user = p.username()
    except (psutil.Error, KeyError):
        user = ""
    return Proc(p.pid, name, user, grouped=grouped)


def _alive(found: dict[int, psutil.Process]) -> list[int]:
    alive = []
    for pid, p in found.items():
        try:
            if p.is_running() and p.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
        except psutil.Error:
            alive.append(pid)
    return alive


def _why_alive(p: psutil.Process) -> str:
    try:
        status = p.status()
    except psutil.Error:
        status = ""
    if status == psutil.STATUS_DISK_SLEEP:
        return "still running after SIGKILL (in uninterruptible sleep)"
    return "still running after SIGKILL"
