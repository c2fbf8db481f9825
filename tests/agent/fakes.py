"""Test doubles built from real parts: a scriptable /ws/agent endpoint, fast settings, sample metrics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets.exceptions
from websockets.asyncio.server import ServerConnection

from servermanager.agent.main import Agent
from servermanager.agent.settings import AgentSettings
from servermanager.agent.stats import Pulse
from servermanager.common.metrics import Metrics
from servermanager.common.protocol import (
    PROTOCOL_VERSION,
    Ack,
    AgentToCore,
    Command,
    CommandCancel,
    CommandOutput,
    CommandResult,
    Frame,
    Hello,
    Incident,
    Ping,
    Pong,
    Samples,
    Welcome,
    decode,
    decoder,
    encode,
)

ISSUED_CREDENTIAL = "cred-0123456789abcdef"


class FakeTool:
    """A real executable named like a system tool (systemctl, sc.exe, launchctl) for a PATH entry.

    It appends its argv to a log (one line per call, each argument followed by a tab) and then
    runs `cases`, the body of a shell `case "$*" in ... esac` that prints canned output. The line is
    built first and appended in one write: several agents may run the tool at once, and a write
    per argument would interleave their lines.
    """

    def __init__(self, bin_dir: Path, name: str, cases: str) -> None:
        self.log = bin_dir / f"{name}.calls"
        self.path = bin_dir / name
        self.path.write_text(
            "#!/bin/sh\n"
            "tab=$(printf '\\t'); line=''\n"
            'for a in "$@"; do line="$line$a$tab"; done\n'
            f"printf '%s\\n' \"$line\" >> '{self.log}'\n"
            f'case "$*" in\n{cases}\nesac\n'
        )
        self.path.chmod(0o755)

    @property
    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split("\t")[:-1] for line in self.log.read_text().splitlines()]


def canned(text: str) -> str:
    """A shell heredoc that prints text exactly, for FakeTool cases."""
    return f"cat <<'CANNED'\n{text}CANNED\n"


def fake_systemctl(tmp_path: Path, monkeypatch: Any) -> FakeTool:
    """A `systemctl` first on PATH that knows one running, enabled service: nginx."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = FakeTool(
        bin_dir,
        "systemctl",
        f"  *list-units*) {canned('nginx.service loaded active running nginx web server' + chr(10))} ;;\n"
        "  *list-unit-files*) echo 'nginx.service enabled enabled' ;;\n"
        "  *) exit 0 ;;",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tool


