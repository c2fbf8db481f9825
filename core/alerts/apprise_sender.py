"""Apprise channels: one Apprise URL (Telegram, Slack, ntfy, ...), sent by the apprise library.

Apprise is an optional extra (`pip install servermanager[core,apprise]`), imported only when an
apprise channel is created or used. Its own log goes to us, never straight to the core's log:
what it says on a failure is captured per sending thread, scrubbed of the URL's secrets by the
caller, and becomes the delivery's error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import warnings
from types import ModuleType
from typing import Any

from servermanager.core.alerts import message
from servermanager.core.alerts.message import DeliveryError, Notification

NOT_INSTALLED = (
    "apprise is not installed on this core; install it with `pip install 'servermanager[core,apprise]'`"
)


@functools.cache
def _load() -> ModuleType | None:
    try:
        # Apprise loads its plugins on first use; some import deprecated stdlib modules (imghdr).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise

            apprise.Apprise.instantiate("json://localhost", suppress_exceptions=True)
    except ImportError:
        return None
    # Apprise's log can name URLs with their keys; it reaches the core's log only through us.
    logger = logging.getLogger("apprise")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return apprise


def available() -> bool:
    return _load() is not None


def check_url(url: str) -> str | None:
    """None if apprise accepts `url`, else why not (its absence included)."""
    apprise = _load()
    if apprise is None:
        return NOT_INSTALLED
    if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        scheme = url.partition("://")[0] if "://" in url else ""
        if scheme and scheme.lower() not in {s.lower() for s in _schemas(apprise)}:
            return f"apprise does not know the scheme {scheme + '://'!r}"
        return "apprise does not accept this url; see its wiki for the form of each service's URL"
    return None


def _schemas(apprise: ModuleType) -> set[str]:
    try:
        details = apprise.Apprise().details()
    except Exception:
        return set()
    out: set[str] = set()
    for svc in details.get("schemas", []):
        out.update(svc.get("protocols") or [])
        out.update(svc.get("secure_protocols") or [])
    return out


class _ThreadLog(logging.Handler):
    """Collects what apprise logs at WARNING or above from one thread."""

    def __init__(self, thread: int) -> None:
        super().__init__(logging.WARNING)
        self.thread = thread
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())


def _send_sync(url: str, n: Notification, timeout: float) -> None:
    apprise = _load()
    if apprise is None:
        raise DeliveryError(NOT_INSTALLED)
    plugin: Any = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        raise DeliveryError("apprise does not accept this channel's url")
    plugin.socket_connect_timeout = timeout
    plugin.socket_read_timeout = timeout
    if n.test:
        kind = apprise.NotifyType.INFO
    elif n.body.status == "resolved":
        kind = apprise.NotifyType.SUCCESS
    elif any(a.severity == "critical" for a in n.body.alerts):
        kind = apprise.NotifyType.FAILURE
    else:
        kind = apprise.NotifyType.WARNING
    capture = _ThreadLog(threading.get_ident())
    logger = logging.getLogger("apprise")
    logger.addHandler(capture)
    try:
        ok = plugin.notify(body=message.text(n), title=message.subject(n), notify_type=kind)
    finally:
        logger.removeHandler(capture)
    if not ok:
        said = "; ".join(dict.fromkeys(capture.lines)) or "no reason given"
        raise DeliveryError(f"apprise could not send: {said}"[:500])


async def send(url: str, n: Notification, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout * 3):
            await asyncio.to_thread(_send_sync, url, n, timeout)
    except TimeoutError:
        raise DeliveryError(f"apprise did not finish within {timeout * 3:g}s") from None
