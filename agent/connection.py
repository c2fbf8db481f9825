"""The agent's link to the core as an explicit state machine: dial, hello, stream, back off."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import websockets.exceptions
from websockets.asyncio.client import ClientConnection, connect

from servermanager.agent.collectors import agent_version
from servermanager.agent.commands import Runner, make_runner
from servermanager.agent.credentials import Credentials, CredentialStore, StateDirError
from servermanager.agent.settings import AgentSettings, normalize_core_url
from servermanager.agent.spool import Spool
from servermanager.common.backoff import Backoff
from servermanager.common.metrics import HostFacts
from servermanager.common.protocol import (
    PROTOCOL_VERSION,
    Ack,
    CloseCode,
    Command,
    CommandCancel,
    CoreToAgent,
    Error,
    FrameError,
    Hello,
    Ping,
    Pong,
    Welcome,
    decode,
    decoder,
    encode,
)

log = logging.getLogger(__name__)

# websockets logs every frame at DEBUG, and the hello/welcome frames carry the credential or the
# enrollment token. Its logger gets a floor of INFO so no log level setting can leak them.
_ws_log = logging.getLogger("servermanager.agent.connection.wire")
_ws_log.setLevel(logging.INFO)

# Silence allowed from the core, on top of 3 intervals: covers a GC pause or a busy core.
HEARTBEAT_SLACK = 5.0
# A batch the core has not acknowledged after this long means a stuck core; reconnecting resends.
MIN_ACK_TIMEOUT = 30.0
# Any frame tells the core this agent lives, so an agent sending a batch every interval needs no
# pings. One goes out after an interval plus this grace (half an interval, at most this many
# seconds) without any frame: enough to absorb the jitter of a batch's send time, and the longest
# silence stays within the core's heartbeat timeout (heartbeat_misses x interval + 1 s).
MAX_PING_GRACE = 0.5
CLOSE_TIMEOUT = 3.0

_SAMPLES_PREFIX = b'{"type":"samples","samples":['
_SAMPLES_SUFFIX = b"]}"


class ConnState(enum.Enum):
    """Where the connection is; every change is logged as one line."""

    IDLE = "idle"  # constructed, run() not called yet
    CONNECTING = "connecting"  # TCP/TLS/WebSocket opening
    HANDSHAKING = "handshaking"  # hello sent, waiting for welcome
    STREAMING = "streaming"  # welcomed: samples, acks and heartbeats flow
    BACKOFF = "backoff"  # waiting before the next attempt
    STOPPED = "stopped"  # stop() was called; terminal
    AUTH_FAILED = "auth_failed"  # the core refused the credential/token (4401); terminal
    INCOMPATIBLE = "incompatible"  # the core speaks another protocol version (4426); terminal


TERMINAL_STATES = frozenset({ConnState.STOPPED, ConnState.AUTH_FAILED, ConnState.INCOMPATIBLE})


class AgentError(Exception):
    """A condition retrying cannot fix; the CLI exits with `exit_code` and the message."""

    exit_code = 2


class AuthFailedError(AgentError):
    """The core closed with 4401: bad or revoked credential, or an expired/used enrollment token."""


class NotEnrolledError(AuthFailedError):
    """No stored credential and no enrollment token: nothing to authenticate with."""


class ProtocolMismatchError(AgentError):
    """The core closed with 4426: this agent's protocol version is not one it speaks."""


class StateWaitError(RuntimeError):
    """wait_state() gave up: the connection reached a terminal state that was not awaited."""


class _ConnectionDead(Exception):
    """The core went silent or stopped acknowledging; the socket is abandoned and redialled."""


# ---------------------------------------------------------------- observation


class Pulse:
    """Wakes every waiter whenever something observable changed (counters, state)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        # Swap in a fresh event so waiters that re-check and wait again do not spin.
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once predicate() holds; bound it with `async with asyncio.timeout(...)`."""
        while not predicate():
            await self._event.wait()


@dataclass
class Stats:
    """Counters since this process started; read them, never write them from outside."""

    samples_spooled: int = 0  # appended to the spool by this agent's sampler
    sample_errors: int = 0  # ticks lost to a failing collector or spool
    connects: int = 0  # WebSocket openings
    welcomes: int = 0  # handshakes the core accepted
    batches_sent: int = 0
    samples_sent: int = 0  # including resends after a reconnect
    batches_acked: int = 0
    samples_acked: int = 0  # committed by the core and deleted from the spool
    samples_rejected: int = 0  # refused by the core (e.g. clock skew) and deleted
    samples_discarded: int = 0  # too big for one frame, dropped undelivered
    last_acked_seq: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    core_errors: int = 0  # error frames from the core
    invalid_frames: int = 0  # frames from the core we could not decode


