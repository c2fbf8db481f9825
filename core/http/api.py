"""The REST API under /api/v1: its handlers and the one route table, with roles and typed models."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from typing import Any

import msgspec
from aiohttp import web

from servermanager.common import __version__
from servermanager.common import rest as m
from servermanager.common.history import choose_resolution
from servermanager.common.metrics import SCALAR_FIELDS, ContainerInfo
from servermanager.common.protocol import PROTOCOL_VERSION, CommandSignature, ServiceRequest
from servermanager.common.rest import Targets
from servermanager.core.accounts import Accounts
from servermanager.core.auth import Principal, RefreshReuse, Role, TokenKind, token_hash
from servermanager.core.commands import DuplicateIdError, LiveCommand, SignatureError, TargetError
from servermanager.core.http.accounts_api import ACCOUNT_ROUTES
from servermanager.core.http.agent_api import AGENT_ROUTES
from servermanager.core.http.alerts_api import ALERT_ROUTES
from servermanager.core.http.channels_api import CHANNEL_ROUTES
from servermanager.core.http.logs_api import LOG_ROUTES
from servermanager.core.http.openapi import build_openapi
from servermanager.core.http.routing import ApiError, Call, Route, bearer, decode_body, json_response
from servermanager.core.http.series_api import SERIES_ROUTES

log = logging.getLogger(__name__)

VERSION = __version__


# ---------------------------------------------------------------- handlers


async def health(c: Call) -> m.Health:
    problems = []
    problem = c.core.db.problem()
    if problem is not None:
        problems.append(problem)
    bus = c.core.bus.problem
    if bus is not None:
        problems.append(bus)  # starts with "bus:"
    if problems:
        return m.Health(status="degraded", version=VERSION, protocol=PROTOCOL_VERSION, problems=problems)
    return m.Health(status="ok", version=VERSION, protocol=PROTOCOL_VERSION)


def _peer(c: Call) -> str:
    return c.request.remote or "?"


async def login(c: Call) -> m.TokenPair:
    body: m.LoginRequest = c.body
    users, throttle, peer = c.core.users, c.core.throttle, _peer(c)
    device = None
    if body.device_token is not None and await users.device_user(body.device_token) == body.username:
        device = token_hash(body.device_token).hex()
    # Counted before the check, with no await in between: concurrent guesses cannot all get through.
    wait = throttle.reserve(body.username, peer, device)
    if wait > 0:
        log.warning("login for %r from %s throttled", body.username, peer)
        raise ApiError(
            429,
            "too_many_attempts",
            f"too many failed logins; try again in {int(wait) + 1}s",
            {"Retry-After": str(int(wait) + 1)},
        )
    accounts = Accounts(c.core.db, users)
    try:
        who = await users.check_password(body.username, body.password)
        must_change, totp = await accounts.flags(who.user_id) if who is not None else (False, False)
        if who is not None and totp and body.otp is None:
            # The password was right; the second factor is missing, which is no guess to count.
            throttle.release(body.username, peer, device)
            raise ApiError(401, "otp_required", "two-factor sign-in: add the authenticator's code as 'otp'")
        second_ok = who is None or not totp or await accounts.second_factor(who.user_id, body.otp or "")
    except ApiError:
        raise
    except BaseException:
        throttle.release(body.username, peer, device)  # not a wrong password: it does not count
        raise
    if who is None or not second_ok:
        log.warning("failed login for %r from %s", body.username, peer)
        await c.core.audit.record(
            body.username, "auth.login", f"user:{body.username}", "failed", {"from": peer}
        )
        if who is not None:
            raise ApiError(401, "bad_credentials", "wrong or already used two-factor code")
        raise ApiError(401, "bad_credentials", "wrong user name or password")
    throttle.succeeded(body.username, peer, device)
    log.info("user %s logged in from %s", who.name, peer)
    await c.core.audit.record(who.name, "auth.login", f"user:{who.name}", "ok", {"from": peer})
    pair = await _token_pair(c, who, secrets.token_hex(8))
    # The password (and code) were just entered: that is a step-up for this session's first minutes.
    await accounts.mark_stepped_up(token_hash(pair.access_token))
    pair.must_change_password = must_change
    pair.totp_setup_required = _totp_required(c, who.role) and not totp
    if device is None:
        pair.device_token, _ = await users.issue(who.user_id, TokenKind.DEVICE)
    else:
        pair.device_token = body.device_token
    return pair


def _totp_required(c: Call, role: Role) -> bool:
    need = c.core.settings.totp_required_role
    return bool(need) and role.allows(Role(need))


async def _token_pair(c: Call, who: Principal, family: str) -> m.TokenPair:
    access, expires = await c.core.users.issue(who.user_id, TokenKind.ACCESS, family=family)
    refresh, _ = await c.core.users.issue(who.user_id, TokenKind.REFRESH, family=family)
    assert expires is not None
    return m.TokenPair(access, refresh, int(expires - time.time()), role=who.role.value)


async def refresh(c: Call) -> m.TokenPair:
    body: m.RefreshRequest = c.body
    # Rotate: a refresh token works once, so a stolen copy dies with the next legitimate refresh,
    # and a copy used after that reveals the theft: the whole session is revoked.
    try:
        rotated = await c.core.users.rotate_refresh(body.refresh_token)
    except RefreshReuse as exc:
        log.warning("%s (from %s)", exc, _peer(c))
        await c.core.audit.record(
            exc.user, "auth.refresh_reuse", f"user:{exc.user}", "revoked", {"from": _peer(c)}
        )
        raise ApiError(
            401, "unauthorized", "refresh token was already used; the session is revoked, log in again"
        ) from None
    if rotated is None:
        raise ApiError(401, "unauthorized", "refresh token is invalid or expired; log in again")
    who, access, new_refresh, expires = rotated
    return m.TokenPair(access, new_refresh, int(expires - time.time()), role=who.role.value)


async def logout(c: Call) -> None:
    """The caller's session ends: its access token, its refresh token and every rotation of them."""
    token = bearer(c.request)
    if token:
        await c.core.users.revoke_family(token)
    raw = await c.request.read()
    if raw:
        body = decode_body(raw, m.RefreshRequest)
        await c.core.users.revoke_family(body.refresh_token)


