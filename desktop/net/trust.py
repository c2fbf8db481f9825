"""Which certificate the app accepts from a core: a pinned one (trust on first use), else the system's CAs.

A profile that trusted a core's self-signed certificate keeps its fingerprint (not a secret); every
connection then checks it during the TLS handshake, before a request, a password or a token goes out
(aiohttp's Fingerprint). Without a pin, normal verification applies; when it fails, `peer_fingerprint`
reads the certificate off a handshake that sends nothing, so the user can compare it with what
`servermanager admin fingerprint` prints on the core and decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

import aiohttp

from servermanager.common.tls import fingerprint, fingerprint_digest


def ssl_for(pin: str | None) -> aiohttp.Fingerprint | bool:
    """aiohttp's `ssl=` for a connection: the pin when there is one, else normal verification."""
    return aiohttp.Fingerprint(fingerprint_digest(pin)) if pin else True


async def peer_fingerprint(url: str, timeout: float = 10.0) -> str:
    """The fingerprint of the certificate the server at `url` presents. Only the TLS handshake
    happens: not a byte of HTTP is sent."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or 443
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    async with asyncio.timeout(timeout):
        _reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(1):
                await writer.wait_closed()
    return fingerprint(der)
