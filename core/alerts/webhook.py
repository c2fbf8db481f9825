"""Webhook channels: a JSON POST of the WebhookBody, optionally signed with HMAC-SHA256.

Headers (README, "Alerting"):
  X-ServerManager-Timestamp: unix seconds when the request was made
  X-ServerManager-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>." + body bytes)> (with a secret)
  X-ServerManager-Deliveries: the outbox row ids the POST carries, comma-separated (to drop repeats)
  X-ServerManager-Event: "alert", or "test" for a channel's send-test
"""

from __future__ import annotations

import hashlib
import hmac
import time

import aiohttp
import msgspec

from servermanager.common import __version__
from servermanager.core.alerts.message import DeliveryError, Notification

SIGNATURE_HEADER = "X-ServerManager-Signature"
TIMESTAMP_HEADER = "X-ServerManager-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def post(
    session: aiohttp.ClientSession, url: str, secret: str | None, n: Notification, timeout: float
) -> None:
    body = msgspec.json.encode(n.body)
    ts = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"servermanager/{__version__}",
        TIMESTAMP_HEADER: ts,
        "X-ServerManager-Event": "test" if n.test else "alert",
    }
    if n.delivery_ids:
        headers["X-ServerManager-Deliveries"] = ",".join(map(str, n.delivery_ids))
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, ts, body)
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as r:
            if 200 <= r.status < 300:
                return
            text = (await r.text(errors="replace"))[:200].strip()
            extra = " (redirects are not followed)" if 300 <= r.status < 400 else ""
            raise DeliveryError(
                f"the receiver answered {r.status} {r.reason or ''}".rstrip()
                + extra
                + (f": {text}" if text else "")
            )
    except TimeoutError:
        raise DeliveryError(f"the receiver did not answer within {timeout:g}s") from None
    except aiohttp.ClientConnectorError as exc:
        why = (
            "connection refused"
            if isinstance(exc.os_error, ConnectionRefusedError)
            else (exc.os_error.strerror or str(exc.os_error))
        )
        raise DeliveryError(f"could not connect to {exc.host}:{exc.port}: {why}") from None
    except aiohttp.ClientError as exc:
        raise DeliveryError(f"the request failed: {exc.__class__.__name__}: {exc}") from None
