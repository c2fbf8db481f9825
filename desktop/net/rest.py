"""Typed REST calls to the core, under a session whose access token is refreshed when it expires."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp
import msgspec
from PySide6.QtCore import QObject, Signal

from servermanager.common import protocol as p
from servermanager.common import rest as m
from servermanager.common.alerts import Alert
from servermanager.common.signing import new_command_id
from servermanager.desktop.net.errors import (
    CertificateChanged,
    CertificateUntrusted,
    CoreError,
    explain_error,
    host_of,
    http_error,
)
from servermanager.desktop.net.trust import peer_fingerprint, ssl_for

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

API = "/api/v1"


@dataclass(frozen=True)
class Session:
    """Who is signed in where. An API token has no refresh token and never expires by itself."""

    url: str
    access_token: str
    user: str
    role: str
    refresh_token: str | None = None
    expires_at: float | None = None
    device_token: str | None = None  # from a password login: send it with the next one
    pin: str | None = None  # the core's certificate fingerprint every connection must present
    # What the login answer asked of the user (a password sign-in only; not kept up to date after it):
    must_change_password: bool = False  # the password was generated or reset by an admin
    totp_setup_required: bool = False  # this role must sign in with two factors, and they are not set up

    @property
    def is_api_token(self) -> bool:
        return self.refresh_token is None

    @property
    def can_edit(self) -> bool:
        return self.role in ("operator", "admin")


class Signer(Protocol):
    """Signs a command for each of its nodes (desktop.signing.OperatorKey)."""

    async def sign(self, cmd: p.Command, node_ids: list[int]) -> dict[int, p.CommandSignature]: ...


def normalize_url(url: str) -> str:
    """A typed address as a URL. Without a scheme: https, except on loopback (plain, as a core
    serves it by default there)."""
    url = url.strip().rstrip("/")
    if url and "://" not in url:
        try:
            host = urlsplit("//" + url).hostname or ""
        except ValueError:
            host = ""  # not an address at all: the request says so
        url = ("http://" if _loopback(host) else "https://") + url
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Asks the person at the keyboard to confirm it is them (POST /auth/step-up done): True once the core
# accepted it, False when they declined. The app installs one (desktop.accountflow); none: not asked.
ConfirmIdentity = Callable[[], Awaitable[bool]]


def needs_step_up(
    fn: Callable[Concatenate[RestClient, P], Awaitable[T]],
) -> Callable[Concatenate[RestClient, P], Awaitable[T]]:
    """A call the core may refuse with `step_up_required` (commands, service actions): then the user
    is asked to confirm it is them, and the whole call (signing included) runs once more."""

    @functools.wraps(fn)
    async def wrapper(self: RestClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.stepped_up(lambda: fn(self, *args, **kwargs))

    return wrapper


def _with_pair(s: Session, pair: m.TokenPair) -> Session:
    return replace(
        s,
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_at=time.time() + pair.expires_in,
        role=pair.role or s.role,
    )


class RestClient(QObject):
    """The app's REST side of one core: holds the session, keeps its tokens fresh, never touches a widget."""

    session_changed = Signal(object)  # Session | None
    # The signed-in core presented another certificate than the pinned one (CertificateChanged):
    # nothing was sent; the user decides whether the new one is the core's.
    certificate_changed = Signal(object)
    session_expired = Signal(str)  # the refresh token failed too: ask the user again
    refresh_token_rotated = Signal(str)  # store the new one wherever the old one was kept

    def __init__(self, *, request_timeout: float = 10.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.request_timeout = request_timeout
        self.session: Session | None = None
        self.confirm_identity: ConfirmIdentity | None = None
        # Signs every command and service request (the operator's key); None sends them unsigned.
        self.signer: Signer | None = None
        self._http: aiohttp.ClientSession | None = None
        self._closed = False
        self._refresh_lock = asyncio.Lock()

    # ------------------------------------------------------------ plumbing

    def http(self) -> aiohttp.ClientSession:
        """The HTTP connection pool, shared with the live socket; none once the client is closed."""
        if self._closed:
            # A task that was waiting (on the keyring, a back-off) when the client closed must not
            # open a pool that nothing would ever close.
            raise CoreError("closed", "This connection to the core has been closed.")
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self._http

    async def close(self) -> None:
        """Close the pool for good: later requests raise CoreError("closed")."""
        self._closed = True
        if self._http is not None:
            await self._http.close()
            self._http = None

    def set_session(self, session: Session | None) -> None:
        self.session = session
        self.session_changed.emit(session)

    def set_pin(self, pin: str) -> None:
        """From now on the signed-in core must present this certificate (the user trusted a new one)."""
        if self.session is not None and pin != self.session.pin:
            self.set_session(replace(self.session, pin=pin))

    def set_role(self, role: str) -> None:
        """The core says the signed-in user's role is now `role` (the live socket's auth_ok)."""
        if self.session is not None and role != self.session.role:
            self.set_session(replace(self.session, role=role))

    async def request(
        self,
        method: str,
        url: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: dict[str, str] | None = None,
        login: bool = False,
        pin: str | None = None,
    ) -> bytes:
        """One HTTP request; the body of a success, a CoreError in words for anything else.

        pin: the certificate the core must present (checked before anything is sent). Without one,
        an https core that nothing vouches for raises CertificateUntrusted with its fingerprint.
        """
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = msgspec.json.encode(json) if json is not None else None
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self.http().request(
                method,
                url,
                headers=headers,
                data=data,
                params=params,
                ssl=ssl_for(pin),
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            ) as r:
                body = await r.read()
                status = r.status
        except aiohttp.ClientConnectorCertificateError as exc:
            log.info("%s %s failed: %r", method, url, exc)
            raise await self._untrusted(exc, url) from None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            log.info("%s %s failed: %r", method, url, exc)
            raise explain_error(exc, url) from None
        if status >= 400:
            raise http_error(status, body, url, login=login)
        return body

    async def _untrusted(self, exc: aiohttp.ClientConnectorCertificateError, url: str) -> CoreError:
        """An unverifiable certificate, in words, with its fingerprint for trust on first use."""
        reason = getattr(exc.certificate_error, "verify_message", None) or str(exc.certificate_error)
        try:
            presented = await peer_fingerprint(url, self.request_timeout)
        except (OSError, TimeoutError, ValueError) as probe:
            log.info("could not read the certificate of %s: %r", url, probe)
            return explain_error(exc, url)
        return CertificateUntrusted(url, presented, reason)

    def explain(self, exc: BaseException, url: str) -> CoreError:
        """A failure of the signed-in session's traffic in words; a changed certificate is announced."""
        error = explain_error(exc, url)
        self._announce(error)
        return error

    def _announce(self, error: CoreError) -> None:
        if isinstance(error, CertificateChanged) and self.session is not None:
            self.certificate_changed.emit(error)

    async def call(
        self, method: str, path: str, type: type[T] | None = None, *, json: Any = None, params: Any = None
    ) -> T | None:
        """An authenticated REST call; an expired access token is refreshed once, silently."""
        for attempt in (1, 2):
            s = self.session
            if s is None:
                raise CoreError("signed_out", "You are not signed in.")
            try:
                body = await self.request(
                    method, s.url + API + path, token=s.access_token, json=json, params=params, pin=s.pin
                )
            except CoreError as exc:
                self._announce(exc)
                if exc.kind == "session_expired" and attempt == 1 and await self.refresh(s):
                    continue
                if exc.kind == "session_expired":
                    self.expire(exc.message)
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

    async def stepped_up(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run op; if the core wants a fresh step-up first, have the user confirm it is them, then
        run op once more. Declining raises CoreError("step_up_declined")."""
        try:
            return await op()
        except CoreError as exc:
            if exc.kind != "step_up_required" or self.confirm_identity is None:
                raise
            log.info("the core asks for a step-up first")
            if not await self.confirm_identity():
                raise CoreError(
                    "step_up_declined", "Not done: it needs you to confirm it is you first.", exc.status
                ) from None
        return await op()

    async def refresh(self, stale: Session) -> bool:
        """Exchange the refresh token of `stale`; concurrent callers share one exchange."""
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
                    current.url, "/auth/refresh", {"refresh_token": stale.refresh_token}, current.pin
                )
            except CoreError as exc:
                log.info("refresh failed: %s", exc)
                return False
            self.set_session(_with_pair(current, pair))
            assert pair.refresh_token
            self.refresh_token_rotated.emit(pair.refresh_token)
            log.info("access token refreshed")
            return True

    def expire(self, message: str) -> None:
        """The session is dead (its refresh failed too): drop it, and say why."""
        if self.session is None:
            return
        self.set_session(None)
        self.session_expired.emit(message)

    async def _token_pair(self, url: str, path: str, body: dict[str, str], pin: str | None) -> m.TokenPair:
        raw = await self.request("POST", url + API + path, json=body, login=True, pin=pin)
        try:
            return msgspec.json.decode(raw, type=m.TokenPair)
        except msgspec.MsgspecError:
            raise CoreError("not_core", f"{host_of(url)} does not look like a Server Manager core.") from None

    # ------------------------------------------------------------ sign in / out

    async def login(
        self,
        url: str,
        username: str,
        password: str,
        device_token: str | None = None,
        *,
        pin: str | None = None,
        otp: str | None = None,
    ) -> Session:
        """Sign in with a password, and the authenticator's code (or a recovery code) when the user
        has two-factor sign-in: without it, such a user gets CoreError("otp_required")."""
        url = normalize_url(url)
        body = {"username": username, "password": password}
        if device_token:
            body["device_token"] = device_token
        if otp:
            body["otp"] = otp.strip().replace(" ", "")
        pair = await self._token_pair(url, "/auth/login", body, pin)
        session = _with_pair(
            Session(
                url,
                pair.access_token,
                username,
                pair.role,
                device_token=pair.device_token,
                pin=pin,
                must_change_password=pair.must_change_password,
                totp_setup_required=pair.totp_setup_required,
            ),
            pair,
        )
        self.set_session(session)
        return session

    async def login_token(self, url: str, token: str, *, pin: str | None = None) -> Session:
        """Sign in with an API token; the core says whose it is and which role it carries."""
        url = normalize_url(url)
        raw = await self.request("GET", url + API + "/auth/me", token=token, login=True, pin=pin)
        try:
            me = msgspec.json.decode(raw, type=m.Me)
        except msgspec.MsgspecError:
            raise CoreError("not_core", f"{host_of(url)} does not look like a Server Manager core.") from None
        session = Session(url, token, me.name, me.role, pin=pin)
        self.set_session(session)
        return session

    async def resume(
        self, url: str, refresh_token: str, username: str = "", *, pin: str | None = None
    ) -> Session:
        """Sign in again with a remembered refresh token (it rotates: store the new one)."""
        url = normalize_url(url)
        pair = await self._token_pair(url, "/auth/refresh", {"refresh_token": refresh_token}, pin)
        session = _with_pair(Session(url, pair.access_token, username, pair.role, pin=pin), pair)
        self.set_session(session)
        if not username:
            me = await self.call("GET", "/auth/me", m.Me)
            assert me is not None
            self.set_session(replace(session, user=me.name, role=me.role))
        return self.session or session

    async def logout(self) -> None:
        """Drop the session, then revoke its tokens on the core (best effort)."""
        s = self.session
        self.set_session(None)
        if s is None or s.is_api_token:
            # An API token is shared with scripts; signing out of the app must not kill it.
            return
        try:
            await self.request(
                "POST",
                s.url + API + "/auth/logout",
                token=s.access_token,
                json={"refresh_token": s.refresh_token},
                pin=s.pin,
            )
        except CoreError as exc:
            log.info("logout on the core failed (%s); tokens expire on their own", exc)

    # ------------------------------------------------------------ nodes

    async def nodes(self) -> list[p.NodeInfo]:
        result = await self.call("GET", "/nodes", m.NodeList)
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
        node = await self.call("PATCH", f"/nodes/{node_id}", p.NodeInfo, json=body)
        assert node is not None
        return node

    async def delete_node(self, node_id: int) -> None:
        await self.call("DELETE", f"/nodes/{node_id}")

    async def history(
        self,
        node_id: int,
        start: float,
        end: float,
        resolution: str = "auto",
        fields: list[str] | None = None,
        points: int | None = None,
    ) -> m.History:
        """Columns of [start, end]; with points, rows merged into at most that many (avg, min, max)."""
        params = {"from": f"{start:.3f}", "to": f"{end:.3f}", "resolution": resolution}
        if fields:
            params["fields"] = ",".join(fields)
        if points is not None:
            params["points"] = str(points)
        result = await self.call("GET", f"/nodes/{node_id}/metrics", m.History, params=params)
        assert result is not None
        return result

    async def series(self, node_id: int, kind: str = "custom") -> m.SeriesList:
        """The node's named series (custom metrics, checks; or with kind "device" its per-device
        series) with last values, and its plugins' status."""
        result = await self.call("GET", f"/nodes/{node_id}/series", m.SeriesList, params={"kind": kind})
        assert result is not None
        return result

    async def series_history(
        self, node_id: int, selector: str, start: float, end: float, resolution: str = "auto"
    ) -> m.History:
        """One named series over [start, end], in the metrics history's shape (its field: the selector)."""
        params = {"series": selector, "from": f"{start:.3f}", "to": f"{end:.3f}", "resolution": resolution}
        result = await self.call("GET", f"/nodes/{node_id}/series/history", m.History, params=params)
        assert result is not None
        return result

    async def processes(self, node_id: int, at: float | None = None) -> m.Processes:
        """The node's top processes at `at` (the snapshot at or just before it), default the latest."""
        params = {"at": f"{at:.3f}"} if at is not None else None
        result = await self.call("GET", f"/nodes/{node_id}/processes", m.Processes, params=params)
        assert result is not None
        return result

    async def containers(self, node_id: int, at: float | None = None) -> m.Containers:
        """The node's containers in the list at or just before `at`, default the latest."""
        params = {"at": f"{at:.3f}"} if at is not None else None
        result = await self.call("GET", f"/nodes/{node_id}/containers", m.Containers, params=params)
        assert result is not None
        return result

    async def container_history(
        self, node_id: int, name: str, start: float, end: float
    ) -> m.ContainerHistory:
        """One container's series over [start, end]."""
        params = {"name": name, "from": f"{start:.3f}", "to": f"{end:.3f}"}
        result = await self.call(
            "GET", f"/nodes/{node_id}/containers/history", m.ContainerHistory, params=params
        )
        assert result is not None
        return result

    # ------------------------------------------------------------ remote operations

    async def _command_body(
        self, targets: m.Targets, command: str | list[str] | p.ServiceRequest, timeout: float
    ) -> dict[str, Any]:
        """The body of POST /commands (a shell string or an argv list) or POST /services (a service
        request), signed for each target node when there is a signer; the preview takes the same."""
        body: dict[str, Any] = {"targets": msgspec.to_builtins(targets), "timeout": timeout}
        if isinstance(command, p.ServiceRequest):
            body["action"] = command.action
            if command.name is not None:
                body["name"] = command.name
            what: dict[str, Any] = {"service": command}
        else:
            body["command"] = command
            what = {"shell": command} if isinstance(command, str) else {"argv": command}
        if self.signer is not None:
            if targets.nodes is None:
                raise CoreError(
                    "invalid_targets", "Signed requests name their nodes: pick nodes, not a group or tag."
                )
            cid = new_command_id()
            frame = p.Command(command_id=cid, timeout=timeout, **what)
            signatures = await self.signer.sign(frame, targets.nodes)
            body["id"] = cid
            body["signatures"] = {str(n): msgspec.to_builtins(sig) for n, sig in signatures.items()}
        return body

    @needs_step_up
    async def run_command(
        self, node_ids: list[int], command: str | list[str], timeout: float
    ) -> m.CommandInfo:
        """Start a command (a shell string, or an argv list run without a shell) on these nodes,
        signed for each of them when there is a signer."""
        return await self._run_batch(m.Targets(nodes=node_ids), command, timeout)

    @needs_step_up
    async def run_batch(
        self, targets: m.Targets, command: str | list[str] | p.ServiceRequest, timeout: float
    ) -> m.CommandInfo:
        """Start a command or a service action on every node the targets name."""
        return await self._run_batch(targets, command, timeout)

    async def _run_batch(
        self, targets: m.Targets, command: str | list[str] | p.ServiceRequest, timeout: float
    ) -> m.CommandInfo:
        body = await self._command_body(targets, command, timeout)
        path = "/services" if isinstance(command, p.ServiceRequest) else "/commands"
        info = await self.call("POST", path, m.CommandInfo, json=body)
        assert info is not None
        return info

    async def preview_batch(
        self, targets: m.Targets, command: str | list[str] | p.ServiceRequest, timeout: float
    ) -> m.CommandPreview:
        """The dry run of run_batch: per node, would it run, queue, or be refused and why."""
        body = await self._command_body(targets, command, timeout)
        path = "/services/preview" if isinstance(command, p.ServiceRequest) else "/commands/preview"
        preview = await self.call("POST", path, m.CommandPreview, json=body)
        assert preview is not None
        return preview

    async def command(self, command_id: str) -> m.CommandInfo:
        info = await self.call("GET", f"/commands/{command_id}", m.CommandInfo)
        assert info is not None
        return info

    async def cancel_command(self, command_id: str) -> m.CommandInfo:
        info = await self.call("POST", f"/commands/{command_id}/cancel", m.CommandInfo)
        assert info is not None
        return info

    async def _service_params(
        self, node_id: int, request: p.ServiceRequest, timeout: float
    ) -> dict[str, str]:
        """The query of a service request: its timeout, and its signature when there is a signer."""
        params = {"timeout": repr(timeout)}
        if self.signer is not None:
            cid = new_command_id()
            frame = p.Command(command_id=cid, timeout=timeout, service=request)
            sig = (await self.signer.sign(frame, [node_id]))[node_id]
            params.update(
                id=cid, key_id=sig.key_id, nonce=sig.nonce, expires_at=str(sig.expires_at), sig=sig.sig
            )
        return params

    @needs_step_up
    async def services(self, node_id: int, timeout: float = 30.0) -> list[p.ServiceInfo]:
        params = await self._service_params(node_id, p.ServiceRequest("list"), timeout)
        result = await self.call("GET", f"/nodes/{node_id}/services", m.ServiceList, params=params)
        assert result is not None
        return result.services

    @needs_step_up
    async def service_action(
        self, node_id: int, name: str, action: str, timeout: float = 30.0
    ) -> m.CommandInfo:
        request = p.ServiceRequest(action, name)  # type: ignore[arg-type]
        params = await self._service_params(node_id, request, timeout)
        info = await self.call(
            "POST", f"/nodes/{node_id}/services/{name}/{action}", m.CommandInfo, params=params
        )
        assert info is not None
        return info

    async def log_sources(self, node_id: int) -> m.LogSourcesResponse:
        result = await self.call("GET", f"/nodes/{node_id}/logs/sources", m.LogSourcesResponse)
        assert result is not None
        return result

    async def logs(self, node_id: int, query: p.LogQuery) -> m.LogsResponse:
        """Recent lines of one source (operator role); the agent's refusal is the CoreError's message."""
        params = {k: str(v) for k, v in msgspec.to_builtins(query).items() if v is not None}
        result = await self.call("GET", f"/nodes/{node_id}/logs", m.LogsResponse, params=params)
        assert result is not None
        return result

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
        result = await self.call("GET", "/audit", m.AuditList, params=params)
        assert result is not None
        return result.entries

    async def alerts(
        self, *, state: str | None = None, node: int | None = None, limit: int = 500
    ) -> list[Alert]:
        params = {"limit": str(limit)}
        if state:
            params["state"] = state
        if node is not None:
            params["node"] = str(node)
        result = await self.call("GET", "/alerts", m.AlertList, params=params)
        assert result is not None
        return result.alerts

    async def alert(self, alert_id: int) -> m.AlertDetail:
        detail = await self.call("GET", f"/alerts/{alert_id}", m.AlertDetail)
        assert detail is not None
        return detail

    async def ack_alert(self, alert_id: int) -> Alert:
        alert = await self.call("POST", f"/alerts/{alert_id}/ack", Alert)
        assert alert is not None
        return alert

    async def create_silence(self, body: m.SilenceCreate) -> m.Silence:
        silence = await self.call("POST", "/silences", m.Silence, json=msgspec.to_builtins(body))
        assert silence is not None
        return silence

    async def rules(self) -> list[m.Rule]:
        result = await self.call("GET", "/alert-rules", m.RuleList)
        assert result is not None
        return result.rules

    async def create_rule(self, body: m.RuleCreate) -> m.Rule:
        rule = await self.call("POST", "/alert-rules", m.Rule, json=msgspec.to_builtins(body))
        assert rule is not None
        return rule

    async def update_rule(self, rule_id: int, body: m.RuleCreate) -> m.Rule:
        rule = await self.call("PATCH", f"/alert-rules/{rule_id}", m.Rule, json=msgspec.to_builtins(body))
        assert rule is not None
        return rule

    async def delete_rule(self, rule_id: int) -> None:
        await self.call("DELETE", f"/alert-rules/{rule_id}")

    async def preview_rule(self, body: m.RuleCreate, span: str) -> m.RulePreview:
        """What a rule, saved or not, would have done over the last `span` ("24h" or "7d")."""
        result = await self.call(
            "POST",
            "/alert-rules/preview",
            m.RulePreview,
            json=msgspec.to_builtins(body),
            params={"range": span},
        )
        assert result is not None
        return result

    async def channels(self) -> list[m.Channel]:
        result = await self.call("GET", "/channels", m.ChannelList)
        assert result is not None
        return result.channels

    async def create_channel(self, body: m.ChannelCreate) -> m.Channel:
        channel = await self.call("POST", "/channels", m.Channel, json=msgspec.to_builtins(body))
        assert channel is not None
        return channel

    async def update_channel(self, channel_id: int, body: m.ChannelPatch) -> m.Channel:
        channel = await self.call(
            "PATCH", f"/channels/{channel_id}", m.Channel, json=msgspec.to_builtins(body)
        )
        assert channel is not None
        return channel

    async def delete_channel(self, channel_id: int) -> None:
        await self.call("DELETE", f"/channels/{channel_id}")

    async def test_channel(self, channel_id: int) -> m.ChannelTestResult:
        result = await self.call("POST", f"/channels/{channel_id}/test", m.ChannelTestResult)
        assert result is not None
        return result

    async def silences(self) -> list[m.Silence]:
        result = await self.call("GET", "/silences", m.SilenceList)
        assert result is not None
        return result.silences

    async def delete_silence(self, silence_id: int) -> None:
        await self.call("DELETE", f"/silences/{silence_id}")

    # ------------------------------------------------------------ your account

    async def me(self) -> m.Me:
        me = await self.call("GET", "/auth/me", m.Me)
        assert me is not None
        return me

    async def change_password(self, current: str, new: str) -> None:
        """Your own password; the core keeps this session and ends your others."""
        await self.call(
            "POST", "/auth/password", json=m.PasswordChange(current_password=current, new_password=new)
        )

    async def step_up(self, *, password: str | None = None, code: str | None = None) -> None:
        """Confirm it is you (the password, or the authenticator's or a recovery code) before commands."""
        await self.call("POST", "/auth/step-up", json=m.StepUp(password=password, code=code))

    async def totp_setup(self) -> m.TotpSetup:
        setup = await self.call("POST", "/auth/totp/setup", m.TotpSetup)
        assert setup is not None
        return setup

    async def totp_enable(self, code: str) -> list[str]:
        """Turn two-factor sign-in on with a first code; the recovery codes, shown this once."""
        codes = await self.call("POST", "/auth/totp/enable", m.RecoveryCodes, json=m.TotpCode(code))
        assert codes is not None
        return codes.codes

    async def totp_disable(self, code: str) -> None:
        await self.call("POST", "/auth/totp/disable", json=m.TotpCode(code))

    async def tokens(self, user: str | None = None) -> list[m.TokenInfo]:
        """Live sign-ins and API tokens (never their secrets): yours, or (admins) another user's."""
        result = await self.call("GET", "/auth/tokens", m.TokenList, params={"user": user} if user else None)
        assert result is not None
        return result.tokens

    async def revoke_token(self, token_id: str) -> None:
        """Revoke a token by its id; a sign-in's access or refresh token ends the whole sign-in."""
        await self.call("DELETE", f"/auth/tokens/{token_id}")

    # ------------------------------------------------------------ users (admins)

    async def users(self) -> list[m.User]:
        result = await self.call("GET", "/users", m.UserList)
        assert result is not None
        return result.users

    async def create_user(self, name: str, password: str, role: str) -> m.User:
        user = await self.call(
            "POST",
            "/users",
            m.User,
            json=m.UserCreate(name=name, password=password, role=role),  # type: ignore[arg-type]
        )
        assert user is not None
        return user

    async def patch_user(self, user_id: int, patch: m.UserPatch) -> m.User:
        user = await self.call("PATCH", f"/users/{user_id}", m.User, json=patch)
        assert user is not None
        return user

    async def delete_user(self, user_id: int) -> None:
        await self.call("DELETE", f"/users/{user_id}")

    async def reset_password(self, user_id: int, password: str) -> None:
        """Set a user's password; they must change it at their next sign-in."""
        await self.call("POST", f"/users/{user_id}/password", json=m.PasswordReset(password))

    async def enroll_tokens(self) -> list[m.EnrollTokenInfo]:
        result = await self.call("GET", "/enroll-tokens", m.EnrollTokenList)
        assert result is not None
        return result.tokens

    async def revoke_enroll_token(self, token_id: str) -> None:
        await self.call("DELETE", f"/enroll-tokens/{token_id}")

    async def install_command(self, ttl: float, uses: int, core_url: str | None = None) -> m.InstallCommand:
        """A new enrollment token and the lines that install an agent with it (admins)."""
        body = m.InstallCommandCreate(ttl=ttl, uses=uses, core_url=core_url)
        result = await self.call("POST", "/agent/install-command", m.InstallCommand, json=body)
        assert result is not None
        return result
