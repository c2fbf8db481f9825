"""The command runner: admits a Command by the [exec] policy, runs it, streams its output, reports."""

# A Command from the core is admitted (enabled? well formed? allowed and not denied? under the
# concurrency cap? can we be the configured user?) or answered at once with status "refused" or
# "error". An admitted command runs in its own process group; its stdout and stderr stream back as
# separate, coalesced CommandOutput chunks, and one CommandResult follows them last. When it ends,
# times out or is cancelled, nothing it started is left running (exec.tree, on Linux), and the
# result says what was stopped.
#
# Frames for the core go through the Outbox (exec.outbox), which the link drains between sample
# batches (they share one socket and one send lock, so a sample waits for one output chunk at
# most). While the agent is disconnected, output chunks are dropped (and counted) but results are
# kept, up to a bound, and sent after the next welcome.
#
# Only an agent with [exec] enabled imports this module (exec.make_runner); a disabled one refuses
# commands with exec.outbox.RefusingRunner and never pays for it.

from __future__ import annotations

import asyncio
import codecs
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from servermanager.agent.exec.outbox import DISABLED_MESSAGE, Outbox, shorten
from servermanager.agent.exec.runas import RefusedError, RunAs, default_cwd, minimal_env, resolve_run_as
from servermanager.agent.exec.services import (
    ServiceError,
    ServiceManager,
    default_service_manager,
    validate_service_name,
)
from servermanager.agent.exec.subproc import (
    KILL_GRACE,
    MAX_MESSAGE,
    OWN_CHILDREN,
    new_group_kwargs,
    wait_exit,
)
from servermanager.agent.exec.tree import (
    MARK_ENV,
    CommandTree,
    Mark,
    Outcome,
    acquire_subreaper,
    boot_clock,
    reap_orphans,
    release_subreaper,
)
from servermanager.common.exec_policy import Policy
from servermanager.common.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    Command,
    CommandCancel,
    CommandOutput,
    CommandResult,
    CommandStatus,
    encode,
)

if TYPE_CHECKING:
    from servermanager.agent.exec.signing import Verifier
    from servermanager.agent.settings import ExecSettings

log = logging.getLogger(__name__)

# Output is sent in chunks of at most this many bytes of the child's output...
CHUNK_BYTES = 32 * 1024
# ...or sooner, once the oldest unsent byte has waited this long.
FLUSH_INTERVAL = 0.05
# Once a command's own output is cut off, the rest is read (and only counted) this fast.
DRAIN_READ = 256 * 1024
# After the main process exits, how long what it left may keep stdout/stderr open before it is
# stopped: `daemon &` that forgot to close its output must not hang the command until timeout.
LINGER = KILL_GRACE
# While commands run, how often the agent reaps their orphans that have exited (exec.tree).
REAP_INTERVAL = 1.0


# ---------------------------------------------------------------- what a command is called


def command_line(cmd: Command) -> str:
    """The line the [exec] patterns are matched against, and that the log shows.

    A shell command is its string as-is; argv is shlex.join(argv); a service request is
    `service ACTION NAME` (or `service list`). ValueError if the command is malformed.
    """
    given = [
        k for k, v in (("argv", cmd.argv), ("shell", cmd.shell), ("service", cmd.service)) if v is not None
    ]
    if len(given) != 1:
        what = " and ".join(given) if given else "none of them"
        raise ValueError(f"a command needs exactly one of argv, shell or service (got {what})")
    if cmd.argv is not None:
        if not cmd.argv or not cmd.argv[0]:
            raise ValueError("argv is empty")
        if any("\0" in a for a in cmd.argv):
            raise ValueError("argv contains a NUL character")
        return shlex.join(cmd.argv)
    if cmd.shell is not None:
        if not cmd.shell.strip():
            raise ValueError("the shell command is empty")
        if "\0" in cmd.shell:
            raise ValueError("the shell command contains a NUL character")
        return cmd.shell
    assert cmd.service is not None
    if cmd.service.action == "list":
        return "service list"
    return f"service {cmd.service.action} {validate_service_name(cmd.service.name)}"