async def me(c: Call) -> m.Me:
    assert c.who is not None
    must_change, totp = await Accounts(c.core.db, c.core.users).flags(c.who.user_id)
    return m.Me(
        c.who.user_id,
        c.who.name,
        c.who.role.value,
        must_change_password=must_change,
        totp=totp,
        totp_setup_required=_totp_required(c, c.who.role) and not totp,
    )


async def list_nodes(c: Call) -> m.NodeList:
    return m.NodeList([st.info() for st in sorted(c.core.nodes.nodes.values(), key=lambda n: n.id)])


async def get_node(c: Call) -> Any:
    st = await c.core.nodes.find(c.path_id("node"))
    if st is None:
        raise ApiError(404, "not_found", "no such node")
    return st.info()


async def patch_node(c: Call) -> Any:
    body: m.NodePatch = c.body
    nid = c.path_id("node")
    st = await c.core.nodes.update(nid, body.name, body.group, body.tags)
    if st is None:
        raise ApiError(404, "not_found", "no such node")
    await c.core.audit.record(c.actor, "node.update", f"node:{nid}", "ok", msgspec.to_builtins(body))
    return st.info()


async def delete_node(c: Call) -> None:
    nid = c.path_id("node")
    ok = await c.core.nodes.delete(nid)
    await c.core.audit.record(c.actor, "node.delete", f"node:{nid}", "ok" if ok else "not_found")
    if not ok:
        raise ApiError(404, "not_found", "no such node")


