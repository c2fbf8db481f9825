"""Child processes the agent starts for the core: each in its own process group, killed as a group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# SIGTERM first, then SIGKILL after this long: enough for a tidy exit, short enough for an operator.
KILL_GRACE = 2.0
# How often wait_exit() looks at the leader while its pipes are still open.
EXIT_POLL = 0.05
# A tool's own output (systemctl list-units, sc query) kept at most; the rest is cut off.
MAX_TOOL_OUTPUT = 8 << 20
# A tool's complaint kept for the operator; more is noise in a result frame.
MAX_MESSAGE = 4000


@dataclass
class OwnChildren:
    """The processes this module and the runner started themselves, until their exit is collected.

    With the agent as a child subreaper (exec.tree), the agent's children are of two kinds: those
    it started, whose exit status asyncio's child watcher collects, and a command's orphans that
    the kernel re-parented to it, which exec.tree reaps. This registry tells them apart: tree never
    reaps a pid in `pids`, nor anything while a start is `pending` (forked, not yet registered).
    A child in the agent's own session (subprocess.run of journalctl, say) is never taken for an
    orphan; one started in a new session anywhere else in the agent must be started through here.
    """

    pids: set[int] = field(default_factory=set)
    pending: int = 0

    async def spawn(
        self, start: Callable[[], Awaitable[asyncio.subprocess.Process]]
    ) -> asyncio.subprocess.Process:
        self.pending += 1
        try:
            proc = await start()
            self.pids.add(proc.pid)
        finally:
            self.pending -= 1
        return proc

    def release(self, proc: asyncio.subprocess.Process) -> None:
        """Forget `proc` once asyncio has collected its exit (a pid still unreaped stays listed)."""
        if proc.returncode is not None:
            self.pids.discard(proc.pid)


OWN_CHILDREN = OwnChildren()


def new_group_kwargs() -> dict[str, Any]:
    """Popen arguments that put the child in a new process group (a new session on POSIX)."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def signal_group(proc: asyncio.subprocess.Process, sig: int) -> bool:
    """Send sig to the child's whole process group; False if nothing was left to signal.

    The child is a session leader (start_new_session), so its pid is the group id.
    """
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        try:
            if sig == signal.SIGTERM:
                os.kill(proc.pid, signal.CTRL_BREAK_EVENT)
            else:
                subprocess.run(
                    ["taskkill", "/F", "/T", "/PID", str(proc.pid)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=10,
                    check=False,
                )
                if proc.returncode is None:
                    proc.kill()
        except (OSError, subprocess.SubprocessError):
            return False
        return True
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member switched to another user (setuid program): signal what we still can.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, sig)
    return True


def sigkill() -> int:
    return int(getattr(signal, "SIGKILL", signal.SIGTERM))


async def wait_exit(proc: asyncio.subprocess.Process, timeout: float | None = None) -> int | None:
    """The leader's exit status once it has exited (None if `timeout` passed first).

    Unlike proc.wait(), which also waits for every pipe to close, this returns as soon as the
    leader itself is gone, even while a child it left behind still holds stdout open.
    """
    waiter = asyncio.ensure_future(proc.wait())
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while proc.returncode is None:
            step = EXIT_POLL if deadline is None else min(EXIT_POLL, deadline - time.monotonic())
            if step <= 0:
                break
            await asyncio.wait([waiter], timeout=step)
    finally:
        waiter.cancel()
    return proc.returncode


async def terminate_group(
    proc: asyncio.subprocess.Process,
    *,
    grace: float = KILL_GRACE,
    also_wait: Sequence[asyncio.Future[Any]] = (),
) -> int:
    """SIGTERM the group; after `grace` (or once the leader and `also_wait` are done) SIGKILL it.

    `also_wait` are the pipe readers' EOFs: once they are in, whatever held the output is gone.
    The SIGKILL goes to the group either way, so a child that ignores SIGTERM, or outlived the
    leader without holding the pipes, dies too. Returns the last signal that reached a live leader.
    """
    sent = int(signal.SIGTERM)
    signal_group(proc, signal.SIGTERM)
    exited = asyncio.ensure_future(wait_exit(proc))
    try:
        await asyncio.wait([exited, *also_wait], timeout=grace)
    finally:
        exited.cancel()
        if proc.returncode is None:
            sent = sigkill()
        signal_group(proc, sigkill())
    await wait_exit(proc, timeout=grace)  # bounded: a process stuck in the kernel (D state) stays
    return sent


def kill_group_now(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the group without waiting: for a task that is being cancelled."""
    signal_group(proc, sigkill())


@dataclass(frozen=True)
class ToolRun:
    """One finished call of a system tool (systemctl, sc.exe, launchctl)."""

    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def message(self) -> str:
        """What the tool said about a failure: stderr, else stdout (sc.exe reports errors there)."""
        text = (self.stderr.strip() or self.stdout.strip())[:MAX_MESSAGE]
        return text or f"{os.path.basename(self.argv[0])} exited with status {self.exit_code}"


class ToolNotFoundError(OSError):
    """The system tool is not installed or not on PATH."""


async def run_tool(argv: list[str], *, timeout: float, path: str | None = None) -> ToolRun:
    """Run a tool without a shell, in its own process group, and collect its output.

    On timeout (TimeoutError) or cancellation the tool's whole group is killed before re-raising.
    """
    exe = shutil.which(argv[0], path=path)
    if exe is None:
        raise ToolNotFoundError(f"{argv[0]} not found on PATH")
    proc = await OWN_CHILDREN.spawn(
        lambda: asyncio.create_subprocess_exec(
            exe,
            *argv[1:],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **new_group_kwargs(),
        )
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except BaseException:
        kill_group_now(proc)
        with contextlib.suppress(Exception):
            await wait_exit(proc, timeout=KILL_GRACE)
        raise
    finally:
        OWN_CHILDREN.release(proc)
    rc = proc.returncode if proc.returncode is not None else -1
    return ToolRun(
        argv=[argv[0], *argv[1:]],
        exit_code=rc,
        stdout=out[:MAX_TOOL_OUTPUT].decode("utf-8", errors="replace"),
        stderr=err[:MAX_TOOL_OUTPUT].decode("utf-8", errors="replace"),
    )
