"""The core's certificate pin: the SHA-256 of its DER certificate, written `sha256:<hex>`.

The core prints it (`servermanager admin fingerprint`, the enrollment command, its start-up log);
agents and the desktop compare it with what the core presents. One format, written and read here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

PREFIX = "sha256:"
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.DOTALL)
_HEX = re.compile(r"^[0-9a-f]{64}$")


def fingerprint(der: bytes) -> str:
    """The pin of a certificate in DER form: `sha256:` and 64 lowercase hex digits."""
    return PREFIX + hashlib.sha256(der).hexdigest()


def digest_pin(digest: bytes) -> str:
    """The pin of a certificate whose SHA-256 digest is already computed."""
    return PREFIX + digest.hex()


def pem_certificate(pem: bytes) -> bytes:
    """The first certificate of a PEM file (the server's own, in a chain file) as DER."""
    match = _PEM_CERT.search(pem)
    if match is None:
        raise ValueError("no PEM certificate found")
    try:
        return base64.b64decode(match.group(1), validate=False)
    except binascii.Error as exc:
        raise ValueError(f"bad PEM certificate: {exc}") from None


def parse_fingerprint(text: str) -> str:
    """A pin as a person pastes it -> the canonical `sha256:<hex>`; ValueError names what is wrong.

    Accepted: with or without the `sha256:` prefix, upper or lower case, with colons or spaces
    between the bytes (as `openssl x509 -fingerprint -sha256` prints it).
    """
    raw = text.strip()
    if raw.lower().startswith(PREFIX):
        raw = raw[len(PREFIX) :]
    digits = re.sub(r"[\s:]", "", raw).lower()
    if not _HEX.match(digits):
        raise ValueError(
            f"not a certificate fingerprint: {text!r} (expected sha256: and 64 hex digits, "
            "as `servermanager admin fingerprint` prints it)"
        )
    return PREFIX + digits


def fingerprint_digest(pin: str) -> bytes:
    """The 32 bytes of a canonical pin (for aiohttp.Fingerprint and comparisons)."""
    return bytes.fromhex(parse_fingerprint(pin)[len(PREFIX) :])