# ---------------------------------------------------------------- one output stream


class Capture:
    """One stream of one command: counts every byte, keeps the first `limit`, decodes incrementally.

    A multi-byte UTF-8 character split across reads (or chunks) is decoded whole; invalid bytes
    become U+FFFD.
    """

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.total = 0
        self.kept = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[str] = []
        self.pending_bytes = 0
        self.pending_since: float | None = None
        self.eof = asyncio.Event()

    @property
    def truncated(self) -> bool:
        return self.total > self.kept

    @property
    def full(self) -> bool:
        return self.kept >= self.limit

    def room(self) -> int:
        return self.limit - self.kept

    def feed(self, data: bytes, now: float) -> None:
        self.total += len(data)
        keep = data[: max(0, self.limit - self.kept)]
        if not keep:
            return
        self.kept += len(keep)
        text = self._decoder.decode(keep)
        if self.pending_since is None:
            self.pending_since = now
        self.pending_bytes += len(keep)
        if text:
            self._pending.append(text)

    def finish(self) -> None:
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._pending.append(tail)

    def take(self) -> tuple[str, int]:
        text, nbytes = "".join(self._pending), self.pending_bytes
        self._pending, self.pending_bytes, self.pending_since = [], 0, None
        return text, nbytes


# ---------------------------------------------------------------- the runner


@dataclass
class _Job:
    command: Command
    line: str
    kind: str  # argv, shell or service
    run_as: RunAs | None
    started: float  # monotonic
    timeout: float
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[CommandResult] | None = None
    undelivered: int = 0
    note: str | None = None
    mark: Mark = field(init=False)

    def __post_init__(self) -> None:
        # The marker in its processes' environment (NUL is the one character env cannot hold).
        self.mark = Mark(self.command.command_id.replace("\0", "\\0"), boot_clock())

    @property
    def deadline(self) -> float:
        return self.started + self.timeout


_DEFAULT_SERVICES: Any = object()


