"""REST for notification channels: list and read (viewer), create, edit, delete and send-test (admin).

Answers never hold a secret (core.alerts.channels redacts them), and neither do audit rows: they
name the channel, its kind, its redacted URL and which fields changed, never the new values of
`url` or `secret`. Deleting a channel that rules still notify is refused with 409 naming them:
detaching it silently could leave a rule that tells no one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from servermanager.common import rest as m
from servermanager.common.alerts import WebhookAlert, WebhookBody
from servermanager.core.alerts import senders
from servermanager.core.alerts.channels import ChannelError, InUse, StoredChannel, redact_url
from servermanager.core.alerts.message import DeliveryError, Notification
from servermanager.core.auth import Role
from servermanager.core.http.routing import ApiError, Call, Route

log = logging.getLogger(__name__)


def _bad(exc: ChannelError) -> ApiError:
    if exc.code == "conflict":
        return ApiError(409, "conflict", exc.message)
    return ApiError(400, exc.code, exc.message)


def _target(cid: int) -> str:
    return f"channel:{cid}"


async def list_channels(c: Call) -> m.ChannelList:
    return m.ChannelList([ch.public() for ch in await c.core.channels.all()])


async def get_channel(c: Call) -> m.Channel:
    ch = await c.core.channels.get(c.path_id("channel"))
    if ch is None:
        raise ApiError(404, "not_found", "no such channel")
    return ch.public()


async def create_channel(c: Call) -> m.Channel:
    body: m.ChannelCreate = c.body
    detail: dict[str, Any] = {"name": body.name, "kind": body.kind}
    try:
        ch = await c.core.channels.create(body)
    except ChannelError as exc:
        await c.core.audit.record(c.actor, "channel.create", None, "error", {**detail, "error": exc.message})
        raise _bad(exc) from None
    await c.core.audit.record(
        c.actor, "channel.create", _target(ch.id), "ok", {**detail, "url": redact_url(ch.config.url)}
    )
    log.info("channel %s (%s, id %d) created by %s", ch.name, ch.kind, ch.id, c.actor)
    return ch.public()


async def patch_channel(c: Call) -> m.Channel:
    cid = c.path_id("channel")
    try:
        done = await c.core.channels.update(cid, c.body)
    except ChannelError as exc:
        await c.core.audit.record(c.actor, "channel.update", _target(cid), "error", {"error": exc.message})
        raise _bad(exc) from None
    if done is None:
        await c.core.audit.record(c.actor, "channel.update", _target(cid), "not_found")
        raise ApiError(404, "not_found", "no such channel")
    ch, changed = done
    await c.core.audit.record(
        c.actor,
        "channel.update",
        _target(cid),
        "ok",
        {"name": ch.name, "changed": changed, "url": redact_url(ch.config.url)},
    )
    return ch.public()


async def delete_channel(c: Call) -> None:
    cid = c.path_id("channel")
    try:
        ok = await c.core.channels.delete(cid)
    except InUse as exc:
        await c.core.audit.record(c.actor, "channel.delete", _target(cid), "error", {"error": "in use"})
        raise ApiError(
            409,
            "channel_in_use",
            f"channel {cid} is used by rule(s) {exc}; remove it from their channels first",
        ) from None
    await c.core.audit.record(c.actor, "channel.delete", _target(cid), "ok" if ok else "not_found")
    if not ok:
        raise ApiError(404, "not_found", "no such channel")


def _test_notification() -> Notification:
    now = time.time()
    alert = WebhookAlert(
        id=0,
        rule="test notification",
        node="servermanager core",
        node_id=0,
        severity="warning",
        value=None,
        threshold=0.0,
        started_at=now,
        resolved_at=None,
    )
    return Notification(body=WebhookBody(status="firing", alerts=[alert]), details={}, test=True)


async def send_test(core_channel: StoredChannel, c: Call) -> m.ChannelTestResult:
    try:
        await senders.send(
            c.core.outbox.session, core_channel, _test_notification(), c.core.settings.alert_delivery_timeout
        )
    except DeliveryError as exc:
        return m.ChannelTestResult(ok=False, message=str(exc))
    return m.ChannelTestResult(ok=True, message=f"sent a test notification on {core_channel.name}")


async def test_channel(c: Call) -> m.ChannelTestResult:
    """Send a test notification now, whatever the channel's quiet hours or enabled flag."""
    cid = c.path_id("channel")
    ch = await c.core.channels.get(cid)
    if ch is None:
        await c.core.audit.record(c.actor, "channel.test", _target(cid), "not_found")
        raise ApiError(404, "not_found", "no such channel")
    result = await send_test(ch, c)
    await c.core.audit.record(
        c.actor, "channel.test", _target(cid), "ok" if result.ok else "error", {"message": result.message}
    )
    if not result.ok:
        log.warning("test notification on channel %s failed: %s", ch.name, result.message)
    return result


V = "/api/v1"
CHANNEL_ROUTES: list[Route] = [
    Route(
        "GET",
        f"{V}/channels",
        list_channels,
        summary="Notification channels, secrets redacted",
        role=Role.VIEWER,
        response=m.ChannelList,
        tag="alerts",
    ),
    Route(
        "POST",
        f"{V}/channels",
        create_channel,
        summary="Create a notification channel (webhook, email or apprise)",
        role=Role.ADMIN,
        body=m.ChannelCreate,
        response=m.Channel,
        status=201,
        tag="alerts",
    ),
    Route(
        "GET",
        f"{V}/channels/{{id}}",
        get_channel,
        summary="A notification channel, secrets redacted",
        role=Role.VIEWER,
        response=m.Channel,
        tag="alerts",
    ),
    Route(
        "PATCH",
        f"{V}/channels/{{id}}",
        patch_channel,
        summary="Edit a channel; a secret left out or null is kept",
        role=Role.ADMIN,
        body=m.ChannelPatch,
        response=m.Channel,
        tag="alerts",
    ),
    Route(
        "DELETE",
        f"{V}/channels/{{id}}",
        delete_channel,
        summary="Delete a channel no rule uses",
        role=Role.ADMIN,
        status=204,
        tag="alerts",
    ),
    Route(
        "POST",
        f"{V}/channels/{{id}}/test",
        test_channel,
        summary="Send a test notification now",
        role=Role.ADMIN,
        response=m.ChannelTestResult,
        tag="alerts",
    ),
]