async def node_history(c: Call) -> m.History:
    nid = c.path_id("node")
    if await c.core.nodes.find(nid) is None:
        raise ApiError(404, "not_found", "no such node")
    q: m.HistoryQuery = c.query
    now = time.time()
    end = q.to if q.to is not None else now
    start = q.from_ if q.from_ is not None else end - 3600
    if start >= end:
        raise ApiError(400, "invalid_query", "query parameter 'from' must be before 'to'")
    fields = [f.strip() for f in q.fields.split(",") if f.strip()] if q.fields else list(SCALAR_FIELDS)
    unknown = [f for f in fields if f not in SCALAR_FIELDS]
    if unknown:
        raise ApiError(400, "invalid_query", f"unknown field(s) {unknown}; known: {', '.join(SCALAR_FIELDS)}")
    res = (
        q.resolution
        if q.resolution != "auto"
        else choose_resolution(start, end, now, c.core.settings.retention_raw, c.core.settings.retention_1m)
    )
    data = await c.core.store.history(nid, start, end, res, fields, q.points, encoded=True)
    return m.History(node_id=nid, resolution=res, from_=start, to=end, fields=fields, **data)


# Command lines can carry secrets (passwords in arguments, tokens in URLs): viewers get the rest
# of each process, operators and admins, who may run commands on the node anyway, get them too.
CMDLINE_ROLE = Role.OPERATOR


async def node_processes(c: Call) -> m.Processes:
    nid = c.path_id("node")
    if await c.core.nodes.find(nid) is None:
        raise ApiError(404, "not_found", "no such node")
    q: m.ProcessesQuery = c.query
    found = await c.core.store.procs.at(nid, q.at)
    if found is None:
        return m.Processes(node_id=nid, ts=None, processes=[])
    ts, procs = found
    hide = c.who is None or not c.who.role.allows(CMDLINE_ROLE)
    out = [
        m.Process(
            pid=x.pid,
            name=x.name,
            cpu_pct=x.cpu_pct,
            rss=x.rss,
            user=x.user,
            read_bps=x.read_bps,
            write_bps=x.write_bps,
            cmd=None if hide else x.cmd,
        )
        for x in procs
    ]
    return m.Processes(node_id=nid, ts=ts, processes=out, cmdline_hidden=hide and any(x.cmd for x in procs))


def _container(x: ContainerInfo) -> m.Container:
    return m.Container(**{f: getattr(x, f) for f in ContainerInfo.__struct_fields__})


async def node_containers(c: Call) -> m.Containers:
    nid = c.path_id("node")
    if await c.core.nodes.find(nid) is None:
        raise ApiError(404, "not_found", "no such node")
    q: m.ContainersQuery = c.query
    found = await c.core.store.containers.at(nid, q.at)
    if found is None:
        return m.Containers(node_id=nid, ts=None, containers=[])
    ts, items = found
    return m.Containers(node_id=nid, ts=ts, containers=[_container(x) for x in items])


async def container_history(c: Call) -> m.ContainerHistory:
    nid = c.path_id("node")
    if await c.core.nodes.find(nid) is None:
        raise ApiError(404, "not_found", "no such node")
    q: m.ContainerHistoryQuery = c.query
    end = q.to if q.to is not None else time.time()
    start = q.from_ if q.from_ is not None else end - 3600
    if start >= end:
        raise ApiError(400, "invalid_query", "query parameter 'from' must be before 'to'")
    data = await c.core.store.containers.series(nid, q.name, start, end, q.points)
    return m.ContainerHistory(node_id=nid, name=q.name, from_=start, to=end, **data)


async def list_users(c: Call) -> m.UserList:
    return m.UserList(await Accounts(c.core.db, c.core.users).all())


async def create_user(c: Call) -> m.User:
    body: m.UserCreate = c.body
    try:
        uid = await c.core.users.create(body.name, body.password, Role(body.role))
    except ValueError as exc:
        await c.core.audit.record(c.actor, "user.create", f"user:{body.name}", "error", {"error": str(exc)})
        raise ApiError(409, "conflict", str(exc)) from None
    await c.core.audit.record(c.actor, "user.create", f"user:{body.name}", "ok", {"role": body.role})
    return m.User(uid, body.name, body.role, time.time())