@dataclass
class _Batch:
    from_seq: int
    upto_seq: int
    count: int
    sent_at: float  # monotonic


def build_samples_frame(rows: list[tuple[int, bytes]], max_bytes: int) -> tuple[bytes, int, list[int]]:
    """The longest prefix of `rows` that fits one `samples` frame of at most max_bytes.

    The spool stores each Sample already encoded, so the frame is spliced from those bytes rather
    than decoded and re-encoded. Returns (frame, rows used, seqs that can never fit on their
    own). A row too big alone is skipped only while nothing was taken yet, so the batch stays
    one contiguous seq range.
    """
    budget = max_bytes - len(_SAMPLES_PREFIX) - len(_SAMPLES_SUFFIX)
    parts: list[bytes] = []
    size = 0
    used = 0
    oversize: list[int] = []
    for seq, data in rows:
        if len(data) > budget:
            if parts:
                break  # let the next batch start with it (and discard it there)
            oversize.append(seq)
            used += 1
            continue
        extra = len(data) + (1 if parts else 0)  # the comma
        if size + extra > budget:
            break
        parts.append(data)
        size += extra
        used += 1
    frame = _SAMPLES_PREFIX + b",".join(parts) + _SAMPLES_SUFFIX if parts else b""
    return frame, used, oversize


