"""The core client: REST over aiohttp, the live /ws/client socket with reconnects, and polling while it is down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import msgspec
from PySide6.QtCore import QObject, Signal

from servermanager.common import protocol as p
from servermanager.common import rest as m
from servermanager.desktop.aio import Aio

log = logging.getLogger(__name__)

T = TypeVar("T")

API = "/api/v1"


class LinkState(StrEnum):
    """What the status bar shows about the link to the core."""

    IDLE = "idle"  # signed out
    CONNECTING = "connecting"
    CONNECTED = "connected"  # live socket up: pushed updates
    RECONNECTING = "reconnecting"  # socket down, trying again; polling is off
    POLLING = "polling"  # socket down, REST polling works
    OFFLINE = "offline"  # neither the socket nor REST reach the core


class CoreError(Exception):
    """A failure talking to the core, phrased for the person at the keyboard."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


def _host(url: str) -> str:
    try:
        return urlsplit(url).netloc or url
    except ValueError:
        return url


def describe(exc: BaseException, url: str) -> CoreError:
    """Turn a transport exception into words; the traceback goes to the log, not the user."""
    if isinstance(exc, CoreError):
        return exc
    host = _host(url)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or str(exc.certificate_error)
        return CoreError(
            "certificate",
            f"The certificate of {host} does not match its address or is not trusted ({reason}). "
            "Check the address, or install the core's certificate.",
        )
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return CoreError("certificate", f"The certificate of {host} has changed since it was pinned.")
    if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ClientConnectorSSLError):
        return CoreError("ssl", f"A secure connection to {host} could not be set up. Is it really https?")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return CoreError("unreachable", f"The name {urlsplit(url).hostname or host} could not be found.")
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionError):
        return CoreError(
            "unreachable", f"Cannot reach the core at {host}. Check the address and that the core is running."
        )
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return CoreError(
            "ws_refused",
            f"{host} refused the live connection (HTTP {exc.status}); a proxy may be blocking WebSockets.",
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return CoreError("unreachable", f"The connection to {host} was cut off.")
    if isinstance(exc, TimeoutError):
        return CoreError("timeout", f"The core at {host} did not answer in time.")
    if isinstance(exc, aiohttp.InvalidURL | ValueError):
        return CoreError("bad_url", f"“{url}” is not a valid address; use e.g. http://core.example:8760.")
    if isinstance(exc, aiohttp.ClientError):
        return CoreError("unreachable", f"Talking to {host} failed: {exc}.")
    return CoreError("internal", f"Something went wrong: {exc}.")


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _http_error(status: int, body: bytes, url: str, *, login: bool) -> CoreError:
    try:
        detail = msgspec.json.decode(body, type=m.ErrorBody).error
    except msgspec.MsgspecError:
        return CoreError(
            "not_core",
            f"{_host(url)} answered HTTP {status}, but does not look like a Server Manager core.",
            status,
        )
    if detail.code == "bad_credentials":
        return CoreError("bad_credentials", "Wrong user name or password.", status)
    if status == 401:
        if login:
            return CoreError(
                "bad_token", "The core did not accept this token: it is wrong, expired or revoked.", status
            )
        return CoreError("session_expired", "Your session has expired. Please sign in again.", status)
    if status == 403:
        return CoreError("forbidden", f"Not allowed: {detail.message}.", status)
    if status == 404:
        return CoreError("not_found", "That node no longer exists.", status)
    return CoreError(detail.code, _sentence(detail.message), status)


@dataclass(frozen=True)
class Session:
    """Who is signed in where. An API token has no refresh token and never expires by itself."""

    url: str
    access_token: str
    user: str
    role: str
    refresh_token: str | None = None
    expires_at: float | None = None

    @property
    def is_api_token(self) -> bool:
        return self.refresh_token is None

    @property
    def can_edit(self) -> bool:
        return self.role in ("operator", "admin")


def ws_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return parts._replace(scheme=scheme, path=parts.path.rstrip("/") + p.CLIENT_WS_PATH).geturl()


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if url and "://" not in url:
        url = "http://" + url
    return url


class _SocketRefused(Exception):
    """The core closed the live socket with 4401: the token is no longer good."""


class CoreClient(QObject):
    """Everything the app says to one core. Emits Qt signals; never touches a widget."""

    state_changed = Signal(str, str)  # LinkState value, detail for the tooltip
    latency_changed = Signal(float)  # round-trip milliseconds
    session_changed = Signal(object)  # Session | None
    session_expired = Signal(str)  # the refresh token failed too: ask the user again
    refresh_token_rotated = Signal(str)  # store the new one wherever the old one was kept
    snapshot = Signal(list)  # list[NodeInfo] from the socket
    polled = Signal(list)  # list[NodeInfo] from REST while the socket is down
    node_status = Signal(object)  # p.NodeStatus
    node_updated = Signal(object)  # p.NodeInfo
    node_removed = Signal(int)
    sample = Signal(int, object)  # node id, mt.Sample
    command_output = Signal(object)  # p.CommandOutput (node_id filled in by the core)
    command_result = Signal(object)  # p.CommandResult

    def __init__(
        self,
        aio: Aio,
        *,
        backoff: tuple[float, float] = (1.0, 30.0),
        ping_every: float = 10.0,
        request_timeout: float = 10.0,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.aio = aio
        self.backoff = backoff
        self.ping_every = ping_every
        self.request_timeout = request_timeout
        self.session: Session | None = None
        self.state = LinkState.IDLE
        self._detail = ""
        self.latency_ms: float | None = None
        self.poll_count = 0  # successful REST polls, ever: the status bar and tests read it
        self._http: aiohttp.ClientSession | None = None
        self._poll_interval = 10.0
        self._poll_changed = asyncio.Event()
        self._reconnect_now = asyncio.Event()
        self._attempt = 0  # consecutive failed connection attempts
        self._live: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._refresh_lock = asyncio.Lock()
        self._dec = p.decoder(p.CoreToClient)

    # ------------------------------------------------------------ plumbing

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self._http

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

    def _set_session(self, session: Session | None) -> None:
        self.session = session
        self.session_changed.emit(session)

    async def _raw(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: dict[str, str] | None = None,
        login: bool = False,
    ) -> bytes:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = msgspec.json.encode(json) if json is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._client().request(
                method,
                url,
                headers=headers,
                data=data,
                params=params,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            ) as r:
                body = await r.read()
                status = r.status
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.info("%s %s failed: %r", method, url, exc)
            raise describe(exc, url) from None
        if status >= 400:
            raise _http_error(status, body, url, login=login)
        return body

    async def _call(
        self, method: str, path: str, type: type[T] | None = None, *, json: Any = None, params: Any = None
    ) -> T | None:
        """An authenticated REST call; an expired access token is refreshed once, silently."""
        for attempt in (1, 2):
            s = self.session
            if s is None:
                raise CoreError("signed_out", "You are not signed in.")
            try:
                body = await self._raw(
                    method, s.url + API + path, token=s.access_token, json=json, params=params
                )
            except CoreError as exc:
                if exc.kind == "session_expired" and attempt == 1 and await self._refresh(s):
                    continue
                if exc.kind == "session_expired":
                    self._expired(exc.message)
                raise
            if type is None or not body:
                return None
            try:
                return msgspec.json.decode(body, type=type)
            except msgspec.MsgspecError as exc:
                raise CoreError(
                    "bad_reply", f"The core sent a reply this app does not understand: {exc}"
                ) from None
        raise AssertionError("unreachable")

    async def _refresh(self, stale: Session) -> bool:
        """Exchange the refresh token; concurrent callers share one exchange."""
        if stale.refresh_token is None:
            return False
        async with self._refresh_lock:
            current = self.session
            if current is None:
                return False
            if current.access_token != stale.access_token:
                return True  # someone else refreshed while we waited
            try:
                pair = await self._token_pair(
                    current.url, "/auth/refresh", {"refresh_token": stale.refresh_token}
                )
            except CoreError as exc:
                log.info("refresh failed: %s", exc)
                return False
            self._set_session(self._with_pair(current, pair))
            assert pair.refresh_token
            self.refresh_token_rotated.emit(pair.refresh_token)
            log.info("access token refreshed")
            return True

    def _expired(self, message: str) -> None:
        if self.session is None:
            return
        self._set_session(None)
        self.aio.spawn(self.stop_live(), "stop-live")
        self._set_state(LinkState.IDLE, message)
        self.session_expired.emit(message)

    @staticmethod
    def _with_pair(s: Session, pair: m.TokenPair) -> Session:
        return replace(
            s,
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires_at=time.time() + pair.expires_in,
            role=pair.role or s.role,
        )

    async def _token_pair(self, url: str, path: str, body: dict[str, str]) -> m.TokenPair:
        raw = await self._raw("POST", url + API + path, json=body, login=True)
        try:
            return msgspec.json.decode(raw, type=m.TokenPair)
        except msgspec.MsgspecError:
            raise CoreError("not_core", f"{_host(url)} does not look like a Server Manager core.") from None

    # ------------------------------------------------------------ sign in / out

    async def login(self, url: str, username: str, password: str) -> Session:
        url = normalize_url(url)
        pair = await self._token_pair(url, "/auth/login", {"username": username, "password": password})
        session = self._with_pair(Session(url, pair.access_token, username, pair.role), pair)
        self._set_session(session)
        return session

    async def login_token(self, url: str, token: str) -> Session:
        """Sign in with an API token; the core says whose it is and which role it carries."""
        url = normalize_url(url)
        raw = await self._raw("GET", url + API + "/auth/me", token=token, login=True)
        try:
            me = msgspec.json.decode(raw, type=m.Me)
        except msgspec.MsgspecError:
            raise CoreError("not_core", f"{_host(url)} does not look like a Server Manager core.") from None
        session = Session(url, token, me.name, me.role)
        self._set_session(session)
        return session

    async def resume(self, url: str, refresh_token: str, username: str = "") -> Session:
        """Sign in again with a remembered refresh token (it rotates: store the new one)."""
        url = normalize_url(url)
        pair = await self._token_pair(url, "/auth/refresh", {"refresh_token": refresh_token})
        session = self._with_pair(Session(url, pair.access_token, username, pair.role), pair)
        self._set_session(session)
        if not username:
            me = await self._call("GET", "/auth/me", m.Me)
            assert me is not None
            self._set_session(replace(session, user=me.name, role=me.role))
        return self.session or session

    async def logout(self) -> None:
        """Revoke the session's tokens on the core (best effort) and go idle."""
        s = self.session
        await self.stop_live()
        self._set_session(None)
        self._set_state(LinkState.IDLE)
        if s is None or s.is_api_token:
            # An API token is shared with scripts; signing out of the app must not kill it.
            return
        try:
            await self._raw(
                "POST",
                s.url + API + "/auth/logout",
                token=s.access_token,
                json={"refresh_token": s.refresh_token},
            )
        except CoreError as exc:
            log.info("logout on the core failed (%s); tokens expire on their own", exc)

    # ------------------------------------------------------------ REST

    async def nodes(self) -> list[p.NodeInfo]:
        result = await self._call("GET", "/nodes", m.NodeList)
        assert result is not None
        return result.nodes

    async def patch_node(
        self,
        node_id: int,
        *,
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
    ) -> p.NodeInfo:
        body = m.NodePatch(name=name, group=group, tags=tags)
        node = await self._call("PATCH", f"/nodes/{node_id}", p.NodeInfo, json=body)
        assert node is not None
        return node

    async def delete_node(self, node_id: int) -> None:
        await self._call("DELETE", f"/nodes/{node_id}")

    async def history(
        self,
        node_id: int,
        start: float,
        end: float,
        resolution: str = "auto",
        fields: list[str] | None = None,
    ) -> m.History:
        params = {"from": f"{start:.3f}", "to": f"{end:.3f}", "resolution": resolution}
        if fields:
            params["fields"] = ",".join(fields)
        result = await self._call("GET", f"/nodes/{node_id}/metrics", m.History, params=params)
        assert result is not None
        return result

    # ------------------------------------------------------------ remote operations

    async def run_command(
        self, node_ids: list[int], command: str | list[str], timeout: float
    ) -> m.CommandInfo:
        """Start a command (a shell string, or an argv list run without a shell) on these nodes."""
        body = {"targets": {"nodes": node_ids}, "command": command, "timeout": timeout}
        info = await self._call("POST", "/commands", m.CommandInfo, json=body)
        assert info is not None
        return info

    async def command(self, command_id: str) -> m.CommandInfo:
        info = await self._call("GET", f"/commands/{command_id}", m.CommandInfo)
        assert info is not None
        return info

    async def cancel_command(self, command_id: str) -> m.CommandInfo:
        info = await self._call("POST", f"/commands/{command_id}/cancel", m.CommandInfo)
        assert info is not None
        return info

    async def services(self, node_id: int) -> list[p.ServiceInfo]:
        result = await self._call("GET", f"/nodes/{node_id}/services", m.ServiceList)
        assert result is not None
        return result.services

    async def service_action(self, node_id: int, name: str, action: str) -> m.CommandInfo:
        info = await self._call("POST", f"/nodes/{node_id}/services/{name}/{action}", m.CommandInfo)
        assert info is not None
        return info

    async def audit(
        self,
        *,
        user: str | None = None,
        action: str | None = None,
        node: int | None = None,
        start: float | None = None,
        end: float | None = None,
        limit: int = 500,
    ) -> list[m.AuditEntry]:
        params = {"limit": str(limit)}
        for key, value in (("user", user), ("action", action), ("node", node)):
            if value not in (None, ""):
                params[key] = str(value)
        if start is not None:
            params["from"] = f"{start:.3f}"
        if end is not None:
            params["to"] = f"{end:.3f}"
        result = await self._call("GET", "/audit", m.AuditList, params=params)
        assert result is not None
        return result.entries

    # ------------------------------------------------------------ live socket

    @property
    def poll_interval(self) -> float:
        return self._poll_interval

    def set_poll_interval(self, seconds: float) -> None:
        """0 turns polling off; a running poller picks the new interval up at once."""
        self._poll_interval = max(0.0, float(seconds))
        self._poll_changed.set()
        if self._live is not None and self.state not in (LinkState.CONNECTED, LinkState.CONNECTING):
            self._ensure_poller()

    def start_live(self) -> None:
        if self._live is None or self._live.done():
            self._reconnect_now.clear()
            self._live = self.aio.spawn(self._run_live(), "live-socket")

    def reconnect_now(self) -> None:
        """Skip the rest of the back-off wait (the user asked, or the network came back)."""
        self._reconnect_now.set()

    async def stop_live(self) -> None:
        for task in (self._live, self._poller):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._live = self._poller = None

    async def close(self) -> None:
        await self.stop_live()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _run_live(self) -> None:
        self._attempt = 0
        self._set_state(LinkState.CONNECTING)
        while self.session is not None:
            s = self.session
            try:
                await self._socket(s)
                detail = "the core closed the live connection"
            except _SocketRefused:
                if await self._refresh(s):
                    continue  # new access token: reconnect at once
                self._expired("Your session has expired. Please sign in again.")
                return
            except CoreError as exc:
                detail = exc.message
                if exc.kind == "unreachable" and self._poll_interval == 0:
                    self._set_state(LinkState.OFFLINE, detail)
            self._socket_down(detail)
            lo, hi = self.backoff
            # Exponential back-off with jitter, so a restarted core is not hit by every client at once.
            delay = min(hi, lo * 2**self._attempt) * random.uniform(0.8, 1.2)
            self._attempt = min(self._attempt + 1, 16)
            log.info("live socket down (%s); retrying in %.1fs", detail, delay)
            self._reconnect_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconnect_now.wait(), delay)

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
        while self.session is not None and self._poll_interval > 0:
            try:
                nodes = await self.nodes()
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
                await asyncio.wait_for(self._poll_changed.wait(), self._poll_interval)

    async def _socket(self, s: Session) -> None:
        """One socket's life: auth, subscribe, then events until it ends (returns) or fails (raises)."""
        url = ws_url(s.url)
        try:
            ws = await asyncio.wait_for(
                self._client().ws_connect(url, heartbeat=30.0, max_msg_size=64 << 20), self.request_timeout
            )
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise describe(exc, s.url) from None
        pinger: asyncio.Task[None] | None = None
        try:
            await ws.send_bytes(p.encode(p.Auth(token=s.access_token)))
            first = await asyncio.wait_for(ws.receive(), self.request_timeout)
            if first.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                if ws.close_code == p.CloseCode.UNAUTHORIZED:
                    raise _SocketRefused
                raise CoreError("unreachable", f"the core closed the live connection ({ws.close_code})")
            ok = self._decode(first.data)
            if not isinstance(ok, p.AuthOk):
                raise CoreError("bad_reply", "the core did not confirm the live connection")
            if self.session is not None and ok.role != self.session.role:
                self._set_session(replace(self.session, role=ok.role))
            await ws.send_bytes(p.encode(p.Subscribe(all=True)))
            pinger = self.aio.spawn(self._pinger(ws), "live-ping")
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
            raise describe(exc, s.url) from None
        finally:
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
                self._attempt = 0  # a socket that got this far resets the back-off
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
            case p.Pong(ts=ts):
                self.latency_ms = max(0.0, (time.monotonic() - ts) * 1000.0)
                self.latency_changed.emit(self.latency_ms)
            case p.Ping(ts=ts):
                await ws.send_bytes(p.encode(p.Pong(ts=ts)))
            case p.Error(code=code, message=message):
                log.warning("core reported %s: %s", code, message)

    async def _pinger(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            while not ws.closed:
                await ws.send_bytes(p.encode(p.Ping(ts=time.monotonic())))
                await asyncio.sleep(self.ping_every)
