"""TLS for the link: which certificate the agent accepts from the core, checked before it sends anything.

Which check applies, in order:
- `core_fingerprint` set: the core's certificate must have that SHA-256 (with `ca_file` also set,
  it must verify against that CA as well);
- `ca_file` set: normal verification (chain and host name) against that CA only;
- a pin kept with the credential at enrollment, for the URL it was taken for;
- otherwise the system's CAs.

Only the standard library: the agent needs no crypto package to compare a pin.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from servermanager.agent.credentials import Credentials
from servermanager.agent.settings import AgentSettings
from servermanager.common.tls import fingerprint


@dataclass(frozen=True)
class Trust:
    """How this agent decides that it reached its core."""

    pin: str = ""  # sha256:<hex>, or empty
    ca_file: str = ""  # a CA bundle instead of the system's, or empty
    stored: bool = False  # the pin came from the credential file, not the settings

    def describe(self) -> str:
        if self.pin and self.ca_file:
            return f"pinned {self.pin} and verified against {self.ca_file}"
        if self.pin:
            return f"pinned {self.pin}" + (" (kept since enrollment)" if self.stored else "")
        if self.ca_file:
            return f"verified against {self.ca_file}"
        return "verified against the system's CAs"


def trust_for(settings: AgentSettings, credentials: Credentials | None, url: str) -> Trust:
    """The explicit settings win; without them, the pin kept at enrollment, for the URL it was for."""
    if settings.core_fingerprint or settings.ca_file:
        return Trust(settings.core_fingerprint, settings.ca_file)
    if credentials is not None and credentials.pin and credentials.core == url:
        return Trust(credentials.pin, stored=True)
    return Trust()


def client_context(url: str, trust: Trust) -> ssl.SSLContext | None:
    """The SSL context to dial `url` with; None for a plain ws:// URL."""
    if not url.startswith("wss://"):
        return None
    if trust.ca_file:
        context = ssl.create_default_context(cafile=trust.ca_file)
    elif trust.pin:
        # The pin is the whole check: a self-signed certificate names no authority, and the host name
        # in the URL is whatever the admin typed. The comparison happens before the first frame.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class PinMismatchError(Exception):
    """The core presented a certificate other than the pinned one; nothing was sent to it."""

    def __init__(self, url: str, expected: str, presented: str) -> None:
        self.url = url
        self.expected = expected
        self.presented = presented
        super().__init__(
            f"the core at {url} presented certificate {presented}, but this agent is pinned to {expected}; "
            "nothing was sent to it. Either someone is intercepting the connection, or the core's "
            "certificate was replaced: if so, check on the core (servermanager admin fingerprint) "
            f"and run the agent with --core-fingerprint {presented} (or core_fingerprint in its config)"
        )


def presented_fingerprint(transport: Any) -> str | None:
    """The fingerprint of the certificate on an open TLS transport; None without TLS."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return fingerprint(der) if der else None


def check_pin(transport: Any, url: str, pin: str) -> None:
    """Raise PinMismatchError unless the transport's peer certificate has this pin."""
    presented = presented_fingerprint(transport)
    if presented != pin:
        raise PinMismatchError(url, pin, presented or "no certificate")


def untrusted_hint(exc: BaseException, trust: Trust) -> str:
    """Words for a failed certificate verification: what the admin can do about it."""
    reason = getattr(exc, "verify_message", None) or str(exc)
    if trust.ca_file:
        return f"the core's certificate does not verify against {trust.ca_file} ({reason})"
    return (
        f"the core's certificate is not trusted by this system ({reason}). If the core made its own "
        "certificate, pin it: --core-fingerprint sha256:... (`servermanager admin fingerprint` on the "
        "core prints it); for a private CA, use --ca-file"
    )