def pid_gone(pid: int) -> bool:
    """The process no longer runs: no such pid, or a zombie nobody reaped yet.

    A killed command's orphaned child is re-parented to init; where init does not reap (some
    containers and micro-VMs, this test machine included), it lingers as a zombie: dead all the same.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@dataclass
class FakeCore:
    """Speaks the agent side of core/protocol.py with real frames; every knob is per-test.

    It decodes everything with the contract's own AgentToCore decoder, so a frame the real core
    would refuse fails here too.
    """

    node_id: int = 7
    issue_credential: bool = True  # answer an enroll_token with a credential
    welcome_interval: float | None = None
    welcome_last_seq: int | None = None
    refuse_code: int | None = None  # close with this code right after the hello
    drop_first_batch: bool = False  # close 1011 on the first batch of connection 1, unacked
    silent_after_welcome: bool = False  # never send another frame (a hung core)
    withhold_acks: bool = False  # answer pings but acknowledge nothing (a core whose writer is stuck)
    reject: Callable[[list[int]], list[int]] = lambda seqs: []
    ack_gate: Callable[[int], Awaitable[None]] | None = None  # awaited before acking batch n
    after_welcome: list[str | bytes] = field(default_factory=list)  # raw frames to push

    hellos: list[Hello] = field(default_factory=list)
    batches: list[list[int]] = field(default_factory=list)  # seqs of each batch, arrival order
    batch_conn: list[int] = field(default_factory=list)  # which connection each batch came on
    pings: int = 0
    pongs: list[float] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)  # as sent by the agent
    connections: int = 0
    pulse: Pulse = field(default_factory=Pulse)
    url: str = ""
    # remote operations
    outputs: list[CommandOutput] = field(default_factory=list)
    results: dict[str, CommandResult] = field(default_factory=dict)
    frame_log: list[tuple[float, str, str]] = field(default_factory=list)  # (monotonic, type, command id)
    incidents: dict[str, Incident] = field(default_factory=dict)  # snapshot answers, by request id
    ws: ServerConnection | None = None  # the latest welcomed connection

    async def send(self, frame: Frame) -> None:
        """Push a frame (a Command, CommandCancel ...) to the agent on the current connection."""
        assert self.ws is not None, "no agent connected"
        await self.ws.send(encode(frame).decode())

    async def run(self, cmd: Command, timeout: float = 10.0) -> CommandResult:
        """Send a command and wait for its result."""
        await self.send(cmd)
        await self.wait_until(lambda: cmd.command_id in self.results, timeout)
        return self.results[cmd.command_id]

    async def cancel(self, command_id: str) -> None:
        await self.send(CommandCancel(command_id=command_id))

    def output(self, command_id: str, stream: str = "stdout") -> str:
        return "".join(o.data for o in self.outputs if o.command_id == command_id and o.stream == stream)

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        conn_no = self.connections
        dec = decoder(AgentToCore)
        try:
            hello = decode(dec, await ws.recv())
            assert isinstance(hello, Hello), hello
            self.hellos.append(hello)
            self.pulse.fire()
            if self.refuse_code is not None:
                await ws.close(self.refuse_code, "refused by fake core")
                return
            credential = ISSUED_CREDENTIAL if hello.enroll_token and self.issue_credential else None
            await ws.send(
                encode(
                    Welcome(
                        protocol=PROTOCOL_VERSION,
                        node_id=self.node_id,
                        interval=self.welcome_interval,
                        heartbeat_timeout=15.0,
                        credential=credential,
                        last_seq=self.welcome_last_seq,
                    )
                ).decode()
            )
            self.ws = ws
            for raw in self.after_welcome:
                await ws.send(raw)
            async for data in ws:
                frame = decode(dec, data)
                if isinstance(frame, CommandOutput):
                    self.outputs.append(frame)
                    self.frame_log.append((time.monotonic(), "output", frame.command_id))
                    self.pulse.fire()
                elif isinstance(frame, CommandResult):
                    self.results[frame.command_id] = frame
                    self.frame_log.append((time.monotonic(), "result", frame.command_id))
                    self.pulse.fire()
                elif isinstance(frame, Incident):
                    self.incidents[frame.request_id] = frame
                    self.pulse.fire()
                elif isinstance(frame, Samples):
                    seqs = [s.seq for s in frame.samples]
                    self.batches.append(seqs)
                    self.frame_log.append((time.monotonic(), "samples", ""))
                    self.batch_conn.append(conn_no)
                    self.pulse.fire()
                    if self.drop_first_batch and conn_no == 1:
                        await ws.close(1011, "fake core crashed")
                        return
                    if self.silent_after_welcome or self.withhold_acks:
                        continue
                    if self.ack_gate is not None:
                        await self.ack_gate(len(self.batches))
                    ack = Ack(upto_seq=seqs[-1], from_seq=seqs[0], rejected=self.reject(seqs))
                    await ws.send(encode(ack).decode())
                elif isinstance(frame, Ping):
                    self.pings += 1
                    self.pulse.fire()
                    if not self.silent_after_welcome:
                        await ws.send(encode(Pong(ts=frame.ts)).decode())
                elif isinstance(frame, Pong):
                    self.pongs.append(frame.ts)
                    self.pulse.fire()
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            if self.ws is ws:
                self.ws = None
            rcvd = ws.protocol.close_rcvd
            self.close_codes.append(rcvd.code if rcvd is not None else None)
            self.pulse.fire()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self.pulse.wait_until(predicate)


def fast_settings(state_dir: Path, core_url: str, **overrides: Any) -> AgentSettings:
    """Settings built directly, skipping validate(), so tests can sample every 50 ms."""
    values: dict[str, Any] = {
        "core": core_url,
        "state_dir": str(state_dir),
        "interval": 0.05,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "connect_timeout": 5.0,
    }
    values.update(overrides)
    return AgentSettings(**values)


class AgentRunner:
    """Starts agents as tasks and guarantees they are stopped and their spools closed."""

    def __init__(self) -> None:
        self.running: list[tuple[Agent, asyncio.Task[None]]] = []

    def start(self, agent: Agent) -> asyncio.Task[None]:
        task = asyncio.create_task(agent.run())
        self.running.append((agent, task))
        return task

    async def stop(self, agent: Agent) -> None:
        agent.stop()
        for a, task in self.running:
            if a is agent:
                async with asyncio.timeout(10):
                    await task
        agent.close()

    async def close(self) -> None:
        for agent, task in self.running:
            agent.stop()
            # gather, not await: a task a test already cancelled (or that failed) must not turn
            # the teardown into a second, confusing error.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await asyncio.gather(task, return_exceptions=True)
            agent.close()


def metrics(cpu: float = 1.0) -> Metrics:
    """A small, valid reading for spool and frame tests that do not need the real host."""
    return Metrics(
        cpu_pct=cpu,
        cpu_per_core=[cpu],
        load1=0.1,
        load5=0.2,
        load15=0.3,
        mem_total=100,
        mem_used=50,
        mem_pct=50.0,
        swap_total=0,
        swap_used=0,
        swap_pct=0.0,
        uptime=10.0,
        procs=5,
    )
