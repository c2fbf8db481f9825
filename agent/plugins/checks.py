"""Service checks run from this agent: HTTP(S) (status, body, latency, certificate), TCP connect, ping.

aiohttp, cryptography and icmplib are imported on a check's first run, so an agent without
[[check]] entries never loads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from servermanager.agent.plugins.config import CheckSettings, split_host_port
from servermanager.common.settings import SettingsError

log = logging.getLogger(__name__)

# Body bytes read for body_match at most: a check reads a health page, not a download.
MAX_BODY = 1 << 20
_PING_TIME = re.compile(r"time[=<]\s*([\d.]+)\s*ms")


@dataclass
class CheckResult:
    up: bool
    latency: float | None = None  # seconds
    error: str | None = None
    status: int | None = None  # HTTP status code
    cert_days_left: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- ping: how, decided once at start

PING_SOCKET = "socket"  # unprivileged ICMP socket (net.ipv4.ping_group_range allows our group)
PING_RAW = "raw"  # raw ICMP socket (root or CAP_NET_RAW)
PING_COMMAND = "command"  # the system's ping program


def ping_method() -> str:
    """How this agent can ping, or SettingsError saying what would allow it."""
    for kind, method in ((socket.SOCK_DGRAM, PING_SOCKET), (socket.SOCK_RAW, PING_RAW)):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
            return method
        except OSError:
            continue
    if shutil.which("ping"):
        return PING_COMMAND
    raise SettingsError(
        "ping checks cannot run here: no unprivileged ICMP socket (add the agent's group to "
        "sysctl net.ipv4.ping_group_range), no raw socket (CAP_NET_RAW) and no ping program on PATH"
    )


async def _ping_icmp(host: str, timeout: float, privileged: bool) -> CheckResult:
    import icmplib

    try:
        h = await icmplib.async_ping(host, count=1, timeout=timeout, privileged=privileged)
    except icmplib.NameLookupError:
        return CheckResult(False, error=f"cannot resolve {host}")
    except icmplib.ICMPLibError as exc:
        return CheckResult(False, error=f"ping failed: {exc}")
    if not h.is_alive:
        return CheckResult(False, error=f"no reply from {host} within {timeout:g}s")
    return CheckResult(True, latency=h.avg_rtt / 1000)


async def _ping_command(host: str, timeout: float) -> CheckResult:
    from servermanager.agent.exec.subproc import run_tool

    wait = str(max(1, round(timeout)))
    argv = ["ping", "-n", "1", "-w", str(round(timeout * 1000)), host] if sys.platform == "win32" else [
        "ping", "-c", "1", "-W", wait, host
    ]  # fmt: skip
    t0 = time.monotonic()
    try:
        run = await run_tool(argv, timeout=timeout + 1)
    except TimeoutError:
        return CheckResult(False, error=f"no reply from {host} within {timeout:g}s")
    if not run.ok:
        return CheckResult(False, error=f"no reply from {host}: {run.message.splitlines()[-1][:200]}")
    m = _PING_TIME.search(run.stdout)
    return CheckResult(True, latency=float(m.group(1)) / 1000 if m else time.monotonic() - t0)


# ---------------------------------------------------------------- the checks


async def check_tcp(target: str, timeout: float) -> CheckResult:
    host, port = split_host_port(target)
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return CheckResult(False, error=f"no connection to {target} within {timeout:g}s")
    except OSError as exc:
        return CheckResult(False, error=f"cannot connect to {target}: {exc.strerror or exc}")
    latency = time.monotonic() - t0
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(1):
            await writer.wait_closed()
    return CheckResult(True, latency=latency)


def _cert_days_left(der: bytes | None) -> float | None:
    if not der:
        return None
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return round(left.total_seconds() / 86400, 2)


async def _peer_cert_days(url: str, timeout: float) -> float | None:
    """Days until the server's certificate expires, read from a handshake of its own.

    aiohttp hands its connection back once a small body is in, before the caller could ask it
    for the certificate; one more handshake is the reliable way. Not verified on purpose: an
    expired or private certificate still has a date to report.
    """
    import ssl as ssl_mod

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    ctx = ssl_mod.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl_mod.CERT_NONE
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    except (OSError, TimeoutError):
        return None
    try:
        sslobj = writer.get_extra_info("ssl_object")
        return _cert_days_left(sslobj.getpeercert(binary_form=True) if sslobj is not None else None)
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl_mod.SSLError):
            async with asyncio.timeout(1):
                await writer.wait_closed()


async def check_http(c: CheckSettings, timeout: float) -> CheckResult:
    import aiohttp

    ssl: Any = None if c.tls_verify else False
    t0 = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout),
                connector=aiohttp.TCPConnector(force_close=True, ssl=ssl),
            ) as session,
            session.get(c.target, allow_redirects=False) as resp,
        ):
            body = await resp.content.read(MAX_BODY) if c.body_match else b""
            latency = time.monotonic() - t0
            status = resp.status
    except TimeoutError:
        return CheckResult(False, error=f"no answer from {c.target} within {timeout:g}s")
    except aiohttp.ClientConnectorCertificateError as exc:
        return CheckResult(False, error=f"certificate not valid: {exc.certificate_error}")
    except aiohttp.ClientError as exc:
        return CheckResult(False, error=f"request failed: {exc}"[:300])
    except OSError as exc:
        return CheckResult(False, error=f"request failed: {exc}"[:300])
    days = await _peer_cert_days(c.target, timeout) if c.target.startswith("https:") else None
    ok = status in c.expect_status if c.expect_status else 200 <= status < 400
    if not ok:
        want = ", ".join(map(str, c.expect_status)) if c.expect_status else "2xx or 3xx"
        return CheckResult(False, latency, f"status {status}, expected {want}", status, days)
    if c.body_match and re.search(c.body_match, body.decode("utf-8", errors="replace")) is None:
        return CheckResult(False, latency, f"body does not match {c.body_match!r}", status, days)
    return CheckResult(True, latency, None, status, days)


async def run_check(c: CheckSettings, ping: str | None = None) -> CheckResult:
    """One run of the check; never raises for what the target does (that is a down result)."""
    timeout = c.timeout or 10.0
    if c.type == "http":
        return await check_http(c, timeout)
    if c.type == "tcp":
        return await check_tcp(c.target, timeout)
    if ping == PING_COMMAND:
        return await _ping_command(c.target, timeout)
    return await _ping_icmp(c.target, timeout, privileged=ping == PING_RAW)