async def create_api_token(c: Call) -> m.ApiToken:
    assert c.who is not None
    body: m.ApiTokenCreate = c.body
    token, _ = await c.core.users.issue(c.who.user_id, TokenKind.API, body.name)
    await c.core.audit.record(c.actor, "token.create", f"token:{body.name}", "ok")
    return m.ApiToken(body.name, token, c.who.role.value)


async def create_enroll_token(c: Call) -> m.EnrollToken:
    body: m.EnrollTokenCreate = c.body
    token = await c.core.enroll.create(body.ttl, body.uses)
    await c.core.audit.record(c.actor, "enroll.create", None, "ok", {"ttl": body.ttl, "uses": body.uses})
    return m.EnrollToken(token, time.time() + body.ttl, body.uses)


async def audit_log(c: Call) -> m.AuditList:
    q: m.AuditQuery = c.query
    target = f"node:{q.node}" if q.node is not None else q.target
    rows = await c.core.audit.query(q.user, q.action, target, q.from_, q.to, q.limit)
    return m.AuditList([msgspec.convert(r, m.AuditEntry) for r in rows])


# ---------------------------------------------------------------- remote operations


def _rate_limit(c: Call) -> None:
    assert c.who is not None
    wait = c.core.command_limit.retry_after(c.who.user_id)
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            f"you may start {c.core.settings.commands_per_minute} commands a minute; try again in {int(wait) + 1}s",
            {"Retry-After": str(int(wait) + 1)},
        )


def _check_step_up(c: Call) -> None:
    """A command runs on servers: a signed-in person confirms it is them now, not 14 minutes ago at
    an unlocked desk. API tokens (scripts) are exempt; an admin created them on purpose."""
    assert c.who is not None
    window = c.core.settings.step_up_window
    if not window or c.who.via != TokenKind.ACCESS:
        return
    if c.who.stepped_up_at is None or time.time() - c.who.stepped_up_at > window:
        raise ApiError(
            403,
            "step_up_required",
            "confirm it is you first: POST /api/v1/auth/step-up with your password or two-factor code",
        )


async def _start(c: Call, targets: Targets, frame_args: dict[str, Any], **kw: Any) -> LiveCommand:
    assert c.who is not None
    service = frame_args.get("service")
    # Listing services or reading one's status changes nothing on the server: no step-up for that.
    if not (isinstance(service, ServiceRequest) and service.action in ("list", "status")):
        _check_step_up(c)
    _rate_limit(c)
    try:
        cmd = await c.core.commands.create(c.actor, targets, frame_args, **kw)
    except TargetError as exc:
        raise ApiError(400, "invalid_targets", str(exc)) from None
    except SignatureError as exc:
        raise ApiError(400, "invalid_signatures", str(exc)) from None
    except DuplicateIdError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    # Only commands that really started count against the limit; a typo costs nothing.
    c.core.command_limit.add(c.who.user_id)
    return cmd


async def _create(
    c: Call, body: m.CommandCreate | m.ServiceBatch, frame_args: dict[str, Any]
) -> m.CommandInfo:
    """A command or service batch started from its body's targets, queueing and signatures."""
    cmd = await _start(
        c,
        body.targets,
        frame_args,
        queue_offline=body.queue_offline,
        expires_in=body.expires_in,
        command_id=body.id,
        signatures=body.signatures,
    )
    return cmd.info()


async def create_command(c: Call) -> m.CommandInfo:
    body: m.CommandCreate = c.body
    return await _create(c, body, _command_args(body))


def _command_args(body: m.CommandCreate) -> dict[str, Any]:
    args: dict[str, Any] = {"timeout": body.timeout, "env": body.env, "cwd": body.cwd}
    if isinstance(body.command, str):
        args["shell"] = body.command
    else:
        args["argv"] = body.command
    return args


def _service_args(body: m.ServiceBatch) -> dict[str, Any]:
    if body.action != "list" and body.name is None:
        raise ApiError(400, "invalid_body", f"service {body.action} needs the service's name")
    return {"timeout": body.timeout, "service": ServiceRequest(action=body.action, name=body.name)}


