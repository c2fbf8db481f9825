"""Notification channels: stored in the `channels` table, validated, and shown with their secrets redacted.

A channel's settings live in its `config` JSON (url, secret, to, from_addr, starttls, quiet_hours).
What the API answers never holds a secret: `secret` becomes `has_secret`, and the URL's password and
its token-like parts (long or mixed letter-and-digit path segments and host labels, query values)
are shown as `***`. Every error text that may echo a URL goes through `scrub` before it is stored,
answered or logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote, unquote, urlsplit

import msgspec

from servermanager.common import rest as m
from servermanager.core.alerts import apprise_sender
from servermanager.core.store.db import Database

MASK = "***"
# Query parameters whose values are settings rather than credentials; every other value is masked.
_PLAIN_QUERY_KEYS = frozenset(
    {"format", "overflow", "priority", "verify", "rto", "cto", "method", "mode", "emojis", "tz"}
)
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


class ChannelError(Exception):
    """Bad channel input: the API answers it as a 400 with this code and message."""

    def __init__(self, message: str, code: str = "invalid_channel") -> None:
        super().__init__(message)
        self.code, self.message = code, message


class ChannelConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the `config` column holds."""

    url: str
    secret: str | None = None
    to: list[str] = []
    from_addr: str | None = None
    starttls: bool = True
    quiet_hours: str | None = None


@dataclass(frozen=True)
class StoredChannel:
    id: int
    name: str
    kind: str
    config: ChannelConfig
    enabled: bool
    created_at: float

    def public(self) -> m.Channel:
        """The channel as the API shows it: no secret, the URL redacted."""
        return m.Channel(
            id=self.id,
            name=self.name,
            kind=self.kind,  # type: ignore[arg-type]
            url=redact_url(self.config.url),
            has_secret=self.config.secret is not None,
            to=list(self.config.to),
            from_addr=self.config.from_addr,
            starttls=self.config.starttls,
            quiet_hours=self.config.quiet_hours,
            enabled=self.enabled,
            created_at=self.created_at,
        )

    def secrets(self) -> list[str]:
        """Every string that must never reach an answer or a log: for `scrub`."""
        return secrets_of(self.config)


# ---------------------------------------------------------------- redaction


def _token_like(part: str) -> bool:
    """A path segment, host label or user name that looks like a key rather than a word."""
    if len(part) >= 16:
        return True
    return len(part) >= 8 and any(c.isdigit() for c in part)


def _is_host(host: str) -> bool:
    if host == "localhost" or "." in host:
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _split(url: str) -> tuple[str, str, str, str, str, str, str]:
    """scheme, user, password, hostport, path, query, fragment of a URL, without urllib's port
    parsing (Apprise URLs put tokens where a port would be, and channels after a #)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", "", "", url, "", ""
    rest, hash_, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    path = slash + path
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        userinfo, hostport = "", netloc
    user, _, password = userinfo.partition(":")
    return scheme, user, password, hostport, path, query, hash_ + fragment


def _redact_parts(url: str) -> tuple[str, list[str]]:
    """The URL with its secrets masked, and the secrets it masked."""
    scheme, user, password, hostport, path, query, fragment = _split(url)
    if not scheme:
        return MASK, [url]
    hidden: list[str] = []
    netloc = ""
    if user:
        if _token_like(unquote(user)):
            hidden.append(user)
            user = MASK
        netloc = user
        if password:
            hidden.append(password)
            netloc += ":" + MASK
        netloc += "@"
    elif password:
        hidden.append(password)
        netloc = ":" + MASK + "@"
    host, colon, port = hostport.partition(":")
    if host.startswith("["):  # an IPv6 literal: [::1]:port
        host, _, port = hostport.partition("]")
        host += "]"
        colon, port = (":", port[1:]) if port.startswith(":") else ("", "")
    if host and not _is_host(host) and _token_like(host):
        hidden.append(host)
        host = MASK
    if port and not port.isdigit():
        hidden.append(port)
        port = MASK
    netloc += host + colon + port
    segments = []
    for seg in path.split("/"):
        if seg and _token_like(unquote(seg)):
            hidden.append(seg)
            seg = MASK
        segments.append(seg)
    out = f"{scheme}://{netloc}{'/'.join(segments)}"
    if query:
        pairs = []
        for pair in query.split("&"):
            key, eq, value = pair.partition("=")
            if eq and value and key.lower() not in _PLAIN_QUERY_KEYS:
                hidden.append(value)
                value = MASK
            pairs.append(key + eq + value)
        out += "?" + "&".join(pairs)
    if fragment:
        if _token_like(fragment[1:]):
            hidden.append(fragment[1:])
            fragment = "#" + MASK
        out += fragment
    return out, hidden


def redact_url(url: str) -> str:
    """The URL as the API and the log may show it: password and token-like parts as ***."""
    return _redact_parts(url)[0]


def secrets_of(config: ChannelConfig) -> list[str]:
    found = [*_redact_parts(config.url)[1]]
    if config.secret:
        found.append(config.secret)
    out: set[str] = set()
    for s in found:
        for form in (s, unquote(s), quote(unquote(s), safe="")):
            if len(form) >= 3:
                out.add(form)
    out.add(config.url)
    return sorted(out, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every secret replaced by ***: for error messages that may echo a URL."""
    for s in secrets:
        if s:
            text = text.replace(s, MASK)
    return text


