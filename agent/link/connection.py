"""The agent's link to the core as an explicit state machine: dial, hello, stream, back off."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import secrets
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import websockets.exceptions
from websockets.asyncio.client import connect

from servermanager.agent.credentials import Credentials, CredentialStore, StateDirError
from servermanager.agent.exec.outbox import Outbox
from servermanager.agent.hostfacts import agent_version
from servermanager.agent.link.stream import ConnectionDead, LogsHandler, Stream, StreamContext, race
from servermanager.agent.link.tls import (
    PinMismatchError,
    check_pin,
    client_context,
    trust_for,
    untrusted_hint,
)
from servermanager.agent.link.wire import Wire
from servermanager.agent.settings import AgentSettings, ExecSettings, normalize_core_url
from servermanager.agent.spool import Spool
from servermanager.agent.stats import Pulse, Stats
from servermanager.common.backoff import Backoff
from servermanager.common.metrics import HostFacts
from servermanager.common.protocol import (
    PROTOCOL_VERSION,
    CloseCode,
    Command,
    CommandCancel,
    ExecReport,
    Hello,
    Incident,
    IncidentRequest,
    LogSources,
    Ping,
    Pong,
    Welcome,
    encode,
)

log = logging.getLogger(__name__)

# websockets logs every frame at DEBUG, and the hello/welcome frames carry the credential or the
# enrollment token. Its logger gets a floor of INFO so no log level setting can leak them.
_ws_log = logging.getLogger(f"{__name__}.websockets")
_ws_log.setLevel(logging.INFO)

CLOSE_TIMEOUT = 3.0


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
    dial again. Once welcomed, a Stream (link.stream) carries the socket until it fails. The
    sampler runs elsewhere and only calls notify_new_samples(); command frames go to `dispatch`,
    `outbox` holds the command frames to send, and `incident` answers snapshot requests.
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
        outbox: Outbox,
        dispatch: Callable[[Command | CommandCancel], None],
        incident: Callable[[IncidentRequest], Awaitable[Incident]] | None = None,
        logs: LogsHandler | None = None,
        stats: Stats | None = None,
        pulse: Pulse | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.url = normalize_core_url(settings.core)  # idempotent; covers hand-built settings
        self.spool = spool
        self.store = store
        self.facts = facts
        self.credentials = credentials
        self._enroll_token = enroll_token
        # The same on every attempt, and kept in the state dir until the credential is: a welcome
        # lost to a timeout or to a restart is given again, to the same node (see Hello.enroll_id).
        self._enroll_id: str | None = None
        # Which certificate the core must present: checked before the first frame goes out.
        self.trust = trust_for(settings, credentials, self.url)
        self._ssl = client_context(self.url, self.trust)
        self.stats = stats or Stats()
        self.pulse = pulse or Pulse()
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max, rng)
        self.interval = settings.interval
        self.interval_changed = asyncio.Event()
        self.node_id: int | None = credentials.node_id if credentials else None
        self.heartbeat_timeout: float | None = None
        self._state = ConnState.IDLE
        self._waiters: list[tuple[frozenset[ConnState], asyncio.Future[ConnState]]] = []
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # new samples or a freed in-flight slot: the sender may act
        # All a stream gets of this connection. Command frames go to `dispatch` (the agent's
        # runner) and the runner's outbox is drained between sample batches.
        self._stream_context = StreamContext(
            spool=spool,
            outbox=outbox,
            dispatch=dispatch,
            stats=self.stats,
            changed=self.pulse.fire,
            wake=self._wake,
            interval=lambda: self.interval,
            batch_size=settings.batch_size,
            max_inflight=settings.max_inflight_batches,
            max_frame_bytes=settings.max_frame_bytes,
            incident=incident,
            logs=logs,
        )

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
        creds = self.credentials
        if creds is not None and creds.pin and not self.trust.pin and not self.trust.ca_file:
            # The pin was for another URL: say so once, since this one is checked another way.
            log.warning(
                "the certificate pin kept since enrollment is for %s, not %s; verifying with the system's CAs",
                creds.core,
                self.url,
            )
        if self._ssl is not None:
            log.info("TLS: the core's certificate is %s", self.trust.describe())
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
        tls: dict[str, Any] = {"ssl": self._ssl} if self._ssl is not None else {}
        try:
            ws = await connect(
                self.url,
                **tls,
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
        except ssl.SSLCertVerificationError as exc:
            self.stats.tls_refusals += 1
            log.error("refusing the core at %s: %s", self.url, untrusted_hint(exc, self.trust))
            return
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            log.warning("cannot connect to %s: %s", self.url, exc or type(exc).__name__)
            return
        if self.trust.pin and self._ssl is not None:
            try:
                check_pin(ws.transport, self.url, self.trust.pin)
            except PinMismatchError as exc:
                # Before any frame: the hello carries the credential or the enrollment token.
                # Abort, not close: not even a close frame goes to whoever this is.
                self.stats.tls_refusals += 1
                ws.transport.abort()
                log.error("refusing the core: %s", exc)
                return
        self.stats.connects += 1
        close_code, close_reason = CloseCode.GOING_AWAY, "agent reconnecting"
        try:
            self._set_state(ConnState.HANDSHAKING, "connected, sending hello")
            await race(self._session(Wire(ws, self.stats)), self._stop.wait())
            close_reason = "agent stopping"
        except websockets.exceptions.ConnectionClosed as exc:
            self._closed_by_core(exc)
        except ConnectionDead as exc:
            log.warning("connection to core lost: %s", exc)
        except TimeoutError:
            log.warning("core did not answer hello within %gs", self.settings.connect_timeout)
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

    def _pin_to_keep(self) -> str | None:
        """The pin this connection was checked with, to keep with the credential; None if none."""
        if self._ssl is None or not self.trust.pin:
            return None
        return self.trust.pin

    # ------------------------------------------------------------ one session

    async def _session(self, wire: Wire) -> None:
        creds = self.credentials
        if creds is None and self._enroll_id is None:
            self._enroll_id = await asyncio.to_thread(self._kept_enroll_id)
        # Globs matched against the disk now (files appear and go): off the event loop.
        log_sources = await asyncio.to_thread(self._log_sources)
        hello = Hello(
            protocol=PROTOCOL_VERSION,
            host=self.facts,
            credential=creds.credential if creds else None,
            enroll_token=None if creds else self._enroll_token,
            enroll_id=None if creds else self._enroll_id,
            spool_dropped=self.spool.dropped,
            interval=self.interval,
            log_sources=log_sources,
            exec_policy=exec_report(self.settings.exec),
        )
        await wire.send(encode(hello))
        async with asyncio.timeout(self.settings.connect_timeout):
            welcome = await self._await_welcome(wire)
        await self._accept_welcome(welcome)
        self.backoff.reset()
        boundary = await asyncio.to_thread(lambda: self.spool.last_seq)
        backlog = await asyncio.to_thread(self.spool.count)
        self._set_state(
            ConnState.STREAMING,
            f"node {welcome.node_id}, interval {self.interval:g}s, {backlog} spooled to send",
        )
        await Stream(self._stream_context, wire, boundary).run()

    def _kept_enroll_id(self) -> str:
        try:
            return self.store.enroll_id()
        except OSError as exc:
            # The state dir was writable at start; if it no longer is, the credential cannot be kept
            # either, which the welcome says. An id for this process alone still covers its retries.
            log.warning(
                "cannot keep the enroll id in %s (%s); using one for this run only", self.store.dir, exc
            )
            return secrets.token_hex(16)

    def _log_sources(self) -> LogSources | None:
        logs = self._stream_context.logs
        return logs.sources() if logs is not None else None

    async def _await_welcome(self, wire: Wire) -> Welcome:
        while True:
            frame = await wire.recv()
            if isinstance(frame, Welcome):
                return frame
            if isinstance(frame, Ping):
                await wire.send(encode(Pong(ts=frame.ts)))
            elif frame is not None:
                log.warning("ignoring %s frame before welcome", type(frame).__name__.lower())

    async def _accept_welcome(self, w: Welcome) -> None:
        if w.credential:
            # Enrollment (or rotation): the token may have been single-use, so the credential is
            # on disk before anything else happens on this connection.
            creds = Credentials(
                node_id=w.node_id, credential=w.credential, core=self.url, pin=self._pin_to_keep()
            )
            try:
                await asyncio.to_thread(self.store.save, creds)
            except (StateDirError, OSError) as exc:
                raise AgentError(f"cannot store the credential the core issued: {exc}") from None
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.store.forget_enroll_id)
            log.info(
                "%s as node %d; credential stored in %s",
                "enrolled" if self.credentials is None else "credential renewed",
                w.node_id,
                self.store.path,
            )
            self.credentials = creds
        elif self.credentials is None:
            log.error("the core welcomed this agent without issuing a credential; it will need a token again")
        else:
            kept = self.credentials
            if kept.node_id != w.node_id:
                log.warning("the core now calls this agent node %d (was %d)", w.node_id, kept.node_id)
            pin = self._pin_to_keep()
            if pin and pin != kept.pin:
                log.warning(
                    "keeping the core's certificate pin %s from now on (was %s)", pin, kept.pin or "none"
                )
            if kept.node_id != w.node_id or (pin and (pin != kept.pin or kept.core != self.url)):
                self.credentials = Credentials(
                    w.node_id, kept.credential, self.url if pin else kept.core, pin or kept.pin
                )
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


def exec_report(ex: ExecSettings) -> ExecReport:
    """What [exec] lets run, for the hello: the core previews commands by it."""
    if not ex.enabled:
        return ExecReport(enabled=False)
    return ExecReport(
        enabled=True,
        allow=list(ex.allow),
        deny=list(ex.deny),
        signed_only=ex.requires_signatures,
        # The platforms agent.exec.services drives (named here so the hello does not import it).
        services=sys.platform.startswith("linux") or sys.platform in ("win32", "darwin"),
        windows=sys.platform == "win32",
    )
