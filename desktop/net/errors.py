"""Failures talking to the core, in words for the person at the keyboard: transport errors and error replies."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
import msgspec

from servermanager.common import rest as m
from servermanager.common.tls import digest_pin

OTP_REQUIRED = "Enter the 6-digit code from your authenticator app (or one of your recovery codes)."
STEP_UP_REQUIRED = "Confirm it is you first: enter your password or two-factor code again."
TOTP_SETUP_REQUIRED = (
    "Your role must sign in with two factors: set up two-factor sign-in first "
    "(Account → Two-factor sign-in…)."
)


class CoreError(Exception):
    """A failure talking to the core, phrased for the person at the keyboard."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


class CertificateUntrusted(CoreError):
    """An https core whose certificate nothing vouches for (self-signed, or another name), and no pin:
    the user may trust it on first use after comparing `fingerprint` with what the core prints."""

    def __init__(self, url: str, fingerprint: str, reason: str) -> None:
        super().__init__(
            "certificate",
            f"The certificate of {host_of(url)} does not match its address or is not trusted ({reason}). "
            f"Its fingerprint is {fingerprint}.",
        )
        self.url = url
        self.fingerprint = fingerprint
        self.reason = reason


class CertificateChanged(CoreError):
    """The core presented another certificate than the pinned one; nothing was sent to it."""

    def __init__(self, url: str, expected: str, presented: str) -> None:
        super().__init__(
            "certificate",
            f"The certificate of {host_of(url)} has changed since it was pinned: it is now {presented}, "
            f"not {expected}. Nothing was sent to it.",
        )
        self.url = url
        self.expected = expected
        self.presented = presented


def host_of(url: str) -> str:
    """host:port of a URL, for messages; the URL itself when it has none."""
    try:
        return urlsplit(url).netloc or url
    except ValueError:
        return url


def explain_error(exc: BaseException, url: str) -> CoreError:
    """Turn a transport exception into words; the traceback goes to the log, not the user."""
    if isinstance(exc, CoreError):
        return exc
    host = host_of(url)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or str(exc.certificate_error)
        return CoreError(
            "certificate",
            f"The certificate of {host} does not match its address or is not trusted ({reason}). "
            "Check the address, or install the core's certificate.",
        )
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return CertificateChanged(url, digest_pin(exc.expected), digest_pin(exc.got))
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
        return CoreError("bad_url", f"“{url}” is not a valid address; use e.g. https://core.example:8760.")
    if isinstance(exc, aiohttp.ClientError):
        return CoreError("unreachable", f"Talking to {host} failed: {exc}.")
    return CoreError("internal", f"Something went wrong: {exc}.")


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def http_error(status: int, body: bytes, url: str, *, login: bool) -> CoreError:
    """An error reply (HTTP status >= 400) in words; login: the request presented credentials."""
    try:
        detail = msgspec.json.decode(body, type=m.ErrorBody).error
    except msgspec.MsgspecError:
        return CoreError(
            "not_core",
            f"{host_of(url)} answered HTTP {status}, but does not look like a Server Manager core.",
            status,
        )
    if detail.code == "bad_credentials":
        # The core says which: the user name or password, a two-factor code, the current password.
        return CoreError(
            "bad_credentials", _sentence(detail.message) or "Wrong user name or password.", status
        )
    if detail.code == "otp_required":
        # The password was right; this user signs in with two factors.
        return CoreError("otp_required", OTP_REQUIRED, status)
    if status == 401:
        if login:
            return CoreError(
                "bad_token", "The core did not accept this token: it is wrong, expired or revoked.", status
            )
        return CoreError("session_expired", "Your session has expired. Please sign in again.", status)
    if detail.code == "step_up_required":
        return CoreError("step_up_required", STEP_UP_REQUIRED, status)
    if detail.code == "totp_setup_required":
        return CoreError("totp_setup_required", TOTP_SETUP_REQUIRED, status)
    if status == 403:
        return CoreError("forbidden", f"Not allowed: {detail.message}.", status)
    if status == 404 and detail.message == "no such node":
        return CoreError("not_found", "That node no longer exists.", status)
    return CoreError(detail.code, _sentence(detail.message), status)