# ---------------------------------------------------------------- quiet hours


def _minutes(hhmm: str) -> int:
    h, _, mm = hhmm.partition(":")
    return int(h) * 60 + int(mm)


def quiet_until(quiet_hours: str | None, now: float) -> float | None:
    """When the quiet window that holds `now` ends (a timestamp), or None outside it.

    `quiet_hours` is "HH:MM-HH:MM" in the core's local time; a window whose start is after its end
    runs over midnight ("22:00-07:00"). The start minute is quiet, the end minute is not.
    """
    if not quiet_hours:
        return None
    start_s, _, end_s = quiet_hours.partition("-")
    start, end = _minutes(start_s), _minutes(end_s)
    local = datetime.fromtimestamp(now)
    minute = local.hour * 60 + local.minute
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)

    def at(day: datetime, minutes: int) -> float:
        return (day + timedelta(minutes=minutes)).timestamp()

    if start < end:
        return at(midnight, end) if start <= minute < end else None
    if minute >= start:
        return at(midnight + timedelta(days=1), end)
    if minute < end:
        return at(midnight, end)
    return None


# ---------------------------------------------------------------- validation


def _check_url(kind: str, cfg: ChannelConfig) -> None:
    url = cfg.url
    if MASK in url:
        raise ChannelError(
            "url contains the redaction mark ***: send the full URL, or leave url out to keep the stored one"
        )
    if any(c.isspace() for c in url):
        raise ChannelError("url must not contain spaces")
    if kind == "webhook":
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ChannelError(
                f"webhook url must be http:// or https:// with a host, got {redact_url(url)!r}"
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ChannelError(f"webhook url has a bad port: {redact_url(url)!r}") from None
    elif kind == "email":
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ChannelError(
                f"email url must be smtp://[user:password@]host[:port] or smtps://..., got {redact_url(url)!r}"
            )
        try:
            parts.port  # noqa: B018
        except ValueError:
            raise ChannelError(f"email url has a bad port: {redact_url(url)!r}") from None
        if parts.path not in ("", "/") or parts.query:
            raise ChannelError("email url takes no path or query: smtp[s]://[user:password@]host[:port]")
        if parts.username and parts.password is None:
            raise ChannelError("email url names a user without a password: smtp://user:password@host")
    elif kind == "apprise":
        problem = apprise_sender.check_url(url)
        if problem is not None:
            raise ChannelError(
                problem, "apprise_unavailable" if "not installed" in problem else "invalid_channel"
            )


def validate(kind: str, cfg: ChannelConfig) -> None:
    """Raise ChannelError unless the settings make a channel of `kind` that can send."""
    _check_url(kind, cfg)
    if cfg.quiet_hours:
        start, _, end = cfg.quiet_hours.partition("-")
        if start == end:
            raise ChannelError("quiet_hours start and end are the same; leave quiet_hours out for none")
    if kind == "email":
        if not cfg.to:
            raise ChannelError("an email channel needs at least one address in `to`")
        if not cfg.from_addr:
            raise ChannelError("an email channel needs `from_addr`, the sender address")
        for addr in (*cfg.to, cfg.from_addr):
            if not _EMAIL.match(addr):
                raise ChannelError(f"not an email address: {addr!r}")
    else:
        if cfg.to or cfg.from_addr:
            raise ChannelError(f"`to` and `from_addr` are for email channels, not {kind}")
    if kind == "apprise" and cfg.secret is not None:
        raise ChannelError("`secret` signs webhooks; an apprise channel keeps its keys in its url")
    if kind == "email" and cfg.secret is not None:
        raise ChannelError("`secret` signs webhooks; an email channel's password goes in its url")


# ---------------------------------------------------------------- the table


class InUse(Exception):
    def __init__(self, rules: list[tuple[int, str]]) -> None:
        super().__init__(", ".join(f"{name} (id {rid})" for rid, name in rules))
        self.rules = rules


class Channels:
    """CRUD on the `channels` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _row(r: tuple) -> StoredChannel:
        return StoredChannel(
            id=r[0],
            name=r[1],
            kind=r[2],
            config=msgspec.json.decode(r[3], type=ChannelConfig),
            enabled=bool(r[4]),
            created_at=r[5],
        )

    async def all(self) -> list[StoredChannel]:
        rows = await self.db.fetchall(
            "SELECT id, name, kind, config, enabled, created_at FROM channels ORDER BY id"
        )
        return [self._row(tuple(r)) for r in rows]

    async def get(self, cid: int) -> StoredChannel | None:
        r = await self.db.fetchone(
            "SELECT id, name, kind, config, enabled, created_at FROM channels WHERE id = ?", (cid,)
        )
        return self._row(tuple(r)) if r else None

    async def _name_taken(self, name: str, but: int | None = None) -> bool:
        r = await self.db.fetchone("SELECT id FROM channels WHERE name = ? AND id != ?", (name, but or 0))
        return r is not None

    async def create(self, body: m.ChannelCreate) -> StoredChannel:
        cfg = ChannelConfig(
            url=body.url,
            secret=body.secret,
            to=list(body.to),
            from_addr=body.from_addr,
            starttls=body.starttls,
            quiet_hours=body.quiet_hours,
        )
        if body.kind == "apprise":
            await asyncio.to_thread(apprise_sender.available)  # its first import is slow: not on the loop
        validate(body.kind, cfg)
        if await self._name_taken(body.name):
            raise ChannelError(f"a channel named {body.name!r} exists", "conflict")
        now = time.time()
        cid = await self.db.insert(
            "INSERT INTO channels (name, kind, config, enabled, created_at) VALUES (?, ?, ?, ?, ?)",
            (body.name, body.kind, msgspec.json.encode(cfg).decode(), int(body.enabled), now),
        )
        return StoredChannel(cid, body.name, body.kind, cfg, body.enabled, now)

    async def update(self, cid: int, patch: m.ChannelPatch) -> tuple[StoredChannel, list[str]] | None:
        """Apply `patch`; returns the channel and the names of the fields that changed."""
        old = await self.get(cid)
        if old is None:
            return None
        cfg = msgspec.structs.replace(old.config)
        changed: list[str] = []
        # The redacted URL sent back unchanged (an editor round trip) keeps the stored one.
        if patch.url is not None and patch.url not in (old.config.url, redact_url(old.config.url)):
            cfg.url = patch.url
            changed.append("url")
        # A secret is write-only: left out (or null, as an editor sends an untouched field) keeps it.
        if patch.secret is not None and patch.secret != old.config.secret:
            cfg.secret = patch.secret
            changed.append("secret")
        if patch.to is not None and patch.to != old.config.to:
            cfg.to = list(patch.to)
            changed.append("to")
        if patch.from_addr is not None and patch.from_addr != old.config.from_addr:
            cfg.from_addr = patch.from_addr
            changed.append("from_addr")
        if patch.starttls is not None and patch.starttls != old.config.starttls:
            cfg.starttls = patch.starttls
            changed.append("starttls")
        if (
            not isinstance(patch.quiet_hours, msgspec.UnsetType)
            and patch.quiet_hours != old.config.quiet_hours
        ):
            cfg.quiet_hours = patch.quiet_hours
            changed.append("quiet_hours")
        name = old.name
        if patch.name is not None and patch.name != old.name:
            if await self._name_taken(patch.name, cid):
                raise ChannelError(f"a channel named {patch.name!r} exists", "conflict")
            name = patch.name
            changed.append("name")
        enabled = old.enabled
        if patch.enabled is not None and patch.enabled != old.enabled:
            enabled = patch.enabled
            changed.append("enabled")
        if old.kind == "apprise":
            await asyncio.to_thread(apprise_sender.available)
        validate(old.kind, cfg)
        if changed:
            await self.db.execute(
                "UPDATE channels SET name = ?, config = ?, enabled = ? WHERE id = ?",
                (name, msgspec.json.encode(cfg).decode(), int(enabled), cid),
            )
        return StoredChannel(cid, name, old.kind, cfg, enabled, old.created_at), changed

    async def rules_using(self, cid: int) -> list[tuple[int, str]]:
        # Read in Python rather than with SQLite's json_each, so it reads the same on PostgreSQL:
        # rules are few, and a spec that is not JSON names no channel.
        rows = await self.db.fetchall("SELECT id, name, spec FROM alert_rules ORDER BY id")
        out = []
        for rid, name, spec in rows:
            try:
                channels = msgspec.json.decode(spec).get("channels") or []
            except (msgspec.DecodeError, AttributeError):
                continue
            if isinstance(channels, list) and cid in channels:
                out.append((rid, name))
        return out

    async def delete(self, cid: int) -> bool:
        """Delete a channel no rule uses (InUse names the rules that do); its undelivered
        notifications are marked failed, since nothing can send them any more."""
        using = await self.rules_using(cid)
        if using:
            raise InUse(using)
        async with self.db.transaction() as con:
            cur = await con.execute("DELETE FROM channels WHERE id = ?", (cid,))
            if cur.rowcount == 0:
                return False
            await con.execute(
                "UPDATE alert_deliveries SET state = 'failed', last_error = 'channel deleted' "
                "WHERE channel_id = ? AND state IN ('pending', 'retrying')",
                (cid,),
            )
        return True
