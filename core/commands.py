"""Remote commands: fan-out to online agents, queueing for offline ones, output relay, results and audit."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import secrets
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from servermanager.common import protocol as p
from servermanager.common.exec_policy import Policy
from servermanager.common.rest import (
    CommandInfo,
    CommandPreview,
    CommandRunInfo,
    PreviewRun,
    Targets,
    Verdict,
)
from servermanager.common.signing import check_fields
from servermanager.common.status import FINAL
from servermanager.core.audit import Audit
from servermanager.core.auth import Role
from servermanager.core.bus import Bus
from servermanager.core.nodes import Nodes, NodeState
from servermanager.core.store.db import Database

log = logging.getLogger(__name__)

# The agent truncates each stream at its own max_output; this only guards the core against a rogue agent.
CORE_OUTPUT_CAP = 4 << 20
LOST_GRACE = 30.0


@dataclass
class Run:
    node_id: int
    status: str  # queued | sent | one of FINAL
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=lambda: {"stdout": 0, "stderr": 0})
    result: p.CommandResult | None = None
    finished_at: float | None = None
    finishing: bool = False  # a result is being stored; later ones for this run are ignored
    signature: p.CommandSignature | None = None  # the operator's, for this node: relayed untouched

    def info(self) -> CommandRunInfo:
        r = self.result
        return CommandRunInfo(
            node_id=self.node_id,
            status=self.status,
            exit_code=r.exit_code if r else None,
            signal=r.signal if r else None,
            duration=r.duration if r else None,
            stdout="".join(self.stdout),
            stderr="".join(self.stderr),
            stdout_bytes=r.stdout_bytes if r else self.kept["stdout"],
            stderr_bytes=r.stderr_bytes if r else self.kept["stderr"],
            truncated=r.truncated if r else False,
            message=r.message if r else None,
            services=r.services if r else None,
            finished_at=self.finished_at,
            signed_by=self.signature.key_id if self.signature else None,
        )


@dataclass
class LiveCommand:
    id: str
    actor: str
    created_at: float
    kind: str  # exec | service
    frame: p.Command
    targets: Targets
    expires_at: float | None
    runs: dict[int, Run]
    cancelled: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status(self) -> str:
        if all(r.status in FINAL for r in self.runs.values()):
            return "cancelled" if self.cancelled else "done"
        return "running"

    @property
    def describe(self) -> str:
        f = self.frame
        if f.service is not None:
            return f"service {f.service.action} {f.service.name or ''}".strip()
        return f.shell if f.shell is not None else shlex.join(f.argv or [])

    def frame_for(self, node_id: int) -> p.Command:
        """The frame node `node_id` gets: the command with that node's own signature, if any."""
        sig = self.runs[node_id].signature
        return self.frame if sig is None else msgspec.structs.replace(self.frame, signature=sig)

    def info(self) -> CommandInfo:
        f = self.frame
        return CommandInfo(
            id=self.id,
            user=self.actor,
            created_at=self.created_at,
            kind=self.kind,
            command=f.shell if f.shell is not None else f.argv,
            service=f.service,
            timeout=f.timeout,
            targets=self.targets,
            expires_at=self.expires_at,
            status=self.status,
            runs=[r.info() for r in self.runs.values()],
        )


class TargetError(ValueError):
    pass


class SignatureError(ValueError):
    """The signatures do not fit the request: missing for a node, for a node not targeted, malformed."""


class DuplicateIdError(ValueError):
    """A client-chosen command id that is taken."""


class _StoredSignatures(msgspec.Struct):
    """The signatures stored beside the frame in commands.spec."""

    signatures: dict[int, p.CommandSignature] = {}


