"""The outbox of command frames for the core, the Runner protocol, and the runner of a disabled [exec]."""

from __future__ import annotations

import asyncio
import collections
import logging
import shlex
from typing import Protocol

from servermanager.common.protocol import Command, CommandCancel, CommandOutput, CommandResult

log = logging.getLogger(__name__)

# Output frames waiting for the socket, all commands together; a full outbox makes the pipe
# readers wait, which makes the children wait on their writes (back-pressure, not buffering).
MAX_QUEUED_OUTPUT = 64
# Results kept while disconnected; beyond this the oldest is dropped (and logged).
MAX_HELD_RESULTS = 256

DISABLED_MESSAGE = "remote execution is disabled in this agent's config ([exec] enabled = false)"


# ---------------------------------------------------------------- the runner, as the agent sees it


class Runner(Protocol):
    """What the agent uses of a command runner (CommandRunner, RefusingRunner); the link gets only
    its outbox and its handle()."""

    outbox: Outbox
    received: int  # command frames handed in
    refused: int  # answered "refused" without running
    finished: int  # ran to a result

    @property
    def running(self) -> list[str]: ...

    def handle(self, frame: Command | CommandCancel) -> None: ...

    async def shutdown(self) -> None: ...


class RefusingRunner:
    """The runner of an agent with [exec] disabled: every command is refused, nothing is imported.

    Its answers are the ones CommandRunner gives with [exec] disabled: status "refused" with
    DISABLED_MESSAGE, one log line per command, and the result queued in the outbox.
    """

    def __init__(self, *, outbox: Outbox | None = None) -> None:
        self.outbox = outbox or Outbox()
        self.received = 0
        self.refused = 0
        self.finished = 0

    @property
    def running(self) -> list[str]:
        return []

    def handle(self, frame: Command | CommandCancel) -> None:
        if isinstance(frame, CommandCancel):
            log.info("cancel for command %s: not running (remote execution is disabled)", frame.command_id)
            return
        self.received += 1
        self.refused += 1
        log.info("command %s %s: refused: %s", frame.command_id, shorten(describe(frame)), DISABLED_MESSAGE)
        self.outbox.put_result(
            CommandResult(command_id=frame.command_id, status="refused", message=DISABLED_MESSAGE)
        )

    async def shutdown(self) -> None:
        """Nothing ever runs, so nothing to stop."""


def describe(cmd: Command) -> str:
    """A command for a log line, as given (exec.runner.command_line also validates it)."""
    if cmd.argv is not None:
        return shlex.join(cmd.argv)
    if cmd.shell is not None:
        return cmd.shell
    if cmd.service is not None:
        return " ".join(p for p in ("service", cmd.service.action, cmd.service.name) if p)
    return "(malformed)"


def shorten(line: str, limit: int = 300) -> str:
    """A command line fit for one log line: cut, with line breaks spelled out."""
    line = line.replace("\r", "\\r").replace("\n", "\\n")
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---------------------------------------------------------------- outbox


Outgoing = CommandOutput | CommandResult


class Outbox:
    """Command frames waiting for the socket, in order; the link's stream drains it.

    Output chunks are bounded (MAX_QUEUED_OUTPUT): put_output() waits for room while online,
    which is the back-pressure on the pipe readers. Offline, output is dropped and counted,
    queued output is dropped when the connection goes, and results are kept (bounded) for the
    next connection. A result is always queued behind its command's output.
    """

    def __init__(self, *, max_output: int = MAX_QUEUED_OUTPUT, max_results: int = MAX_HELD_RESULTS) -> None:
        self.max_output = max_output
        self.max_results = max_results
        self._frames: collections.deque[Outgoing] = collections.deque()
        self._outputs = 0
        self._results = 0
        self._online = False
        self._event = asyncio.Event()
        self.outputs_dropped = 0  # chunks not delivered because the agent was disconnected
        self.results_dropped = 0  # results evicted while disconnected too long with too many
        self.sent = 0

    @property
    def online(self) -> bool:
        return self._online

    @property
    def held_results(self) -> int:
        return self._results

    def __len__(self) -> int:
        return len(self._frames)

    def _fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def _changed(self) -> None:
        await self._event.wait()

    def set_online(self, online: bool) -> None:
        """The connection is streaming (True) or gone (False); going offline drops queued output."""
        self._online = online
        if not online and self._outputs:
            kept: collections.deque[Outgoing] = collections.deque(
                f for f in self._frames if isinstance(f, CommandResult)
            )
            self.outputs_dropped += self._outputs
            self._frames, self._outputs = kept, 0
        self._fire()

    async def put_output(self, frame: CommandOutput) -> bool:
        """Queue a chunk, waiting for room; False (and counted) if it was dropped as undeliverable."""
        while self._online and self._outputs >= self.max_output:
            await self._changed()
        if not self._online:
            self.outputs_dropped += 1
            return False
        self._frames.append(frame)
        self._outputs += 1
        self._fire()
        return True

    def put_result(self, frame: CommandResult) -> None:
        """Queue a result behind everything already queued; never waits."""
        if self._results >= self.max_results:
            oldest = next(f for f in self._frames if isinstance(f, CommandResult))
            self._frames.remove(oldest)
            self._results -= 1
            self.results_dropped += 1
            log.warning(
                "dropped the result of command %s: %d results already wait for the core",
                oldest.command_id,
                self.max_results,
            )
        self._frames.append(frame)
        self._results += 1
        self._fire()

    async def get(self) -> Outgoing:
        """The next frame to send, once online and there is one."""
        while not (self._online and self._frames):
            await self._changed()
        frame = self._frames.popleft()
        if isinstance(frame, CommandResult):
            self._results -= 1
        else:
            self._outputs -= 1
        self.sent += 1
        self._fire()
        return frame

    def requeue(self, frame: Outgoing) -> None:
        """A frame whose send failed: a result goes back to the front, output is dropped."""
        self.sent -= 1
        if isinstance(frame, CommandResult):
            self._frames.appendleft(frame)
            self._results += 1
            self._fire()
        else:
            self.outputs_dropped += 1
