"""The small web framework under the REST API: routes, the call a handler gets, auth and JSON errors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import KW_ONLY, dataclass
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from servermanager.common import rest as m
from servermanager.core.auth import ENROLL_PREFIX, Principal, Role, TokenKind
from servermanager.core.context import CORE, Core
from servermanager.core.store.db import StorageFull, is_fatal

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raised by handlers; rendered as {"error": {"code", "message"}} with the HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


MAX_ROW_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler gets besides the request: the services, the caller and validated inputs."""

    core: Core
    who: Principal | None
    body: Any
    query: Any
    request: web.Request

    @property
    def actor(self) -> str:
        return self.who.name if self.who else "anonymous"

    def path_id(self, what: str) -> int:
        """The `{id}` of the path as a row id: ASCII digits that fit SQLite's integer, or a 400."""
        raw = self.request.match_info["id"]
        # isdigit() alone admits '²' (int() refuses it), and SQLite overflows past 2**63 - 1.
        if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_ROW_ID:
            raise ApiError(400, "invalid_path", f"{what} id must be an integer from 0 to 2^63-1, got {raw!r}")
        return int(raw)


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    """One endpoint: where it is, who may call it, and the models it reads and answers with."""

    method: str
    path: str
    handler: Handler
    _: KW_ONLY
    summary: str
    role: Role | None  # None: open without auth; no default, so an open route says so
    body: type | None = None
    query: type | None = None
    response: type | None = None
    status: int = 200
    tag: str = "core"
    errors: tuple[int, ...] = ()  # answers beyond what the role, body and path imply (see openapi)
    # A usable enrollment token also lets the caller in (with no user: Call.who is None). Only for
    # what a new server fetches with the token it was given: the agent package and its installer.
    enroll_token: bool = False
    content_type: str | None = None  # a response that is not JSON (a script, a wheel): its type


_json = msgspec.json.Encoder()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_json.encode(data), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response(m.ErrorBody(m.ErrorDetail(code, message)), status, headers)


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(core: Core, request: web.Request, role: Role) -> Principal:
    token = bearer(request)
    if token is None:
        raise ApiError(401, "unauthorized", "missing 'Authorization: Bearer <token>' header")
    who = await core.users.resolve(token, (TokenKind.ACCESS, TokenKind.API))
    if who is None:
        raise ApiError(401, "unauthorized", "invalid or expired token")
    if not who.role.allows(role):
        raise ApiError(403, "forbidden", f"this needs the {role.value} role; you are {who.role.value}")
    need = core.settings.totp_required_role
    if (
        need
        and not who.totp
        and who.via == TokenKind.ACCESS
        and who.role.allows(Role(need))
        and not request.path.startswith(_TOTP_SETUP_PATHS)
    ):
        raise ApiError(
            403,
            "totp_setup_required",
            f"{need}s must sign in with two factors: set it up first (POST /api/v1/auth/totp/setup)",
        )
    return who


async def enrollment(core: Core, request: web.Request) -> bool:
    """True for a usable enrollment token; a 401 for an enrollment token that is not (or no longer)
    usable; False for anything else, which is then checked as a user's token."""
    token = bearer(request)
    if token is None or not token.startswith(ENROLL_PREFIX):
        return False
    if not await core.enroll.usable(token):
        raise ApiError(401, "unauthorized", "enrollment token is unknown, expired, used up or revoked")
    return True


# What a user who must set up two-factor sign-in may still do: that, and see who they are.
_TOTP_SETUP_PATHS = ("/api/v1/auth/totp/", "/api/v1/auth/me", "/api/v1/auth/logout", "/api/v1/auth/password")


def aiohttp_handler(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The route's handler as aiohttp calls it: auth, then body and query validation, then JSON out."""

    async def handle(request: web.Request) -> web.StreamResponse:
        core = request.app[CORE]
        who = None
        if route.role is not None and not (route.enroll_token and await enrollment(core, request)):
            who = await authenticate(core, request, route.role)
        body: Any = None
        query: Any = None
        if route.body is not None:
            raw = await request.read()
            if not raw:
                raise ApiError(400, "invalid_body", "request body is empty; expected a JSON object")
            body = decode_body(raw, route.body)
        if route.query is not None:
            try:
                query = msgspec.convert(dict(request.query), route.query, strict=False)
            except msgspec.ValidationError as exc:
                raise ApiError(400, "invalid_query", str(exc).replace("$.", "query parameter ")) from None
        result = await route.handler(Call(core, who, body, query, request))
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=204)
        return json_response(result, route.status)

    return handle


def decode_body(raw: bytes, type_: Any) -> Any:
    """A JSON request body as `type_`, or a 400 that says precisely what is wrong with it."""
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_body", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", str(exc)) from None
    except RecursionError:  # msgspec's depth limit: hostile input, not an internal error
        raise ApiError(400, "malformed_json", "JSON nested too deeply") from None


def add_routes(app: web.Application, routes: Iterable[Route]) -> None:
    for r in routes:
        app.router.add_route(r.method, r.path, aiohttp_handler(r))


class BadRequestLog(logging.Filter):
    """aiohttp logs a request it cannot parse (a NUL in a header, a broken request line) as an
    ERROR with a traceback: that is a peer's mistake, not ours. One WARNING line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "bad HTTP request from %s: %s", (peer, exc.message)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


BAD_REQUEST_LOG = BadRequestLog()


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error is JSON; a token in the query string is refused before anything else looks at it."""
    if any(
        k.lower() in ("token", "access_token", "api_token", "auth", "refresh_token") for k in request.query
    ):
        log.warning("refused %s %s: token in query string", request.method, request.path)
        return error_response(
            400, "token_in_query", "tokens must be sent in the Authorization header, never in the URL"
        )
    try:
        return await handler(request)
    except ApiError as exc:
        if exc.status >= 400:
            log.info("%s %s -> %d %s", request.method, request.path, exc.status, exc.code)
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, None)
    except StorageFull as exc:
        # Nothing was half-stored (the write rolled back); the database logged it once.
        return error_response(503, exc.code, exc.advice, {"Retry-After": "30"})
    except ConnectionError as exc:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error_response(500, "internal", "internal error; see the core log")
        # The peer hung up before the answer could be written (a socket dropped while its
        # WebSocket upgrade waited to be answered): nothing failed here and no one is left to
        # answer. Anyone can do this, thousands of times a second, so it is no ERROR.
        log.debug("%s %s: the peer went away (%s)", request.method, request.path, exc)
        return web.Response(status=499, reason="Client Closed Request")
    except Exception as exc:
        if is_fatal(exc):
            # The database said it once and the core is stopping: no traceback per request.
            return error_response(
                503, "storage_failed", "the core's database cannot be used; the core is stopping"
            )
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; see the core log")
