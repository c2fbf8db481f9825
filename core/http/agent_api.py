"""The agent part of /api/v1: the package and install scripts a new server fetches with its enrollment token,
and the one-line install command admins hand out."""

from __future__ import annotations

import base64
import logging
import time

from aiohttp import web

from servermanager.common import __version__
from servermanager.common import rest as m
from servermanager.core.auth import Role, token_hash
from servermanager.core.datadir import data_dir
from servermanager.core.http.routing import ApiError, Call, Route, bearer
from servermanager.core.install import commands, render
from servermanager.core.install.package import AgentPackage, PackageError, PackageSource
from servermanager.core.tls import is_loopback

log = logging.getLogger(__name__)


async def _package(c: Call) -> AgentPackage:
    if c.core.packages is None:
        # Made on first use, with no await before it is stored: one per core, one build at most.
        c.core.packages = PackageSource(c.core.settings.agent_package, data_dir(c.core.settings))
    try:
        return await c.core.packages.get()
    except PackageError as exc:
        log.error("agent package unavailable: %s", exc)
        raise ApiError(503, "agent_package_unavailable", str(exc)) from None


def _request_origin(c: Call) -> str:
    """The address this request came to: where the new server reaches the core."""
    try:
        return commands.origin(str(c.request.url.origin()))
    except ValueError as exc:
        raise ApiError(400, "invalid_host", str(exc)) from None


def _pins(c: Call) -> commands.Pins | None:
    return commands.settings_pins(c.core.settings, data_dir(c.core.settings))


def _embedded_token(c: Call) -> str:
    """The enrollment token the script was fetched with, to write into it; none for an admin's token."""
    if c.who is not None:
        return ""
    return bearer(c.request) or ""


def _fetched(c: Call, what: str) -> None:
    if c.who is None:
        tid = token_hash(bearer(c.request) or "").hex()[:16]
        log.info("%s fetched with enrollment token %s from %s", what, tid, c.request.remote or "?")


async def install_sh(c: Call) -> web.Response:
    package = await _package(c)
    _fetched(c, "install.sh")
    text = render.install_sh(_request_origin(c), _pins(c), package, _embedded_token(c))
    return web.Response(text=text, content_type="text/x-shellscript", headers=_NO_STORE)


async def install_ps1(c: Call) -> web.Response:
    package = await _package(c)
    _fetched(c, "install.ps1")
    text = render.install_ps1(_request_origin(c), _pins(c), package, _embedded_token(c))
    return web.Response(text=text, content_type="text/plain", headers=_NO_STORE)


async def package_file(c: Call) -> web.StreamResponse:
    package = await _package(c)
    _fetched(c, package.filename)
    digest = base64.b64encode(bytes.fromhex(package.sha256)).decode()
    return web.FileResponse(
        package.path,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{package.filename}"',
            "Repr-Digest": f"sha-256=:{digest}:",  # RFC 9530
        },
    )


async def package_info(c: Call) -> m.AgentPackageInfo:
    package = await _package(c)
    return m.AgentPackageInfo(
        filename=package.filename, version=__version__, sha256=package.sha256, size=package.size
    )


async def install_command(c: Call) -> m.InstallCommand:
    body: m.InstallCommandCreate = c.body
    if body.core_url is not None:
        try:
            base = commands.origin(body.core_url)
        except ValueError as exc:
            raise ApiError(400, "invalid_body", f"core_url: {exc}") from None
    else:
        base = _request_origin(c)
        host = c.request.url.host or ""
        if is_loopback(host.strip("[]")):
            # Asked over loopback (the core's own machine, a tunnel): name the core as agents reach it.
            base = commands.settings_origin(c.core.settings)
    pins = _pins(c) if base.startswith("https://") else None
    token = await c.core.enroll.create(body.ttl, body.uses)
    await c.core.audit.record(
        c.actor, "enroll.create", None, "ok", {"ttl": body.ttl, "uses": body.uses, "install_command": True}
    )
    return m.InstallCommand(
        token=token,
        token_id=token_hash(token).hex()[:16],
        expires_at=time.time() + body.ttl,
        uses=body.uses,
        core_url=base,
        linux=commands.linux_line(base, token, pins),
        windows=commands.windows_line(base, token, pins),
        agent=commands.agent_line(base, token, pins),
        fingerprint=pins.certificate if pins else None,
        public_key_pin=pins.public_key if pins else None,
    )


# A rendered script holds a token: no cache keeps it.
_NO_STORE = {"Cache-Control": "no-store"}

V = "/api/v1"
AGENT_ROUTES: list[Route] = [
    Route(
        "POST",
        f"{V}/agent/install-command",
        install_command,
        summary="A new enrollment token and the one line that installs and enrolls an agent with it",
        role=Role.ADMIN,
        body=m.InstallCommandCreate,
        response=m.InstallCommand,
        status=201,
        tag="agents",
    ),
    Route(
        "GET",
        f"{V}/agent/install.sh",
        install_sh,
        summary="The Linux install script (POSIX sh), rendered with the package's SHA-256 and the core's pins",
        role=Role.ADMIN,
        enroll_token=True,
        content_type="text/x-shellscript",
        errors=(503,),
        tag="agents",
    ),
    Route(
        "GET",
        f"{V}/agent/install.ps1",
        install_ps1,
        summary="The Windows install script (PowerShell), rendered like install.sh",
        role=Role.ADMIN,
        enroll_token=True,
        content_type="text/plain",
        errors=(503,),
        tag="agents",
    ),
    Route(
        "GET",
        f"{V}/agent/package",
        package_file,
        summary="The agent package (the servermanager wheel of this core's version)",
        role=Role.ADMIN,
        enroll_token=True,
        content_type="application/octet-stream",
        errors=(503,),
        tag="agents",
    ),
    Route(
        "GET",
        f"{V}/agent/package/info",
        package_info,
        summary="The agent package's file name, version, size and SHA-256",
        role=Role.ADMIN,
        enroll_token=True,
        response=m.AgentPackageInfo,
        errors=(503,),
        tag="agents",
    ),
]