async def _preview(
    c: Call, targets: Targets, args: dict[str, Any], queue_offline: bool, signatures: Any
) -> m.CommandPreview:
    # A read, like GET /commands: nothing runs, so no step-up, no rate limit and no audit row.
    try:
        return await c.core.commands.preview(
            targets, args, queue_offline=queue_offline, signatures=signatures
        )
    except TargetError as exc:
        raise ApiError(400, "invalid_targets", str(exc)) from None


async def preview_command(c: Call) -> m.CommandPreview:
    body: m.CommandCreate = c.body
    return await _preview(c, body.targets, _command_args(body), body.queue_offline, body.signatures)


async def preview_service_batch(c: Call) -> m.CommandPreview:
    body: m.ServiceBatch = c.body
    return await _preview(c, body.targets, _service_args(body), body.queue_offline, body.signatures)


async def create_service_batch(c: Call) -> m.CommandInfo:
    body: m.ServiceBatch = c.body
    return await _create(c, body, _service_args(body))


async def list_commands(c: Call) -> m.CommandList:
    q: m.CommandListQuery = c.query
    return m.CommandList(await c.core.commands.recent(q.limit))


async def get_command(c: Call) -> m.CommandInfo:
    info = await c.core.commands.get(c.request.match_info["cid"])
    if info is None:
        raise ApiError(404, "not_found", "no such command")
    return info


async def cancel_command(c: Call) -> m.CommandInfo:
    cmd = await c.core.commands.cancel(c.request.match_info["cid"], c.actor)
    if cmd is None:
        raise ApiError(404, "not_found", "no such command, or it finished long ago")
    return cmd.info()


def _query_signature(nid: int, q: m.ServiceActionQuery) -> dict[int, CommandSignature] | None:
    """The signature a service request carries in its query (all of its fields or none)."""
    fields = {"key_id": q.key_id, "nonce": q.nonce, "expires_at": q.expires_at, "sig": q.sig}
    given = [k for k, v in fields.items() if v is not None]
    if not given:
        return None
    if q.key_id is None or q.nonce is None or q.expires_at is None or q.sig is None:
        missing = ", ".join(k for k in fields if k not in given)
        raise ApiError(
            400, "invalid_query", f"a signed service request needs all of its signature; missing {missing}"
        )
    return {
        nid: CommandSignature(key_id=q.key_id, node_id=nid, nonce=q.nonce, expires_at=q.expires_at, sig=q.sig)
    }


async def _service_call(c: Call, nid: int, request: ServiceRequest, q: m.ServiceActionQuery) -> LiveCommand:
    node = await c.core.nodes.find(nid)
    if node is None:
        raise ApiError(404, "not_found", "no such node")
    if not node.online:
        raise ApiError(409, "node_offline", f"node {node.name} is offline")
    timeout = q.timeout
    signatures = _query_signature(nid, q)
    cmd = await _start(
        c,
        Targets(nodes=[nid]),
        {"timeout": timeout, "service": request},
        command_id=q.id,
        signatures=signatures,
    )
    try:
        async with asyncio.timeout(timeout + 5):
            await cmd.done.wait()
    except TimeoutError:
        raise ApiError(504, "timeout", f"node {node.name} did not answer within {timeout:g}s") from None
    return cmd


_SERVICE_NAME = re.compile(r"^[A-Za-z0-9@_.:][A-Za-z0-9@_.:+-]{0,255}$")


async def list_services(c: Call) -> m.ServiceList:
    nid = c.path_id("node")
    q: m.ServiceActionQuery = c.query
    cmd = await _service_call(c, nid, ServiceRequest(action="list"), q)
    run = cmd.runs[nid]
    if run.status != "ok" or run.result is None or run.result.services is None:
        message = run.result.message if run.result else None
        raise ApiError(
            502 if run.status != "refused" else 403, run.status, message or f"service list {run.status}"
        )
    return m.ServiceList(nid, run.result.services)


