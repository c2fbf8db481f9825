"""The live link to the core: the /ws/client socket with reconnects, REST polling while it is down, and its state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from PySide6.QtCore import QObject, Signal

from servermanager.common import protocol as p
from servermanager.common.backoff import Backoff
from servermanager.desktop.aio import Aio
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import RestClient, Session
from servermanager.desktop.net.trust import ssl_for

log = logging.getLogger(__name__)

EXPIRED = "Your session has expired. Please sign in again."


class LinkState(StrEnum):
    """What the status bar shows about the link to the core."""

    IDLE = "idle"  # signed out
    CONNECTING = "connecting"
    CONNECTED = "connected"  # live socket up: pushed updates
    RECONNECTING = "reconnecting"  # socket down, trying again; polling is off
    POLLING = "polling"  # socket down, REST polling works
    OFFLINE = "offline"  # neither the socket nor REST reach the core


def ws_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return parts._replace(scheme=scheme, path=parts.path.rstrip("/") + p.CLIENT_WS_PATH).geturl()


class _SocketRefused(Exception):
    """The core closed the live socket with 4401: the token is no longer good."""


class LiveLink(QObject):
    """Pushed updates from the core for the REST client's session; polls REST while the socket is down.

    Emits Qt signals; never touches a widget.
    """

    state_changed = Signal(str, str)  # LinkState value, detail for the tooltip
    latency_changed = Signal(float)  # round-trip milliseconds
    snapshot = Signal(list)  # list[NodeInfo] from the socket
    polled = Signal(list)  # list[NodeInfo] from REST while the socket is down
    node_status = Signal(object)  # p.NodeStatus
    node_updated = Signal(object)  # p.NodeInfo
    node_removed = Signal(int)
    sample = Signal(int, object)  # node id, mt.Sample
    command_output = Signal(object)  # p.CommandOutput (node_id filled in by the core)
    command_result = Signal(object)  # p.CommandResult
    alert = Signal(object)  # common.alerts.Alert, as it is after a change
    logs_chunk = Signal(object)  # p.LogsChunk of a follow this app started (send_frame)

    def __init__(
        self,
        rest: RestClient,
        aio: Aio,
        *,
        backoff: tuple[float, float] = (1.0, 30.0),
        ping_every: float = 10.0,
        request_timeout: float = 10.0,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.rest = rest
        self.aio = aio
        # Jittered exponential waits between connection attempts, so a restarted core is not hit
        # by every client at once; reset by a socket that got as far as its snapshot.
        self.backoff = Backoff(*backoff)
        self.ping_every = ping_every
        self.request_timeout = request_timeout
        self.state = LinkState.IDLE
        self._detail = ""
        self.latency_ms: float | None = None
        self.poll_count = 0  # successful REST polls, ever: the status bar and tests read it
        self._poll_interval = 10.0
        self._poll_changed = asyncio.Event()
        self._reconnect_now = asyncio.Event()
        self._live: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._dec = p.decoder(p.CoreToClient)
        self._ws: aiohttp.ClientWebSocketResponse | None = None  # while authenticated
        rest.session_expired.connect(self._expired)

    # ------------------------------------------------------------ state

    def _set_state(self, state: LinkState, detail: str = "") -> None:
        """Announce a new state, or a new reason for the current one (the status bar's tooltip)."""
        if state != self.state:
            log.info("link %s -> %s %s", self.state.value, state.value, detail)
            self.state = state
            if state != LinkState.CONNECTED:
                self.latency_ms = None
        elif detail == self._detail:
            return
        self._detail = detail
        self.state_changed.emit(state.value, detail)

    def _expired(self, message: str) -> None:
        """The REST client dropped its session: nothing is live any more, and the user hears why."""
        self.aio.spawn(self.stop(), "stop-live")
        self._set_state(LinkState.IDLE, message)

    @property
    def poll_interval(self) -> float:
        return self._poll_interval

    def set_poll_interval(self, seconds: float) -> None:
        """0 turns polling off; a running poller picks the new interval up at once."""
        self._poll_interval = max(0.0, float(seconds))
        self._poll_changed.set()
        if self._live is not None and self.state not in (LinkState.CONNECTED, LinkState.CONNECTING):
            self._ensure_poller()

    # ------------------------------------------------------------ start and stop

    def start(self) -> None:
        """Go live for the REST client's current session (a no-op while already running)."""
        if self._live is None or self._live.done():
            self._reconnect_now.clear()
            self._live = self.aio.spawn(self._run(), "live-socket")

    def reconnect_now(self) -> None:
        """Skip the rest of the back-off wait (the user asked, or the network came back)."""
        self._reconnect_now.set()

    async def stop(self, *, idle: bool = False) -> None:
        """End the socket and the poller; idle: and show the link as signed out."""
        for task in (self._live, self._poller):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._live = self._poller = None
        if idle:
            self._set_state(LinkState.IDLE)

    # ------------------------------------------------------------ the socket's life

    async def _run(self) -> None:
        self.backoff.reset()
        self._set_state(LinkState.CONNECTING)
        while self.rest.session is not None:
            s = self.rest.session
            try:
                await self._socket(s)
                detail = "the core closed the live connection"
            except _SocketRefused:
                if await self.rest.refresh(s):
                    continue  # new access token: reconnect at once
                self.rest.expire(EXPIRED)
                return
            except CoreError as exc:
                detail = exc.message
                if exc.kind == "unreachable" and self._poll_interval == 0:
                    self._set_state(LinkState.OFFLINE, detail)
            self._socket_down(detail)
            delay = self.backoff.next()
            log.info("live socket down (%s); retrying in %.1fs", detail, delay)
            self._reconnect_now.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as the
            # event is set, and stopping the link would then hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._reconnect_now.wait()

    def _socket_down(self, detail: str) -> None:
        if self.state in (LinkState.CONNECTED, LinkState.CONNECTING, LinkState.RECONNECTING):
            self._set_state(LinkState.RECONNECTING, detail)
        self._ensure_poller()

    def _ensure_poller(self) -> None:
        if self._poll_interval > 0 and (self._poller is None or self._poller.done()):
            self._poller = self.aio.spawn(self._poll(), "poll-nodes")
        elif self._poll_interval == 0 and self.state == LinkState.POLLING:
            self._set_state(LinkState.RECONNECTING, "polling is off")

    async def _poll(self) -> None:
        """Poll REST while the socket is down; the socket coming back cancels this task."""
        while self.rest.session is not None and self._poll_interval > 0:
            try:
                nodes = await self.rest.nodes()
            except CoreError as exc:
                if exc.kind in ("session_expired", "signed_out"):
                    return
                self._set_state(LinkState.OFFLINE, exc.message)
            else:
                self.poll_count += 1
                if self.state not in (LinkState.CONNECTED, LinkState.CONNECTING):
                    was = self.state
                    self._set_state(
                        LinkState.POLLING, f"live updates unavailable; polling every {self._poll_interval:g}s"
                    )
                    self.polled.emit(nodes)
                    if was == LinkState.OFFLINE:
                        # The core is back, so its socket probably is too: do not sit out the back-off.
                        self.reconnect_now()
            self._poll_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._poll_changed.wait()

    async def _socket(self, s: Session) -> None:
        """One socket's life: auth, subscribe, then events until it ends (returns) or fails (raises)."""
        url = ws_url(s.url)
        try:
            async with asyncio.timeout(self.request_timeout):
                # The pin is checked in the TLS handshake: the token below goes only to the pinned core.
                ws = await self.rest.http().ws_connect(
                    url, heartbeat=30.0, max_msg_size=64 << 20, ssl=ssl_for(s.pin)
                )
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise self.rest.explain(exc, s.url) from None
        pinger: asyncio.Task[None] | None = None
        try:
            await ws.send_bytes(p.encode(p.Auth(token=s.access_token)))
            async with asyncio.timeout(self.request_timeout):
                first = await ws.receive()
            if first.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                if ws.close_code == p.CloseCode.UNAUTHORIZED:
                    raise _SocketRefused
                raise CoreError("unreachable", f"the core closed the live connection ({ws.close_code})")
            ok = self._decode(first.data)
            if not isinstance(ok, p.AuthOk):
                raise CoreError("bad_reply", "the core did not confirm the live connection")
            self.rest.set_role(ok.role)
            await ws.send_bytes(p.encode(p.Subscribe(all=True)))
            pinger = self.aio.spawn(self._pinger(ws), "live-ping")
            self._ws = ws
            async for msg in ws:
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                frame = self._decode(msg.data)
                if isinstance(frame, p.Batch):
                    for raw in frame.frames:
                        inner = self._decode(raw)
                        # The core never nests batches; one that did would be a broken peer.
                        if inner is not None and not isinstance(inner, p.Batch):
                            await self._dispatch(ws, inner)
                elif frame is not None:
                    await self._dispatch(ws, frame)
            if ws.close_code == p.CloseCode.UNAUTHORIZED:
                raise _SocketRefused
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self.rest.explain(exc, s.url) from None
        finally:
            self._ws = None
            if pinger is not None:
                pinger.cancel()
            await ws.close()

    def _decode(self, data: bytes | str | msgspec.Raw) -> Any:
        try:
            return p.decode(self._dec, data)
        except p.FrameError as exc:
            log.warning("ignoring a frame from the core (%s): %s", exc.code, exc)
            return None

    async def _dispatch(self, ws: aiohttp.ClientWebSocketResponse, frame: Any) -> None:
        match frame:
            case p.Snapshot(nodes=nodes):
                # The snapshot is authoritative: only now is the link truly live.
                if self._poller is not None:
                    self._poller.cancel()
                    self._poller = None
                self.snapshot.emit(nodes)
                self.backoff.reset()  # a socket that got this far resets the back-off
                self._set_state(LinkState.CONNECTED, "live updates")
            case p.SampleEvent(node_id=nid, sample=sample):
                self.sample.emit(nid, sample)
            case p.NodeStatus():
                self.node_status.emit(frame)
            case p.NodeUpdated(node=node):
                self.node_updated.emit(node)
            case p.NodeRemoved(node_id=nid):
                self.node_removed.emit(nid)
            case p.CommandOutput():
                self.command_output.emit(frame)
            case p.CommandResult():
                self.command_result.emit(frame)
            case p.AlertEvent(alert=alert):
                self.alert.emit(alert)
            case p.LogsChunk():
                self.logs_chunk.emit(frame)
            case p.Pong(ts=ts):
                self.latency_ms = max(0.0, (time.monotonic() - ts) * 1000.0)
                self.latency_changed.emit(self.latency_ms)
            case p.Ping(ts=ts):
                await ws.send_bytes(p.encode(p.Pong(ts=ts)))
            case p.Error(code=code, message=message):
                log.warning("core reported %s: %s", code, message)

    async def send_frame(self, frame: p.Frame) -> bool:
        """Send a request frame (logs_follow, logs_stop) on the live socket; False if it is down."""
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_bytes(p.encode(frame))
        except (ConnectionError, aiohttp.ClientError):
            return False
        return True

    async def _pinger(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            while not ws.closed:
                await ws.send_bytes(p.encode(p.Ping(ts=time.monotonic())))
                await asyncio.sleep(self.ping_every)