def check_signatures(
    nodes: list[NodeState], signatures: dict[int, p.CommandSignature], command_id: str | None
) -> None:
    """One well-formed signature per target node, each naming its node; SignatureError if not.

    The core cannot check the signatures themselves (it holds no operator keys): the agent does."""
    if command_id is None:
        raise SignatureError("a signed command needs the id it was signed with")
    wanted = {n.id for n in nodes}
    missing = sorted(wanted - signatures.keys())
    if missing:
        raise SignatureError(
            f"no signature for node(s) {', '.join(map(str, missing[:20]))}: the targets match them, "
            "so resolve the targets again and sign for each"
        )
    extra = sorted(signatures.keys() - wanted)
    if extra:
        raise SignatureError(
            f"signatures for node(s) the targets do not match: {', '.join(map(str, extra[:20]))}"
        )
    for nid, sig in signatures.items():
        bad = check_fields(sig)
        if bad is not None:
            raise SignatureError(f"node {nid}: {bad}")
        if sig.node_id != nid:
            raise SignatureError(f"the signature given for node {nid} was made for node {sig.node_id}")


class Commands:
    def __init__(self, db: Database, nodes: Nodes, bus: Bus, audit: Audit) -> None:
        self.db = db
        self.nodes = nodes
        self.bus = bus
        self.audit = audit
        self.live: dict[str, LiveCommand] = {}
        # Several cores share the database: a command this core does not follow may be another's.
        self.clustered = False

    def resolve(self, targets: Targets) -> list[NodeState]:
        """Nodes named by id, group, tag or all; an unknown id or an empty selection is an error."""
        chosen: dict[int, NodeState] = {}
        if targets.all:
            chosen.update(self.nodes.nodes)
        for nid in targets.nodes or []:
            st = self.nodes.get(nid)
            if st is None:
                raise TargetError(f"no node with id {nid}")
            chosen[nid] = st
        if targets.group is not None:
            chosen.update({n.id: n for n in self.nodes.nodes.values() if n.group == targets.group})
        if targets.tag is not None:
            chosen.update({n.id: n for n in self.nodes.nodes.values() if targets.tag in n.tags})
        if not chosen:
            raise TargetError("the targets match no node")
        return [chosen[k] for k in sorted(chosen)]

    async def preview(
        self,
        targets: Targets,
        frame_args: dict[str, Any],
        *,
        queue_offline: bool = False,
        signatures: dict[int, p.CommandSignature] | None = None,
    ) -> CommandPreview:
        """A dry run of create(): per target node, would it run, be queued, or be refused and why,
        judged by what each agent reported of its [exec] in its hello. Nothing is sent or stored.
        TargetError if the targets match no node."""
        nodes = self.resolve(targets)
        frame = p.Command(command_id="preview", **frame_args)
        line = policy_line(frame)
        known = await self._known_services(nodes) if frame.service and frame.service.name else {}
        runs = []
        for n in nodes:
            verdict, reason = _verdict(n, frame, line, queue_offline, signatures, known.get(n.id))
            runs.append(PreviewRun(n.id, n.name, verdict, reason))
        count = {v: sum(1 for r in runs if r.verdict == v) for v in ("run", "queue", "refused", "unknown")}
        return CommandPreview(line, runs, count["run"], count["queue"], count["refused"], count["unknown"])

    async def _known_services(self, nodes: list[NodeState]) -> dict[int, set[str]]:
        """Each node's services as its latest successful `service list` reported them (none: never listed)."""
        ids = [n.id for n in nodes]
        known: dict[int, set[str]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = await self.db.fetchall(
                "SELECT node_id, services FROM command_runs WHERE services IS NOT NULL AND status = 'ok' "
                f"AND node_id IN ({','.join('?' * len(chunk))}) ORDER BY finished_at",
                tuple(chunk),
            )
            for nid, services in rows:  # the newest list wins: rows come oldest first
                listed = msgspec.json.decode(services, type=list[p.ServiceInfo])
                known[nid] = {s.name for s in listed}
        return known

    async def create(
        self,
        actor: str,
        targets: Targets,
        frame_args: dict[str, Any],
        *,
        queue_offline: bool = False,
        expires_in: float = 3600.0,
        command_id: str | None = None,
        signatures: dict[int, p.CommandSignature] | None = None,
    ) -> LiveCommand:
        """Start a command; with `signatures` (one per target node) each node gets its own, and the
        id must be the one they were made for (`command_id`). TargetError, SignatureError,
        DuplicateIdError when the request cannot be started as given."""
        nodes = self.resolve(targets)
        if signatures is not None:
            check_signatures(nodes, signatures, command_id)
        if command_id is not None and (
            command_id in self.live
            or await self.db.fetchone("SELECT 1 FROM commands WHERE id = ?", (command_id,)) is not None
        ):
            raise DuplicateIdError(f"there is already a command with id {command_id}")
        cid = command_id or secrets.token_hex(8)
        frame = p.Command(command_id=cid, **frame_args)
        now = time.time()
        sigs = signatures or {}
        runs = {
            n.id: Run(
                n.id,
                "sent" if n.online else ("queued" if queue_offline else "offline"),
                signature=sigs.get(n.id),
            )
            for n in nodes
        }
        for r in runs.values():
            if r.status == "offline":
                r.finished_at = now
        cmd = LiveCommand(
            id=cid,
            actor=actor,
            created_at=now,
            kind="service" if frame.service else "exec",
            frame=frame,
            targets=targets,
            expires_at=now + expires_in if queue_offline else None,
            runs=runs,
        )
        async with self.db.transaction() as con:
            await con.execute(
                "INSERT INTO commands (id, actor, created_at, kind, spec, targets, expires_at) VALUES (?,?,?,?,?,?,?)",
                (
                    cid,
                    actor,
                    now,
                    cmd.kind,
                    _spec(frame, sigs),
                    msgspec.json.encode(targets).decode(),
                    cmd.expires_at,
                ),
            )
            await con.executemany(
                "INSERT INTO command_runs (command_id, node_id, status, finished_at) VALUES (?,?,?,?)",
                [(cid, r.node_id, r.status, r.finished_at) for r in runs.values()],
            )
        self.live[cid] = cmd
        counts = {s: sum(1 for r in runs.values() if r.status == s) for s in ("sent", "queued", "offline")}
        # The env may carry secrets: the audit keeps its keys, never its values.
        detail = {
            "command": cmd.describe,
            "targets": msgspec.to_builtins(targets),
            "nodes": sorted(runs),
            "env_keys": sorted(frame.env),
            "cwd": frame.cwd,
            # Which operator keys signed it (the agents check them); empty: sent unsigned.
            "signed_by": sorted({s.key_id for s in sigs.values()}),
            **counts,
        }
        action = f"service.{frame.service.action}" if frame.service else "command.run"
        await self.audit.record(actor, action, _target_label(targets), "dispatched", detail)
        log.info("command %s by %s: %s on %d node(s) %s", cid, actor, cmd.describe, len(runs), counts)
        for n in nodes:
            if runs[n.id].status == "sent":
                await self._send(n, cmd.frame_for(n.id), cmd)
        self._check_done(cmd)
        return cmd

    async def _send(self, node: NodeState, frame: p.Frame, cmd: LiveCommand) -> None:
        link = node.link
        if link is None:
            await self._finish(cmd, node.id, "offline", None, "node went offline before the command was sent")
            return
        try:
            await link.send(frame)
        except ConnectionError:
            await self._finish(cmd, node.id, "offline", None, "node went offline before the command was sent")

    async def on_output(self, node_id: int, frame: p.CommandOutput) -> None:
        cmd = self.live.get(frame.command_id)
        run = cmd.runs.get(node_id) if cmd else None
        if cmd is None or run is None or run.status in FINAL:
            log.warning("node %d sent output for unknown or finished command %s", node_id, frame.command_id)
            return
        size = len(frame.data)
        if run.kept[frame.stream] + size <= CORE_OUTPUT_CAP:
            (run.stdout if frame.stream == "stdout" else run.stderr).append(frame.data)
        run.kept[frame.stream] += size
        # Operators only, as GET /commands/{id}: output can hold whatever secrets a command prints.
        self.bus.publish(
            node_id,
            p.CommandOutput(
                command_id=frame.command_id, stream=frame.stream, data=frame.data, node_id=node_id
            ),
            Role.OPERATOR,
        )

    async def undelivered(self, node_id: int, command_id: str) -> None:
        """The core holding the node's socket could not hand it the command: it went offline."""
        cmd = self.live.get(command_id)
        if cmd is not None and node_id in cmd.runs and cmd.runs[node_id].status == "sent":
            await self._finish(cmd, node_id, "offline", None, "node went offline before the command was sent")

    async def on_result(self, node_id: int, frame: p.CommandResult) -> None:
        cmd = self.live.get(frame.command_id)
        # A run given up as lost still takes its real result: the agent may have held it through an outage.
        if cmd is None or node_id not in cmd.runs or cmd.runs[node_id].status in FINAL - {"lost"}:
            log.warning("node %d sent a result for unknown or finished command %s", node_id, frame.command_id)
            return
        await self._finish(cmd, node_id, frame.status, frame, frame.message)

    async def _finish(
        self, cmd: LiveCommand, node_id: int, status: str, result: p.CommandResult | None, message: str | None
    ) -> None:
        run = cmd.runs[node_id]
        if run.finishing:
            return
        run.finishing = True
        final = result or p.CommandResult(command_id=cmd.id, status="error", message=message)
        # Stored and audited first, shown second: whoever sees the run final also finds its rows.
        staged = dataclasses.replace(run, status=status, result=final, finished_at=time.time())
        r = staged.info()
        await self.db.execute(
            "UPDATE command_runs SET status=?, exit_code=?, signal=?, duration=?, stdout=?, stderr=?, stdout_bytes=?, "
            "stderr_bytes=?, truncated=?, message=?, services=?, finished_at=? WHERE command_id=? AND node_id=?",
            (
                status,
                r.exit_code,
                r.signal,
                r.duration,
                r.stdout,
                r.stderr,
                r.stdout_bytes,
                r.stderr_bytes,
                int(r.truncated),
                message,
                json.dumps(msgspec.to_builtins(r.services)) if r.services is not None else None,
                staged.finished_at,
                cmd.id,
                node_id,
            ),
        )
        outcome = status if r.exit_code is None else f"{status} (exit {r.exit_code})"
        if r.signal is not None:
            outcome += f" (signal {r.signal})"
        detail: dict[str, Any] = {"command_id": cmd.id, "command": cmd.describe, "signed_by": r.signed_by}
        if message and status in ("refused", "error"):
            detail["message"] = message  # why: an agent's refusal of an unsigned or replayed request
        await self.audit.record(cmd.actor, "command.result", f"node:{node_id}", outcome, detail)
        run.status, run.result, run.finished_at = status, final, staged.finished_at
        run.finishing = False
        self.bus.publish(
            node_id, msgspec.structs.replace(final, node_id=node_id, status=status), Role.OPERATOR
        )
        self._check_done(cmd)

    def _check_done(self, cmd: LiveCommand) -> None:
        if cmd.status != "running" and not cmd.done.is_set():
            cmd.done.set()
            log.info("command %s finished: %s", cmd.id, {r.node_id: r.status for r in cmd.runs.values()})

    async def cancel(self, cid: str, actor: str) -> LiveCommand | None:
        cmd = self.live.get(cid)
        if cmd is None:
            return None
        cmd.cancelled = True
        await self.db.execute("UPDATE commands SET cancelled = 1 WHERE id = ?", (cid,))
        await self.audit.record(actor, "command.cancel", f"command:{cid}", "ok", {"command": cmd.describe})
        for run in cmd.runs.values():
            if run.status == "queued":
                await self._finish(
                    cmd, run.node_id, "cancelled", None, "cancelled before it reached the node"
                )
            elif run.status == "sent":
                node = self.nodes.get(run.node_id)
                if node is not None and node.link is not None:
                    # The agent kills the process group and answers with a cancelled result. A link
                    # that is gone (or another core out of reach) ends the run as lost in the sweep.
                    with contextlib.suppress(ConnectionError):
                        await node.link.send(p.CommandCancel(command_id=cid))
        return cmd

    async def node_online(self, node: NodeState) -> None:
        """Hand a node the commands that were queued for it while it was away."""
        now = time.time()
        for cmd in list(self.live.values()):
            run = cmd.runs.get(node.id)
            if run is None or run.status != "queued":
                continue
            if cmd.expires_at is not None and cmd.expires_at < now:
                await self._finish(
                    cmd, node.id, "expired", None, "the node did not come online before expiry"
                )
                continue
            run.status = "sent"
            await self.db.execute(
                "UPDATE command_runs SET status='sent' WHERE command_id=? AND node_id=?", (cmd.id, node.id)
            )
            await self._send(node, cmd.frame_for(node.id), cmd)

    async def sweep(self) -> None:
        """Expire queued runs, give up on runs whose agent never answered, and forget finished commands."""
        now = time.time()
        for cmd in list(self.live.values()):
            for run in list(cmd.runs.values()):
                if run.status == "queued" and cmd.expires_at is not None and cmd.expires_at < now:
                    await self._finish(
                        cmd, run.node_id, "expired", None, "the node did not come online before expiry"
                    )
                elif (
                    run.status == "sent"
                    and now > cmd.created_at + cmd.frame.timeout + LOST_GRACE
                    and cmd.expires_at is None
                ):
                    await self._finish(
                        cmd, run.node_id, "lost", None, "the agent did not report a result in time"
                    )
            if cmd.status != "running" and now - cmd.created_at > 3600:
                del self.live[cmd.id]

    async def get(self, cid: str) -> CommandInfo | None:
        cmd = self.live.get(cid)
        if cmd is not None:
            return cmd.info()
        row = await self.db.fetchone(
            "SELECT id, actor, created_at, kind, spec, targets, expires_at, cancelled FROM commands WHERE id = ?",
            (cid,),
        )
        if row is None:
            return None
        runs = await self.db.fetchall(
            "SELECT node_id, status, exit_code, signal, duration, stdout, stderr, stdout_bytes, stderr_bytes, "
            "truncated, message, services, finished_at FROM command_runs WHERE command_id = ? ORDER BY node_id",
            (cid,),
        )
        frame = msgspec.json.decode(row[4], type=p.Command)
        signed = msgspec.json.decode(row[4], type=_StoredSignatures).signatures
        statuses = [r[1] for r in runs]
        status = ("cancelled" if row[7] else "done") if all(s in FINAL for s in statuses) else "interrupted"
        # Until the core that started it would have given up on it, another core follows it.
        if (
            status == "interrupted"
            and self.clustered
            and time.time() < (row[6] or row[2] + frame.timeout + LOST_GRACE)
        ):
            status = "running"
        return CommandInfo(
            id=row[0],
            user=row[1],
            created_at=row[2],
            kind=row[3],
            command=frame.shell if frame.shell is not None else frame.argv,
            service=frame.service,
            timeout=frame.timeout,
            targets=msgspec.json.decode(row[5], type=Targets),
            expires_at=row[6],
            # A core restarted mid-command never learns the outcome of runs still open.
            status=status,
            runs=[
                CommandRunInfo(
                    node_id=r[0],
                    status=r[1],
                    exit_code=r[2],
                    signal=r[3],
                    duration=r[4],
                    stdout=r[5],
                    stderr=r[6],
                    stdout_bytes=r[7],
                    stderr_bytes=r[8],
                    truncated=bool(r[9]),
                    message=r[10],
                    services=msgspec.json.decode(r[11], type=list[p.ServiceInfo]) if r[11] else None,
                    finished_at=r[12],
                    signed_by=signed[r[0]].key_id if r[0] in signed else None,
                )
                for r in runs
            ],
        )

    async def recent(self, limit: int) -> list[CommandInfo]:
        """The newest commands first, without their output (GET /commands/{id} has it)."""
        rows = await self.db.fetchall("SELECT id FROM commands ORDER BY created_at DESC LIMIT ?", (limit,))
        out = []
        for (cid,) in rows:
            info = await self.get(cid)
            if info is not None:
                runs = [msgspec.structs.replace(r, stdout="", stderr="") for r in info.runs]
                out.append(msgspec.structs.replace(info, runs=runs))
        return out


def policy_line(frame: p.Command) -> str:
    """The line an agent matches its [exec] patterns against (agent.exec.runner.command_line)."""
    if frame.service is not None:
        if frame.service.action == "list":
            return "service list"
        return f"service {frame.service.action} {frame.service.name or ''}".rstrip()
    return frame.shell if frame.shell is not None else shlex.join(frame.argv or [])


@functools.lru_cache(maxsize=64)
def _policy(allow: tuple[str, ...], deny: tuple[str, ...], windows: bool) -> Policy:
    """A fleet's agents mostly share a few [exec] configs: each is compiled once, not once a node."""
    return Policy(allow, deny, windows=windows)


def _verdict(
    node: NodeState,
    frame: p.Command,
    line: str,
    queue_offline: bool,
    signatures: dict[int, p.CommandSignature] | None,
    services: set[str] | None,
) -> tuple[Verdict, str | None]:
    """One node's answer to a preview, with the reason for anything but "run"."""
    report = node.exec_policy  # kept from its last hello while it is away
    offline = f"offline ({node.offline_reason or 'no connection'})"
    if not node.online and not queue_offline:
        return "refused", offline
    if report is not None and not report.enabled:
        return "refused", "remote execution is off on this agent ([exec] enabled = false)"
    if report is not None and report.signed_only and not (signatures and node.id in signatures):
        return (
            "refused",
            "this agent runs only signed requests ([exec] trusted_keys) and this one is unsigned",
        )
    if report is not None:
        policy = _policy(tuple(report.allow), tuple(report.deny), report.windows)
        why = policy.check(line, shell=frame.shell is not None) or policy.check_env(frame.env)
        if why is not None:
            return "refused", why
        if frame.service is not None and not report.services:
            return "refused", "this agent's platform has no service control"
    svc = frame.service
    if svc is not None and svc.name and services is not None and svc.name not in services:
        return "refused", f"service unknown: {svc.name!r} is not in the node's last service list"
    if not node.online:
        return "queue", f"{offline}: runs when it is back, unless it expires first"
    if report is None:
        return (
            "unknown",
            "the agent has not said what its [exec] allows (an older agent): it decides on arrival",
        )
    return "run", None


def _spec(frame: p.Command, signatures: dict[int, p.CommandSignature]) -> str:
    """commands.spec: the frame as sent, plus each node's signature when it was signed."""
    if not signatures:
        return msgspec.json.encode(frame).decode()
    spec = msgspec.to_builtins(frame)
    spec["signatures"] = {str(nid): msgspec.to_builtins(sig) for nid, sig in signatures.items()}
    return msgspec.json.encode(spec).decode()


def _target_label(t: Targets) -> str:
    parts = []
    if t.all:
        parts.append("all")
    if t.nodes:
        parts.append("nodes:" + ",".join(map(str, t.nodes)))
    if t.group is not None:
        parts.append(f"group:{t.group}")
    if t.tag is not None:
        parts.append(f"tag:{t.tag}")
    return " ".join(parts)