async def service_action(c: Call) -> m.CommandInfo:
    nid = c.path_id("node")
    name, action = c.request.match_info["name"], c.request.match_info["action"]
    if action not in ("status", "start", "stop", "restart", "enable", "disable"):
        raise ApiError(400, "invalid_path", f"unknown service action {action!r}")
    if not _SERVICE_NAME.match(name):
        raise ApiError(400, "invalid_path", f"not a valid service name: {name!r}")
    q: m.ServiceActionQuery = c.query
    cmd = await _service_call(c, nid, ServiceRequest(action=action, name=name), q)  # type: ignore[arg-type]
    return cmd.info()


async def openapi(c: Call) -> web.Response:
    return json_response(build_openapi(ROUTES, VERSION))


V = "/api/v1"
ROUTES: list[Route] = [
    # core
    Route("GET", f"{V}/health", health, summary="Liveness and version", role=None, response=m.Health),
    # auth
    Route(
        "POST",
        f"{V}/auth/login",
        login,
        summary="Log in with a password",
        role=None,
        body=m.LoginRequest,
        response=m.TokenPair,
        errors=(401, 429),
        tag="auth",
    ),
    Route(
        "POST",
        f"{V}/auth/refresh",
        refresh,
        summary="Exchange a refresh token",
        role=None,
        body=m.RefreshRequest,
        response=m.TokenPair,
        errors=(401,),
        tag="auth",
    ),
    Route(
        "POST",
        f"{V}/auth/logout",
        logout,
        summary="Revoke the caller's tokens",
        role=Role.VIEWER,
        status=204,
        tag="auth",
    ),
    Route(
        "GET",
        f"{V}/auth/me",
        me,
        summary="Who the token belongs to",
        role=Role.VIEWER,
        response=m.Me,
        tag="auth",
    ),
    # nodes
    Route(
        "GET",
        f"{V}/nodes",
        list_nodes,
        summary="All nodes with status and latest sample",
        role=Role.VIEWER,
        response=m.NodeList,
        tag="nodes",
    ),
    Route(
        "GET",
        f"{V}/nodes/{{id}}",
        get_node,
        summary="One node",
        role=Role.VIEWER,
        response=m.NodeInfo,
        tag="nodes",
    ),
    Route(
        "GET",
        f"{V}/nodes/{{id}}/processes",
        node_processes,
        summary="The node's top processes at a moment (default: the latest); command lines for operators",
        role=Role.VIEWER,
        query=m.ProcessesQuery,
        response=m.Processes,
        tag="nodes",
    ),
    Route(
        "GET",
        f"{V}/nodes/{{id}}/containers",
        node_containers,
        summary="The node's containers (Docker or Podman) at a moment (default: the latest)",
        role=Role.VIEWER,
        query=m.ContainersQuery,
        response=m.Containers,
        tag="nodes",
    ),
    Route(
        "GET",
        f"{V}/nodes/{{id}}/containers/history",
        container_history,
        summary="One container's CPU, memory, network and block I/O over a time range",
        role=Role.VIEWER,
        query=m.ContainerHistoryQuery,
        response=m.ContainerHistory,
        tag="nodes",
    ),
    Route(
        "PATCH",
        f"{V}/nodes/{{id}}",
        patch_node,
        summary="Rename, regroup or retag a node",
        role=Role.OPERATOR,
        body=m.NodePatch,
        response=m.NodeInfo,
        tag="nodes",
    ),
    Route(
        "DELETE",
        f"{V}/nodes/{{id}}",
        delete_node,
        summary="Delete a node and revoke its credential",
        role=Role.OPERATOR,
        status=204,
        tag="nodes",
    ),
    Route(
        "GET",
        f"{V}/nodes/{{id}}/metrics",
        node_history,
        summary="Metric history",
        role=Role.VIEWER,
        query=m.HistoryQuery,
        response=m.History,
        tag="nodes",
    ),
    # admin
    Route(
        "GET",
        f"{V}/users",
        list_users,
        summary="List users",
        role=Role.ADMIN,
        response=m.UserList,
        tag="admin",
    ),
    Route(
        "POST",
        f"{V}/users",
        create_user,
        summary="Create a user",
        role=Role.ADMIN,
        body=m.UserCreate,
        response=m.User,
        status=201,
        tag="admin",
    ),
    Route(
        "POST",
        f"{V}/tokens",
        create_api_token,
        summary="Create a long-lived API token for the caller",
        role=Role.VIEWER,
        body=m.ApiTokenCreate,
        response=m.ApiToken,
        status=201,
        tag="auth",
    ),
    Route(
        "POST",
        f"{V}/enroll-tokens",
        create_enroll_token,
        summary="Create an agent enrollment token",
        role=Role.ADMIN,
        body=m.EnrollTokenCreate,
        response=m.EnrollToken,
        status=201,
        tag="admin",
    ),
    Route(
        "GET",
        f"{V}/audit",
        audit_log,
        summary="The audit trail",
        role=Role.OPERATOR,
        query=m.AuditQuery,
        response=m.AuditList,
        tag="admin",
    ),
    # operations
    Route(
        "POST",
        f"{V}/commands",
        create_command,
        summary="Run a command on nodes",
        role=Role.OPERATOR,
        body=m.CommandCreate,
        response=m.CommandInfo,
        status=202,
        errors=(429,),
        tag="operations",
    ),
    Route(
        "POST",
        f"{V}/commands/preview",
        preview_command,
        summary="A dry run of POST /commands: per node, would it run, queue, or be refused and why",
        role=Role.OPERATOR,
        body=m.CommandCreate,
        response=m.CommandPreview,
        tag="operations",
    ),
    Route(
        "POST",
        f"{V}/services",
        create_service_batch,
        summary="A service action on many nodes (like POST /commands)",
        role=Role.OPERATOR,
        body=m.ServiceBatch,
        response=m.CommandInfo,
        status=202,
        errors=(429,),
        tag="operations",
    ),
    Route(
        "POST",
        f"{V}/services/preview",
        preview_service_batch,
        summary="A dry run of POST /services: per node, would it run, queue, or be refused and why",
        role=Role.OPERATOR,
        body=m.ServiceBatch,
        response=m.CommandPreview,
        tag="operations",
    ),
    Route(
        "GET",
        f"{V}/commands",
        list_commands,
        summary="Recent commands",
        role=Role.OPERATOR,
        query=m.CommandListQuery,
        response=m.CommandList,
        tag="operations",
    ),
    Route(
        "GET",
        f"{V}/commands/{{cid}}",
        get_command,
        summary="A command's status and per-node results",
        role=Role.OPERATOR,
        response=m.CommandInfo,
        tag="operations",
    ),
    Route(
        "POST",
        f"{V}/commands/{{cid}}/cancel",
        cancel_command,
        summary="Cancel a command",
        role=Role.OPERATOR,
        response=m.CommandInfo,
        tag="operations",
    ),
    Route(
        "GET",
        f"{V}/nodes/{{id}}/services",
        list_services,
        summary="A node's services",
        role=Role.OPERATOR,
        query=m.ServiceActionQuery,
        response=m.ServiceList,
        errors=(409, 429, 502),
        tag="operations",
    ),
    Route(
        "POST",
        f"{V}/nodes/{{id}}/services/{{name}}/{{action}}",
        service_action,
        summary="Start, stop, restart, enable or disable a service",
        role=Role.OPERATOR,
        query=m.ServiceActionQuery,
        response=m.CommandInfo,
        errors=(409, 429, 502),
        tag="operations",
    ),
    Route("GET", f"{V}/openapi.json", openapi, summary="This document", role=Role.VIEWER, tag="core"),
]
ROUTES += ACCOUNT_ROUTES
ROUTES += ALERT_ROUTES
ROUTES += CHANNEL_ROUTES
ROUTES += AGENT_ROUTES
ROUTES += LOG_ROUTES
ROUTES += SERIES_ROUTES