async def _race(*coros: Coroutine[Any, Any, Any]) -> None:
    """Run until the first finishes; cancel the rest; re-raise the first one's exception."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        if t in done and not t.cancelled():
            exc = t.exception()
            if exc is not None:
                raise exc


def _close_code(exc: websockets.exceptions.ConnectionClosed) -> tuple[int | None, str]:
    if exc.rcvd is not None:
        return exc.rcvd.code, exc.rcvd.reason
    return None, ""


def _describe_code(code: int | None) -> str:
    if code is None:
        return "no close frame"
    try:
        return f"{code} ({CloseCode(code).name.lower()})"
    except ValueError:
        return str(code)


# ---------------------------------------------------------------- the machine


def proxy_configured(environ: Mapping[str, str] | None = None, platform: str = sys.platform) -> bool:
    """Whether websockets' proxy lookup could find a proxy: as it does, from `*_proxy` variables.

    On Linux urllib.request.getproxies() reads only the environment, so with no such variable the
    lookup (and the import of urllib.request for it) is skipped. Elsewhere it also reads system
    settings (macOS configuration, the Windows registry), so there the lookup always runs.
    """
    if not platform.startswith("linux"):
        return True
    env = os.environ if environ is None else environ
    return any(k.lower().endswith("_proxy") and v for k, v in env.items())


class Connection:
    """Dials the core, authenticates, streams the spool, and reconnects with jittered backoff.

    Modelled on Beszel's agent connection manager: one loop owns the state, every transition is
    logged, and only the handshake verdicts 4401/4426 end it; anything else means back off and
    dial again. The sampler runs elsewhere and only calls notify_new_samples().
    """

    def __init__(
        self,
        settings: AgentSettings,
        spool: Spool,
        store: CredentialStore,
        facts: HostFacts,
        *,
        credentials: Credentials | None,
        enroll_token: str | None,
        stats: Stats | None = None,
        pulse: Pulse | None = None,
        rng: random.Random | None = None,
        commands: Runner | None = None,
    ) -> None:
        self.settings = settings
        self.url = normalize_core_url(settings.core)  # idempotent; covers hand-built settings
        self.spool = spool
        self.store = store
        self.facts = facts
        self.credentials = credentials
        self._enroll_token = enroll_token
        self.stats = stats or Stats()
        self.pulse = pulse or Pulse()
        # Remote operations: the runner answers every command frame, refusing them all unless
        # [exec] enables and allows them; its outbox is drained by _Stream's command sender.
        # With [exec] disabled it is a RefusingRunner, and the executing code is never imported.
        self.commands: Runner = commands or make_runner(
            settings.exec, max_frame_bytes=settings.max_frame_bytes, on_change=self.pulse.fire
        )
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max, rng)
        self.interval = settings.interval
        self.interval_changed = asyncio.Event()
        self.node_id: int | None = credentials.node_id if credentials else None
        self.heartbeat_timeout: float | None = None
        self._state = ConnState.IDLE
        self._waiters: list[tuple[frozenset[ConnState], asyncio.Future[ConnState]]] = []
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # new samples or a freed in-flight slot: the sender may act
        self._send_lock = asyncio.Lock()
        self.last_sent = 0.0  # monotonic time of the last frame sent, for idle-only pings

    # ------------------------------------------------------------ state

    @property
    def state(self) -> ConnState:
        return self._state

    def _set_state(self, new: ConnState, why: str) -> None:
        old, self._state = self._state, new
        level = logging.WARNING if new in (ConnState.AUTH_FAILED, ConnState.INCOMPATIBLE) else logging.INFO
        log.log(level, "connection %s -> %s: %s", old.name, new.name, why)
        for wanted, fut in self._waiters:
            if fut.done():
                continue
            if new in wanted:
                fut.set_result(new)
            elif new in TERMINAL_STATES:
                names = ", ".join(sorted(s.name for s in wanted))
                fut.set_exception(StateWaitError(f"connection reached {new.name} while waiting for {names}"))
        self.pulse.fire()

    async def wait_state(self, *states: ConnState) -> ConnState:
        """Return once the state is one of `states` (at once if it already is).

        Raises StateWaitError if a terminal state that was not asked for is reached first; bound
        the wait with `async with asyncio.timeout(...)`.
        """
        if self._state in states:
            return self._state
        if self._state in TERMINAL_STATES:
            raise StateWaitError(f"connection is {self._state.name}; it will not change again")
        fut: asyncio.Future[ConnState] = asyncio.get_running_loop().create_future()
        entry = (frozenset(states), fut)
        self._waiters.append(entry)
        try:
            return await fut
        finally:
            self._waiters.remove(entry)

    # ------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask run() to close the socket (1001) and return; safe to call at any time, repeatedly."""
        self._stop.set()

    def notify_new_samples(self) -> None:
        self._wake.set()

    def set_interval(self, seconds: float) -> None:
        if seconds != self.interval:
            self.interval = seconds
            self.interval_changed.set()
            self.pulse.fire()

    @property
    def dead_after(self) -> float:
        return 3 * self.interval + HEARTBEAT_SLACK

    async def run(self) -> None:
        """Connect, stream and reconnect until stop(); raises AgentError on a terminal refusal."""
        if self.credentials is None and not self._enroll_token:
            self._set_state(ConnState.AUTH_FAILED, "not enrolled and no enrollment token")
            raise NotEnrolledError(
                "this agent is not enrolled: pass --enroll-token TOKEN or set SM_AGENT_ENROLL_TOKEN "
                "(create one on the core with: servermanager admin enroll-token)"
            )
        if self.credentials is not None and self._enroll_token:
            log.info("already enrolled as node %d; ignoring the enrollment token", self.credentials.node_id)
        try:
            while not self._stop.is_set():
                await self._attempt()
                if self._stop.is_set():
                    break
                delay = self.backoff.next()
                self._set_state(
                    ConnState.BACKOFF, f"retrying in {delay:.1f}s (attempt {self.backoff.attempt})"
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop.wait()
        finally:
            if self._state not in TERMINAL_STATES:
                self._set_state(ConnState.STOPPED, "stop requested")

    async def _attempt(self) -> None:
        """One connection from dial to close; returns normally unless the refusal is terminal."""
        self._set_state(ConnState.CONNECTING, self.url)
        try:
            ws = await connect(
                self.url,
                max_size=self.settings.max_frame_bytes,
                open_timeout=self.settings.connect_timeout,
                # One liveness mechanism, the protocol's ping/pong, rather than two.
                ping_interval=None,
                # Sample frames are small; per-message deflate would cost a zlib state each way
                # (hundreds of KB of RSS) and CPU on both ends for little saved bandwidth.
                compression=None,
                close_timeout=CLOSE_TIMEOUT,
                proxy=True if proxy_configured() else None,
                user_agent_header=f"servermanager-agent/{agent_version()}",
                logger=_ws_log,
            )
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            log.warning("cannot connect to %s: %s", self.url, exc or type(exc).__name__)
            return
        self.stats.connects += 1
        close_code, close_reason = CloseCode.GOING_AWAY, "agent reconnecting"
        try:
            self._set_state(ConnState.HANDSHAKING, "connected, sending hello")
            await _race(self._session(ws), self._stop.wait())
            close_reason = "agent stopping"
        except websockets.exceptions.ConnectionClosed as exc:
            self._closed_by_core(exc)
        except _ConnectionDead as exc:
            log.warning("connection to core lost: %s", exc)
        except TimeoutError:
            log.warning("core did not answer hello within %.0fs", self.settings.connect_timeout)
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            log.warning("connection to core failed: %s", exc)
        finally:
            with contextlib.suppress(Exception):
                await ws.close(close_code, close_reason)

    def _closed_by_core(self, exc: websockets.exceptions.ConnectionClosed) -> None:
        code, reason = _close_code(exc)
        why = f"core closed the connection: {_describe_code(code)}" + (f": {reason}" if reason else "")
        if code == CloseCode.UNAUTHORIZED:
            self._set_state(ConnState.AUTH_FAILED, why)
            what = "credential" if self.credentials else "enrollment token"
            raise AuthFailedError(
                f"the core refused this agent's {what} ({reason or 'unauthorized'}); "
                + (
                    f"remove {self.store.path} and enroll again with a new --enroll-token"
                    if self.credentials
                    else "create a new one with: servermanager admin enroll-token"
                )
            )
        if code == CloseCode.UNSUPPORTED_PROTOCOL:
            self._set_state(ConnState.INCOMPATIBLE, why)
            raise ProtocolMismatchError(
                f"the core does not speak protocol version {PROTOCOL_VERSION} ({reason or 'unsupported'}); "
                "upgrade the agent or the core so they match"
            )
        log.warning("%s", why)

    # ------------------------------------------------------------ one session

    async def _send(self, ws: ClientConnection, data: bytes) -> None:
        # Sender, heartbeat and pong replies share the socket; one complete frame at a time.
        async with self._send_lock:
            await ws.send(data, text=True)
            self.last_sent = time.monotonic()

    async def _session(self, ws: ClientConnection) -> None:
        creds = self.credentials
        hello = Hello(
            protocol=PROTOCOL_VERSION,
            host=self.facts,
            credential=creds.credential if creds else None,
            enroll_token=None if creds else self._enroll_token,
            spool_dropped=self.spool.dropped,
            interval=self.interval,
        )
        await self._send(ws, encode(hello))
        async with asyncio.timeout(self.settings.connect_timeout):
            welcome = await self._await_welcome(ws)
        await self._accept_welcome(welcome)
        self.backoff.reset()
        boundary = await asyncio.to_thread(lambda: self.spool.last_seq)
        backlog = await asyncio.to_thread(self.spool.count)
        self._set_state(
            ConnState.STREAMING,
            f"node {welcome.node_id}, interval {self.interval:g}s, {backlog} spooled to send",
        )
        await _Stream(self, ws, boundary).run()

    async def _await_welcome(self, ws: ClientConnection) -> Welcome:
        dec = decoder(CoreToAgent)
        while True:
            frame = self._decode(dec, await ws.recv())
            if isinstance(frame, Welcome):
                return frame
            if isinstance(frame, Ping):
                await self._send(ws, encode(Pong(ts=frame.ts)))
            elif isinstance(frame, Error):
                self._log_core_error(frame)
            elif frame is not None:
                log.warning("ignoring %s frame before welcome", type(frame).__name__.lower())

    async def _accept_welcome(self, w: Welcome) -> None:
        if w.credential:
            # Enrollment (or rotation): the token may have been single-use, so the credential is
            # on disk before anything else happens on this connection.
            creds = Credentials(node_id=w.node_id, credential=w.credential, core=self.url)
            try:
                await asyncio.to_thread(self.store.save, creds)
            except (StateDirError, OSError) as exc:
                raise AgentError(f"cannot store the credential the core issued: {exc}") from None
            log.info(
                "%s as node %d; credential stored in %s",
                "enrolled" if self.credentials is None else "credential renewed",
                w.node_id,
                self.store.path,
            )
            self.credentials = creds
        elif self.credentials is None:
            log.error("the core welcomed this agent without issuing a credential; it will need a token again")
        elif self.credentials.node_id != w.node_id:
            log.warning("the core now calls this agent node %d (was %d)", w.node_id, self.credentials.node_id)
            self.credentials = Credentials(w.node_id, self.credentials.credential, self.credentials.core)
            with contextlib.suppress(StateDirError, OSError):
                await asyncio.to_thread(self.store.save, self.credentials)
        self.node_id = w.node_id
        if w.protocol != PROTOCOL_VERSION:
            log.warning("core welcomed with protocol %d, this agent speaks %d", w.protocol, PROTOCOL_VERSION)
        if w.interval is not None:
            if w.interval >= 1:
                if w.interval != self.interval:
                    log.info("sampling every %gs as the core asks (was %gs)", w.interval, self.interval)
                self.set_interval(w.interval)
            else:
                log.warning("ignoring the core's interval %gs: below the 1s minimum", w.interval)
        self.heartbeat_timeout = w.heartbeat_timeout
        if w.last_seq is not None and await asyncio.to_thread(self.spool.advance_seq, w.last_seq):
            # The core has seen higher seqs than this spool remembers (spool lost or rolled
            # back): continue above them so seq stays strictly increasing for this node.
            log.warning("spool seq moved up to the core's last seq %d", w.last_seq)
        self.stats.welcomes += 1

    def _decode(self, dec: Any, data: str | bytes) -> Any:
        try:
            return decode(dec, data)
        except FrameError as exc:
            # Never fatal: a newer core may send frames this agent does not know yet.
            self.stats.invalid_frames += 1
            log.warning("ignoring invalid frame from core (%s): %.200s", exc.code, exc)
            return None

    def _log_core_error(self, frame: Error) -> None:
        self.stats.core_errors += 1
        log.warning("core reported error %s: %.500s", frame.code, frame.message)


class _Stream:
    """Streaming over one welcomed socket: sender, receiver and heartbeat tasks.

    Samples with seq <= boundary were spooled before this connection: the backlog, sent oldest
    first. Newer ones are live. The sender alternates between the two so a long backfill never
    delays live samples by more than one batch. Each batch is one contiguous seq range of the
    spool, which is exactly what the core's ack names and what delete_range removes.
    """

    def __init__(self, conn: Connection, ws: ClientConnection, boundary: int) -> None:
        self.conn = conn
        self.ws = ws
        self.backlog_after = 0
        self.backlog_upto = boundary
        self.live_after = boundary
        self.inflight: dict[int, _Batch] = {}  # by upto_seq, which the ack names
        self.live_turn = True
        s = conn.settings
        self.batch_size = s.batch_size
        self.max_inflight = s.max_inflight_batches
        self.max_bytes = s.max_frame_bytes

    async def run(self) -> None:
        outbox = self.conn.commands.outbox
        if outbox.held_results:
            log.info("sending %d command result(s) held while disconnected", outbox.held_results)
        outbox.set_online(True)
        try:
            await _race(self._receiver(), self._sender(), self._heartbeat(), self._command_sender())
        finally:
            outbox.set_online(False)

    # ------------------------------------------------------------ sending

    async def _sender(self) -> None:
        wake = self.conn._wake
        while True:
            # Clear before looking, so a sample appended meanwhile re-sets it and is not missed.
            wake.clear()
            sent = len(self.inflight) < self.max_inflight and await self._send_one()
            if not sent:
                await wake.wait()

    async def _send_one(self) -> bool:
        kinds = ("live", "backlog") if self.live_turn else ("backlog", "live")
        for kind in kinds:
            if await self._send_batch(kind):
                self.live_turn = kind == "backlog"
                return True
        return False

    async def _send_batch(self, kind: str) -> bool:
        spool = self.conn.spool
        while True:
            if kind == "backlog":
                if self.backlog_after >= self.backlog_upto:
                    return False
                rows = await asyncio.to_thread(
                    spool.read_raw, self.batch_size, self.backlog_after, self.backlog_upto
                )
                if not rows:
                    self.backlog_after = self.backlog_upto
                    return False
            else:
                rows = await asyncio.to_thread(spool.read_raw, self.batch_size, self.live_after)
                if not rows:
                    return False
            frame, used, oversize = build_samples_frame(rows, self.max_bytes)
            last = rows[used - 1][0]
            if kind == "backlog":
                self.backlog_after = last
            else:
                self.live_after = last
            if oversize:
                n = await asyncio.to_thread(spool.discard, oversize)
                self.conn.stats.samples_discarded += n
                log.warning(
                    "dropped %d sample(s) larger than max_frame_bytes=%d (seq %d..%d)",
                    len(oversize),
                    self.max_bytes,
                    oversize[0],
                    oversize[-1],
                )
            if not frame:
                continue  # only oversize rows: look again past them
            sent_rows = [seq for seq, _ in rows[:used] if seq not in oversize]
            batch = _Batch(sent_rows[0], sent_rows[-1], len(sent_rows), time.monotonic())
            self.inflight[batch.upto_seq] = batch
            await self.conn._send(self.ws, frame)
            st = self.conn.stats
            st.batches_sent += 1
            st.samples_sent += batch.count
            log.debug(
                "sent %s batch seq %d..%d (%d samples)", kind, batch.from_seq, batch.upto_seq, batch.count
            )
            self.conn.pulse.fire()
            return True

    async def _command_sender(self) -> None:
        """Command output and results, one frame at a time, in order (a result after its output).

        The send lock is FIFO, so a sample batch waits behind at most one output chunk: a
        command printing megabytes does not delay the samples.
        """
        outbox = self.conn.commands.outbox
        while True:
            frame = await outbox.get()
            try:
                await self.conn._send(self.ws, encode(frame))
            except BaseException:
                outbox.requeue(frame)  # a result is kept for the next connection
                raise
            self.conn.pulse.fire()

    # ------------------------------------------------------------ receiving

    async def _receiver(self) -> None:
        conn = self.conn
        dec = decoder(CoreToAgent)
        while True:
            try:
                async with asyncio.timeout(conn.dead_after):
                    data = await self.ws.recv()
            except TimeoutError:
                raise _ConnectionDead(f"no frame from the core for {conn.dead_after:.0f}s") from None
            frame = conn._decode(dec, data)
            if isinstance(frame, Ack):
                await self._on_ack(frame)
            elif isinstance(frame, Ping):
                await conn._send(self.ws, encode(Pong(ts=frame.ts)))
            elif isinstance(frame, Pong):
                conn.stats.pongs_received += 1
                conn.pulse.fire()
            elif isinstance(frame, Command | CommandCancel):
                conn.commands.handle(frame)
            elif isinstance(frame, Error):
                conn._log_core_error(frame)
            elif isinstance(frame, Welcome):
                log.warning("ignoring a second welcome from the core")

    async def _on_ack(self, ack: Ack) -> None:
        conn = self.conn
        spool = conn.spool
        batch = self.inflight.pop(ack.upto_seq, None)
        if batch is None and not ack.from_seq:
            # Without from_seq an unknown upto could span batches still in flight; deleting on
            # a guess could lose samples, keeping them only costs a resend after reconnect.
            log.warning("ignoring ack for seq %d: no batch in flight ends there", ack.upto_seq)
            return
        lo = ack.from_seq or (batch.from_seq if batch else ack.upto_seq)
        if batch is not None and ack.from_seq and ack.from_seq != batch.from_seq:
            log.warning(
                "ack names seq %d..%d but the batch was %d..%d",
                lo,
                ack.upto_seq,
                batch.from_seq,
                batch.upto_seq,
            )
        deleted = await asyncio.to_thread(spool.delete_range, lo, ack.upto_seq)
        rejected = sorted(set(ack.rejected))
        outside = [s for s in rejected if not lo <= s <= ack.upto_seq]
        for seq in outside:
            deleted += await asyncio.to_thread(spool.delete_range, seq, seq)
        if rejected:
            log.warning(
                "core rejected %d sample(s) (seq %s), dropped them; check this host's clock",
                len(rejected),
                ", ".join(map(str, rejected[:10])) + (", ..." if len(rejected) > 10 else ""),
            )
        st = conn.stats
        st.batches_acked += 1
        st.samples_rejected += len(rejected)
        committed = (batch.count if batch is not None else deleted) - (len(rejected) - len(outside))
        st.samples_acked += max(0, committed)
        st.last_acked_seq = max(st.last_acked_seq, ack.upto_seq)
        conn._wake.set()  # a slot is free
        conn.pulse.fire()

    # ------------------------------------------------------------ heartbeat

    async def _heartbeat(self) -> None:
        conn = self.conn
        while True:
            # A ping is only for an agent with nothing else to say (samples stopped, in-flight
            # window full), which halves the frames a streaming fleet sends. The deadline follows
            # the last frame sent, so a batch that comes a little late does not add a ping.
            quiet_limit = conn.interval + min(conn.interval / 2, MAX_PING_GRACE)
            if time.monotonic() - conn.last_sent >= quiet_limit:
                await conn._send(self.ws, encode(Ping(ts=time.time())))
                conn.stats.pings_sent += 1
            if self.inflight:
                oldest = min(b.sent_at for b in self.inflight.values())
                limit = max(MIN_ACK_TIMEOUT, conn.dead_after)
                if time.monotonic() - oldest > limit:
                    raise _ConnectionDead(f"no ack from the core for {limit:.0f}s")
            # Until the silence would reach the limit, and at least once an interval for the acks.
            quiet_left = conn.last_sent + quiet_limit - time.monotonic()
            await asyncio.sleep(max(0.0, min(quiet_left, conn.interval)))