class CommandRunner:
    """Admits, runs, cancels and reports commands; results and output go to `outbox`.

    `handle(frame)` is the dispatcher the agent hands its link: Command -> submit, CommandCancel
    -> cancel. `execute(command)` runs one command to its result without queueing the result
    (output chunks are still queued), for callers that want the result themselves.

    At most [exec] max_concurrent commands run at once; one more is refused (not queued), so a
    fan-out never piles up work with timeouts ticking. A command id that is already running is
    ignored (its result will come). Cancelling an id that is not running does nothing.
    """

    def __init__(
        self,
        settings: ExecSettings,
        *,
        outbox: Outbox | None = None,
        services: ServiceManager | None = _DEFAULT_SERVICES,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        grace: float = KILL_GRACE,
        linger: float = LINGER,
        flush_interval: float = FLUSH_INTERVAL,
        chunk_bytes: int = CHUNK_BYTES,
        on_change: Callable[[], None] | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.settings = settings
        self.verifier = verifier  # set: only requests signed by a trusted key run (exec.signing)
        self.outbox = outbox or Outbox()
        self.services: ServiceManager | None = (
            default_service_manager() if services is _DEFAULT_SERVICES else services
        )
        self.max_frame_bytes = max_frame_bytes
        # JSON may spell one byte as six (\u0001), plus the frame's own fields: always fits.
        self.chunk_bytes = max(64, min(chunk_bytes, (max_frame_bytes - 512) // 6))
        self.grace = grace
        self.linger = linger
        self.flush_interval = flush_interval
        self._on_change = on_change
        self._jobs: dict[str, _Job] = {}
        self._policy = Policy(settings.allow, settings.deny)
        # While commands run: the agent as their orphans' reaper (exec.tree), and its reaping loop.
        self._reaper: asyncio.Task[None] | None = None
        self.received = 0
        self.refused = 0
        self.finished = 0

    @property
    def running(self) -> list[str]:
        """Ids of the commands running now."""
        return list(self._jobs)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # ------------------------------------------------------------ dispatch

    def handle(self, frame: Command | CommandCancel) -> None:
        """The connection hands every command frame here; never blocks the receiver."""
        if isinstance(frame, Command):
            self.submit(frame)
        else:
            self.cancel(frame.command_id)

    def submit(self, cmd: Command) -> asyncio.Task[CommandResult] | None:
        """Admit and start `cmd`; its result is queued in the outbox when it ends."""
        admitted = self._admit(cmd)
        if admitted is None:
            return None
        if isinstance(admitted, CommandResult):
            self._report(cmd, admitted)
            self.outbox.put_result(self._fit(admitted))
            return None
        job = admitted

        async def run_and_queue() -> CommandResult:
            result = await self._run_job(job)
            self.outbox.put_result(result)
            return result

        job.task = asyncio.create_task(run_and_queue(), name=f"command-{cmd.command_id}")
        return job.task

    async def execute(self, cmd: Command) -> CommandResult:
        """Admit and run `cmd` to its result (output chunks go to the outbox, the result does not)."""
        admitted = self._admit(cmd)
        if admitted is None:
            raise ValueError(f"command {cmd.command_id} is already running")
        if isinstance(admitted, CommandResult):
            self._report(cmd, admitted)
            return self._fit(admitted)
        return await self._run_job(admitted)

    def cancel(self, command_id: str) -> bool:
        """Ask a running command to stop (its group is killed; status cancelled)."""
        job = self._jobs.get(command_id)
        if job is None:
            log.info("cancel for command %s: not running (finished already or never started)", command_id)
            return False
        log.info("command %s: cancel requested", command_id)
        job.cancel.set()
        return True

    async def shutdown(self) -> None:
        """Cancel every running command and wait for them (the agent is stopping)."""
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel.set()
        tasks = [j.task for j in jobs if j.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)

    def _hold_subreaper(self) -> None:
        """From the first command on, until none runs: a command's orphans are re-parented to the
        agent rather than to PID 1, so none escapes its end, and the agent reaps them as they exit."""
        if self._reaper is None:
            acquire_subreaper()
            self._reaper = asyncio.create_task(self._reap_while_running(), name="exec-reaper")

    async def _reap_while_running(self) -> None:
        try:
            while self._jobs:
                reap_orphans()
                await asyncio.sleep(REAP_INTERVAL)
        finally:
            reap_orphans()
            release_subreaper()
            self._reaper = None

    # ------------------------------------------------------------ admission

    def _result(self, cmd: Command, status: CommandStatus, message: str | None = None) -> CommandResult:
        return CommandResult(command_id=cmd.command_id, status=status, message=message)

    def _admit(self, cmd: Command) -> _Job | CommandResult | None:
        self.received += 1
        if cmd.command_id in self._jobs:
            log.warning("command %s is already running; ignoring the duplicate", cmd.command_id)
            return None
        s = self.settings
        if not s.enabled:
            self.refused += 1
            return self._result(cmd, "refused", DISABLED_MESSAGE)
        try:
            line = command_line(cmd)
        except ValueError as exc:
            return self._result(cmd, "error", str(exc))
        kind = "argv" if cmd.argv is not None else "shell" if cmd.shell is not None else "service"
        if self.verifier is not None and (unsigned := self.verifier.check(cmd)) is not None:
            self.refused += 1
            return self._result(cmd, "refused", unsigned)
        reason = self._policy.check(line, shell=kind == "shell") or self._policy.check_env(cmd.env)
        if reason is not None:
            self.refused += 1
            return self._result(cmd, "refused", reason)
        if len(self._jobs) >= s.max_concurrent:
            self.refused += 1
            return self._result(
                cmd,
                "refused",
                f"{len(self._jobs)} commands are already running on this agent "
                f"([exec] max_concurrent = {s.max_concurrent}); try again when one has finished",
            )
        run_as = None
        if kind == "service":
            if self.services is None:
                return self._result(cmd, "error", f"service control is not supported on {sys.platform}")
        else:
            try:
                run_as = resolve_run_as(s.user)
            except RefusedError as exc:
                self.refused += 1
                return self._result(cmd, "refused", str(exc))
        timeout = min(cmd.timeout, s.max_runtime) if cmd.timeout > 0 else s.max_runtime
        job = _Job(cmd, line, kind, run_as, time.monotonic(), timeout)
        self._jobs[cmd.command_id] = job
        self._changed()
        return job

    # ------------------------------------------------------------ running

    async def _run_job(self, job: _Job) -> CommandResult:
        cmd = job.command
        self._hold_subreaper()
        log.debug(
            "command %s started: %s %s%s%s, timeout %gs",
            cmd.command_id,
            job.kind,
            shorten(job.line),
            f" as {job.run_as.name}" if job.run_as else "",
            f" (env {', '.join(sorted(cmd.env))})" if cmd.env else "",  # names only, never values
            job.timeout,
        )
        try:
            if job.kind == "service":
                result = await self._run_service(job)
            else:
                result = await self._run_process(job)
        except Exception as exc:  # a bug must still answer the operator
            log.exception("command %s failed unexpectedly", cmd.command_id)
            result = self._result(cmd, "error", f"agent error: {exc!r}")
        finally:
            self._jobs.pop(cmd.command_id, None)
        if job.undelivered:
            note = f"{job.undelivered} bytes of output were produced while the agent was disconnected and not delivered"
            job.note = f"{job.note}; {note}" if job.note else note
        if job.note:
            message = f"{result.message}; {job.note}" if result.message else job.note
            result = msgspec.structs.replace(result, message=message)
        result = msgspec.structs.replace(result, duration=round(time.monotonic() - job.started, 6))
        self.finished += 1
        self._report(cmd, result)
        self._changed()
        return self._fit(result)

    def _report(self, cmd: Command, r: CommandResult) -> None:
        """The one log line per command outcome."""
        try:
            what = shorten(command_line(cmd))
        except ValueError:
            what = "(malformed)"
        user = self.settings.user
        if user and cmd.service is None and r.status != "refused":
            what += f" (as {user})"
        if r.status in ("refused", "error"):
            log.info("command %s %s: %s: %s", cmd.command_id, what, r.status, r.message)
            return
        how = f"exit {r.exit_code}" if r.exit_code is not None else f"signal {r.signal}" if r.signal else "-"
        log.info(
            "command %s %s: %s (%s, %.2fs, %d+%d bytes%s)%s",
            cmd.command_id,
            what,
            r.status,
            how,
            r.duration,
            r.stdout_bytes,
            r.stderr_bytes,
            ", truncated" if r.truncated else "",
            f": {r.message}" if r.message else "",
        )

    def _fit(self, r: CommandResult) -> CommandResult:
        """Keep a result within one frame: cut the message, then the service list."""
        if r.message and len(r.message) > MAX_MESSAGE:
            r = msgspec.structs.replace(r, message=r.message[: MAX_MESSAGE - 3] + "...")
        budget = self.max_frame_bytes - 1024
        if r.services and len(encode(r)) > budget:
            services, total = list(r.services), len(r.services)
            while services and len(encode(msgspec.structs.replace(r, services=services))) > budget:
                services = services[: len(services) * 3 // 4]
            note = f"service list cut to {len(services)} of {total} entries to fit one frame"
            r = msgspec.structs.replace(
                r, services=services, message=f"{r.message}; {note}" if r.message else note
            )
        return r

    async def _run_service(self, job: _Job) -> CommandResult:
        cmd = job.command
        assert self.services is not None and cmd.service is not None
        action = asyncio.ensure_future(self.services.perform(cmd.service))
        stop = asyncio.ensure_future(job.cancel.wait())
        try:
            await asyncio.wait(
                [action, stop],
                timeout=max(0.0, job.deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stop.cancel()
            if not action.done():
                action.cancel()  # run_tool kills the tool's group
            await asyncio.gather(action, stop, return_exceptions=True)
        if action.cancelled():
            status: CommandStatus = "cancelled" if job.cancel.is_set() else "timeout"
            return self._result(
                cmd, status, f"service {cmd.service.action} did not finish" if status == "timeout" else None
            )
        exc = action.exception()
        if isinstance(exc, ServiceError):
            return CommandResult(cmd.command_id, "failed", exit_code=exc.exit_code, message=str(exc))
        if isinstance(exc, ValueError):
            return self._result(cmd, "error", str(exc))
        if isinstance(exc, OSError):  # ToolNotFoundError, or the tool could not start
            return self._result(cmd, "error", str(exc))
        if exc is not None:
            raise exc
        out = action.result()
        return CommandResult(
            cmd.command_id, out.status, exit_code=out.exit_code, message=out.message, services=out.services
        )

    async def _spawn(self, job: _Job, env: dict[str, str], cwd: str | None) -> asyncio.subprocess.Process:
        cmd = job.command
        kwargs: dict[str, Any] = {
            "stdin": subprocess.DEVNULL,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
            "env": env,
            "cwd": cwd,
            "limit": DRAIN_READ,
            **new_group_kwargs(),
        }
        if job.run_as is not None:
            kwargs.update(user=job.run_as.uid, group=job.run_as.gid, extra_groups=job.run_as.groups)
        if cmd.shell is not None:
            shell = cmd.shell
            if sys.platform == "win32":
                return await OWN_CHILDREN.spawn(lambda: asyncio.create_subprocess_shell(shell, **kwargs))
            return await OWN_CHILDREN.spawn(
                lambda: asyncio.create_subprocess_exec("/bin/sh", "-c", shell, **kwargs)
            )
        argv = cmd.argv
        assert argv is not None
        # No shell: no injection.
        return await OWN_CHILDREN.spawn(lambda: asyncio.create_subprocess_exec(*argv, **kwargs))

    async def _run_process(self, job: _Job) -> CommandResult:
        cmd = job.command
        env = {**minimal_env(cmd.env, job.run_as), MARK_ENV: job.mark.token}
        cwd = cmd.cwd or await asyncio.to_thread(default_cwd, job.run_as)
        if cmd.cwd and not await asyncio.to_thread(os.path.isdir, cmd.cwd):
            return self._result(cmd, "error", f"cannot start: working directory {cmd.cwd!r} does not exist")
        try:
            proc = await self._spawn(job, env, cwd)
        except OSError as exc:
            target = "/bin/sh" if cmd.shell is not None else (cmd.argv or ["?"])[0]
            why = exc.strerror or str(exc)
            return self._result(cmd, "error", f"cannot start {target!r}: {why}")
        except (ValueError, subprocess.SubprocessError) as exc:
            return self._result(cmd, "error", f"cannot start: {exc}")
        assert proc.stdout is not None and proc.stderr is not None
        limit = max(0, int(self.settings.max_output))
        caps = (Capture("stdout", limit), Capture("stderr", limit))
        pumps = [
            asyncio.ensure_future(self._pump(job, caps[0], proc.stdout)),
            asyncio.ensure_future(self._pump(job, caps[1], proc.stderr)),
        ]
        eofs = [asyncio.ensure_future(cap.eof.wait()) for cap in caps]
        exited = asyncio.ensure_future(wait_exit(proc))  # the leader, not its pipes
        stop = asyncio.ensure_future(job.cancel.wait())
        tree = CommandTree(proc, job.mark, lambda: [j.mark for j in self._jobs.values()])
        status: CommandStatus | None = None
        try:
            await asyncio.wait(
                [exited, stop],
                timeout=max(0.0, job.deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if proc.returncode is None:
                status = "cancelled" if job.cancel.is_set() else "timeout"
                job.mark.ending = True
                outcome = await tree.stop(self.grace, also_wait=eofs)
            else:
                # The pipes close when the last process holding them exits: what the command left
                # running may still be writing its last words. Then it is stopped, like the rest.
                _, open_pipes = await asyncio.wait(eofs, timeout=self.linger)
                job.mark.ending = True
                outcome = await tree.stop(self.grace, also_wait=eofs, pipes_open=bool(open_pipes))
            # Still open now: a process the agent could not stop holds the pipes. Stop reading.
            _, stuck = await asyncio.wait(eofs, timeout=self.grace)
            if stuck:
                for pump, eof in zip(pumps, eofs, strict=True):
                    if eof in stuck:
                        pump.cancel()
                transport = getattr(proc, "_transport", None)
                if transport is not None:
                    transport.close()
            # After EOF a pump only waits for room in the outbox, which drains while online and
            # drops everything when the connection goes.
            await asyncio.gather(*pumps, return_exceptions=True)
            for cap in caps:  # whatever a cancelled pump still held
                cap.finish()
                await self._flush(job, cap)
        except BaseException:
            tree.kill_now()
            for t in pumps:
                t.cancel()
            raise
        finally:
            for f in (stop, exited, *eofs):
                f.cancel()
            OWN_CHILDREN.release(proc)
        return self._process_result(job, proc, status, outcome, caps)

    def _process_result(
        self,
        job: _Job,
        proc: asyncio.subprocess.Process,
        status: CommandStatus | None,
        outcome: Outcome,
        caps: tuple[Capture, Capture],
    ) -> CommandResult:
        rc = proc.returncode
        exit_code = rc if rc is not None and rc >= 0 else None
        signum = -rc if rc is not None and rc < 0 else None
        ended = status is None
        if status is None:
            status = "ok" if rc == 0 else "failed"
        elif signum is None:
            signum = outcome.sent  # it trapped our signal and exited with a code of its own
        timed_out = f"timed out after {job.timeout:g}s" if status == "timeout" else None
        cleanup = outcome.describe(ended=ended)
        return CommandResult(
            command_id=job.command.command_id,
            status=status,
            exit_code=exit_code,
            signal=signum,
            stdout_bytes=caps[0].total,
            stderr_bytes=caps[1].total,
            truncated=caps[0].truncated or caps[1].truncated,
            message="; ".join(m for m in (timed_out, cleanup) if m) or None,
        )

    async def _pump(self, job: _Job, cap: Capture, reader: asyncio.StreamReader) -> None:
        """Read one pipe to EOF: keep and send what fits, count the rest, coalesce into chunks."""
        loop = asyncio.get_running_loop()
        while True:
            wait: float | None = None
            if cap.pending_since is not None:
                wait = cap.pending_since + self.flush_interval - loop.time()
                if wait <= 0:
                    await self._flush(job, cap)
                    continue
            # Never more than one chunk pending, so every frame fits max_frame_bytes.
            size = min(self.chunk_bytes - cap.pending_bytes, cap.room()) if not cap.full else DRAIN_READ
            try:
                async with asyncio.timeout(wait):
                    data = await reader.read(max(size, 1))
            except TimeoutError:
                await self._flush(job, cap)
                continue
            if not data:
                cap.eof.set()
                break
            cap.feed(data, loop.time())
            if cap.pending_bytes >= self.chunk_bytes or (cap.full and cap.pending_bytes):
                await self._flush(job, cap)
        cap.finish()
        await self._flush(job, cap)

    async def _flush(self, job: _Job, cap: Capture) -> None:
        text, nbytes = cap.take()
        if not text:
            return
        frame = CommandOutput(
            command_id=job.command.command_id,
            stream="stdout" if cap.name == "stdout" else "stderr",
            data=text,
        )
        if not await self.outbox.put_output(frame):
            job.undelivered += nbytes
