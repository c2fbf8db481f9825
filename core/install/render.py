"""The install scripts, rendered per request: the core's address, its pins, the package's SHA-256 and the token written in."""

from __future__ import annotations

import shlex
from importlib import resources

from servermanager.common import __version__
from servermanager.core.install.commands import Pins
from servermanager.core.install.package import AgentPackage

UNIT_NAME = "servermanager-agent.service"
_UNIT_END = "SERVERMANAGER_UNIT_END"


def _template(name: str) -> str:
    return resources.files("servermanager.core.install").joinpath(name).read_text(encoding="utf-8")


def agent_unit() -> str:
    """The agent's systemd unit as this version ships it (packaging/systemd, package data in the wheel)."""
    return _template(UNIT_NAME)


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    return template


def _ps(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def install_sh(base: str, pins: Pins | None, package: AgentPackage, token: str) -> str:
    """The Linux installer. `token` is written in only when the script was fetched with it (an
    enrollment token); fetched by an admin, it asks for one instead."""
    unit = agent_unit().rstrip("\n")
    if any(line.strip() == _UNIT_END for line in unit.splitlines()):
        raise ValueError(f"the agent unit contains the line {_UNIT_END}, which ends its here-document")
    return _fill(
        _template("install.sh"),
        {
            "CORE_URL": shlex.quote(base),
            "CORE_PIN": shlex.quote(pins.certificate if pins else ""),
            "CURL_PIN": shlex.quote(pins.public_key if pins else ""),
            "PACKAGE": shlex.quote(package.filename),
            "PACKAGE_SHA256": shlex.quote(package.sha256),
            "VERSION": shlex.quote(__version__),
            "TOKEN": shlex.quote(token),
            "UNIT_NAME": shlex.quote(UNIT_NAME),
            # Last: the unit is text from a file, and must not have its own @...@ filled.
            "UNIT": unit,
        },
    )


def install_ps1(base: str, pins: Pins | None, package: AgentPackage, token: str) -> str:
    """The Windows installer; `token` as for install_sh."""
    return _fill(
        _template("install.ps1"),
        {
            "CORE_URL": _ps(base),
            "CORE_PIN": _ps(pins.certificate if pins else ""),
            "CERT_SHA256": _ps(pins.certificate_hex if pins else ""),
            "PACKAGE": _ps(package.filename),
            "PACKAGE_SHA256": _ps(package.sha256),
            "VERSION": _ps(__version__),
            "TOKEN": _ps(token),
        },
    )
