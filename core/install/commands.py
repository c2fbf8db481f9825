"""What an admin pastes on a new server: the one-line installers (Linux, Windows) and the bare agent command.

The CLI (`servermanager admin enroll-token`), the REST API (POST /api/v1/agent/install-command) and
through it the desktop's "Add server" dialog all print these, so there is one way to write them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from servermanager.core.settings import CoreSettings

INSTALL_SH = "/api/v1/agent/install.sh"
INSTALL_PS1 = "/api/v1/agent/install.ps1"
# What the scripts write into shell, PowerShell and TOML: a scheme, a host (name, IPv4 or [IPv6]),
# a port. Nothing that could quote its way out of any of the three.
_ORIGIN = re.compile(
    r"^https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$"
)


@dataclass(frozen=True)
class Pins:
    """The certificate the core serves, in the two forms pins are checked in."""

    certificate: str  # sha256:<hex>, what agents and the desktop pin
    public_key: str  # sha256//<base64> of its SubjectPublicKeyInfo, what curl --pinnedpubkey takes

    @property
    def certificate_hex(self) -> str:
        return self.certificate.partition(":")[2]


def origin(url: str) -> str:
    """The core's base URL (`https://host:port`) from what someone typed or a request named; ValueError if odd."""
    parts = urlsplit(url.strip())
    if parts.path.strip("/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"not a core address: {url!r} (expected https://HOST:PORT, nothing after it)")
    base = f"{parts.scheme.lower()}://{parts.netloc}"
    if not _ORIGIN.match(base):
        raise ValueError(f"not a core address: {url!r} (expected https://HOST:PORT or http://HOST:PORT)")
    return base


def settings_origin(settings: CoreSettings, host: str | None = None) -> str:
    """The core's base URL as agents reach it, from its settings (for the CLI, which has no request)."""
    from servermanager.core.tls import agent_url

    return origin(agent_url(settings, host).replace("ws", "http", 1))


def settings_pins(settings: CoreSettings, folder: Path) -> Pins | None:
    """The pins of the certificate these settings serve; None without TLS or before the core made one."""
    from servermanager.core.tls import current_pins, tls_enabled

    if not tls_enabled(settings):
        return None
    pins = current_pins(settings, folder)
    return Pins(*pins) if pins else None


def linux_line(base: str, token: str, pins: Pins | None) -> str:
    """curl | sudo sh. The token reaches curl on stdin (`-H @-`, printf is a shell builtin), so no
    argument that `ps` shows holds it; the leading space keeps the line out of bash's history where
    HISTCONTROL ignores such lines (Debian's and Ubuntu's default)."""
    pinning = f"--insecure --pinnedpubkey {shlex.quote(pins.public_key)} " if pins else ""
    header = shlex.quote("Authorization: Bearer %s\\n")
    return (
        f" printf {header} {shlex.quote(token)} | curl -fsS {pinning}-H @- {shlex.quote(base + INSTALL_SH)} "
        "| sudo sh"
    )


def windows_line(base: str, token: str, pins: Pins | None) -> str:
    """For an elevated Windows PowerShell (5.1, which every Windows has). With TLS, .NET's certificate
    check is the pin (the core's certificate is self-signed). The variable is named $token because
    PSReadLine keeps lines that mention a token out of its history file."""
    parts = [f"$token='{_ps(token)}'"]
    if pins:
        parts += [
            "[Net.ServicePointManager]::SecurityProtocol='Tls12'",
            "[Net.ServicePointManager]::ServerCertificateValidationCallback={(-join([Security.Cryptography.SHA256]"
            "::Create().ComputeHash($args[1].GetRawCertData())|%{$_.ToString('x2')})) -eq "
            f"'{pins.certificate_hex}'}}",
        ]
    parts += [
        "$w=New-Object Net.WebClient",
        "$w.Headers.Add('Authorization',\"Bearer $token\")",
        f"iex $w.DownloadString('{_ps(base + INSTALL_PS1)}')",
    ]
    return "; ".join(parts)


def agent_line(base: str, token: str, pins: Pins | None) -> str:
    """For a server that already has servermanager (the .deb, pip): the agent itself, enrolling."""
    url = base.replace("http", "ws", 1)
    command = f"SM_AGENT_ENROLL_TOKEN={shlex.quote(token)} servermanager agent --core {shlex.quote(url)}"
    return f"{command} --core-fingerprint {pins.certificate}" if pins else command


def _ps(text: str) -> str:
    """Inside a PowerShell single-quoted string."""
    return text.replace("'", "''")
