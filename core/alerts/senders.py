"""Sending one notification on one channel, whatever its kind; errors come back scrubbed of secrets."""

from __future__ import annotations

import aiohttp

from servermanager.core.alerts import apprise_sender, mail, webhook
from servermanager.core.alerts.channels import StoredChannel, scrub
from servermanager.core.alerts.message import DeliveryError, Notification


async def send(session: aiohttp.ClientSession, ch: StoredChannel, n: Notification, timeout: float) -> None:
    """Send `n` on `ch`, or raise DeliveryError with a message safe to store, answer and log."""
    cfg = ch.config
    try:
        if ch.kind == "webhook":
            await webhook.post(session, cfg.url, cfg.secret, n, timeout)
        elif ch.kind == "email":
            assert cfg.from_addr is not None
            await mail.send(cfg.url, cfg.starttls, cfg.from_addr, cfg.to, n, timeout)
        elif ch.kind == "apprise":
            await apprise_sender.send(cfg.url, n, timeout)
        else:
            raise DeliveryError(f"unknown channel kind {ch.kind!r}")
    except DeliveryError as exc:
        raise DeliveryError(scrub(str(exc), ch.secrets())) from None
    except Exception as exc:  # a sender's bug must not end the outbox; its text may echo the URL
        raise DeliveryError(scrub(f"sending failed: {exc.__class__.__name__}: {exc}", ch.secrets())) from None
