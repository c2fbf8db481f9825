"""The [[custom]], [[scrape]] and [[check]] tables: what named series this agent makes, checked at start.

Only the agent's own config declares them: the core has no frame that adds or changes one.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from servermanager.common.series import MAX_PLUGINS, NAME_RE
from servermanager.common.settings import SettingsError

# Output one run may print before it is cut off (and the run counted as failed).
DEFAULT_MAX_OUTPUT = 256 * 1024
MAX_OUTPUT_LIMIT = 8 << 20
_PLUGIN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LOOPBACK_HOSTS = ("localhost",)


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _common(kind: str, name: str, interval: float, timeout: float | None) -> float:
    """Checks shared by every entry; returns the timeout."""
    where = f"{kind} {name!r}"
    if not _PLUGIN_NAME.match(name):
        raise SettingsError(f"[[{kind}]] name {name!r}: use 1 to 64 letters, digits, '_', '.' or '-'")
    if timeout is None:
        raise SettingsError(f'{where}: timeout is required (seconds, e.g. timeout = "10s")')
    if not 0 < timeout <= 300:
        raise SettingsError(f"{where}: timeout must be above 0 and at most 5m (got {timeout:g}s)")
    if not 1 <= interval <= 86400:
        raise SettingsError(f"{where}: interval must be 1s to 1d (got {interval:g}s)")
    if timeout > interval:
        raise SettingsError(f"{where}: timeout ({timeout:g}s) must not exceed interval ({interval:g}s)")
    return timeout


class CustomSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One [[custom]] entry: a command run on an interval whose output becomes named series."""

    name: str
    command: list[str]
    interval: float = 60.0
    timeout: float | None = None
    format: Literal["lines", "prometheus"] = "lines"
    max_output: int = DEFAULT_MAX_OUTPUT

    __doc_fields__ = {
        "name": "the entry's name: its status is plugin_up{plugin=NAME}",
        "command": "argv list, run without a shell, as the agent's user",
        "interval": "seconds between two runs",
        "timeout": "required: a run still going after it is killed with its process group",
        "format": '"lines" (`name value` or `name{label="v"} value` per line) or "prometheus" (text format)',
        "max_output": "bytes of output a run may print; past it the run is killed and counted as failed",
    }

    def validate(self) -> None:
        self.timeout = _common("custom", self.name, self.interval, self.timeout)
        if not self.command or not all(isinstance(a, str) and a for a in self.command):
            raise SettingsError(f"custom {self.name!r}: command must be a non-empty list of arguments")
        exe = self.command[0]
        if os.sep in exe:
            if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
                raise SettingsError(f"custom {self.name!r}: {exe} is not an executable file")
        elif shutil.which(exe) is None:
            raise SettingsError(f"custom {self.name!r}: {exe} is not found on PATH")
        if not 1024 <= self.max_output <= MAX_OUTPUT_LIMIT:
            raise SettingsError(f"custom {self.name!r}: max_output must be 1024 to {MAX_OUTPUT_LIMIT}")


class ScrapeSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One [[scrape]] entry: a local Prometheus endpoint read on an interval."""

    name: str
    url: str
    interval: float = 60.0
    timeout: float | None = None
    metrics: list[str] = []
    max_output: int = 1 << 20

    __doc_fields__ = {
        "name": "the entry's name: its status is plugin_up{plugin=NAME}",
        "url": "http://127.0.0.1:PORT/metrics or http://localhost:PORT/...: loopback only",
        "interval": "seconds between two scrapes",
        "timeout": "required: a scrape still going after it is abandoned",
        "metrics": "metric names to keep (empty: all, up to the per-sample limit)",
        "max_output": "bytes of response read at most; a larger one is cut and counted as failed",
    }

    def validate(self) -> None:
        self.timeout = _common("scrape", self.name, self.interval, self.timeout)
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"scrape {self.name!r}: url {self.url!r} is not an http(s):// URL")
        if not _is_loopback(parts.hostname):
            raise SettingsError(
                f"scrape {self.name!r}: url host {parts.hostname!r} is not loopback "
                "(127.0.0.1, ::1 or localhost); scrape only what runs on this host"
            )
        bad = [m for m in self.metrics if not NAME_RE.match(m)]
        if bad:
            raise SettingsError(f"scrape {self.name!r}: not metric names: {bad}")
        if not 1024 <= self.max_output <= MAX_OUTPUT_LIMIT:
            raise SettingsError(f"scrape {self.name!r}: max_output must be 1024 to {MAX_OUTPUT_LIMIT}")


class CheckSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One [[check]] entry: an HTTP(S), TCP or ping check run from this agent."""

    name: str
    type: Literal["http", "tcp", "ping"]
    target: str
    interval: float = 60.0
    timeout: float | None = None
    expect_status: list[int] = []
    body_match: str = ""
    tls_verify: bool = True

    __doc_fields__ = {
        "name": "the check's name: its series carry the label check=NAME",
        "type": '"http" (a URL), "tcp" (host:port) or "ping" (a host)',
        "target": "https://example.org/health, db.internal:5432 or 10.0.0.1",
        "interval": "seconds between two runs",
        "timeout": "required: a run still going after it is down",
        "expect_status": "HTTP status codes counted as up (empty: any 2xx or 3xx)",
        "body_match": "a regular expression the HTTP body must match to be up",
        "tls_verify": "verify the server's certificate (https); off, an invalid one is still up",
    }

    def validate(self) -> None:
        self.timeout = _common("check", self.name, self.interval, self.timeout)
        where = f"check {self.name!r}"
        if self.type == "http":
            parts = urlsplit(self.target)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SettingsError(f"{where}: target {self.target!r} is not an http:// or https:// URL")
            try:
                _ = parts.port
            except ValueError as exc:
                raise SettingsError(f"{where}: target {self.target!r}: {exc}") from None
            bad = [s for s in self.expect_status if not 100 <= s <= 599]
            if bad:
                raise SettingsError(f"{where}: expect_status has codes outside 100-599: {bad}")
            if self.body_match:
                try:
                    re.compile(self.body_match)
                except re.error as exc:
                    raise SettingsError(f"{where}: body_match is not a regular expression: {exc}") from None
        else:
            if self.expect_status or self.body_match:
                raise SettingsError(f"{where}: expect_status and body_match are for http checks only")
            if self.type == "tcp":
                host, port = split_host_port(self.target, where)
                if not host or port is None:
                    raise SettingsError(f"{where}: target {self.target!r} is not host:port")
            elif not self.target.strip() or any(c.isspace() for c in self.target) or "/" in self.target:
                raise SettingsError(f"{where}: target {self.target!r} is not a host name or address")


def split_host_port(target: str, where: str = "target") -> tuple[str, int | None]:
    """'host:port' or '[v6]:port' as (host, port); SettingsError for a port that is not one."""
    host, sep, port = target.strip().rpartition(":")
    if not sep:
        return target.strip(), None
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise SettingsError(f"{where}: port {port!r} is not a number") from None
    if not 1 <= p <= 65535:
        raise SettingsError(f"{where}: port {p} is not 1 to 65535")
    return host, p


def validate_all(
    custom: list[CustomSettings], scrape: list[ScrapeSettings], check: list[CheckSettings]
) -> None:
    """Each entry, then what they share: distinct names per kind, and a bounded count."""
    total = len(custom) + len(scrape) + len(check)
    if total > MAX_PLUGINS:
        raise SettingsError(
            f"at most {MAX_PLUGINS} [[custom]], [[scrape]] and [[check]] entries (got {total})"
        )
    for kind, entries in (("custom", custom), ("scrape", scrape), ("check", check)):
        seen: set[str] = set()
        for e in entries:
            e.validate()
            if e.name in seen:
                raise SettingsError(f"[[{kind}]] name {e.name!r} is used twice")
            seen.add(e.name)
    names = [e.name for e in custom] + [e.name for e in scrape]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SettingsError(
            f"[[custom]] and [[scrape]] share the name(s) {dup}: plugin_up could not tell them apart"
        )
