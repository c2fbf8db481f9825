"""Apprise channels through the real apprise library, posting to a local HTTP receiver (json://)."""

from __future__ import annotations

import base64
import logging

import pytest

from devkit.cores import RunningCore
from servermanager.core.runtime import QUIET_LOGGERS
from tests.helpers.alerts import Spec, delivery, queue
from tests.helpers.receiver import Receiver
from tests.helpers.wait import wait_for, wait_until

pytest.importorskip("apprise")

PASSWORD = "apprise-S3cretPass"


async def test_an_alert_goes_out_through_apprise(
    core: RunningCore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in QUIET_LOGGERS:
        caplog.set_level(logging.INFO, logger=name)
    url = f"json://bob:{PASSWORD}@127.0.0.1:{receiver.port}/notify"
    status, ch = await core.request(
        "POST",
        "/api/v1/channels",
        await core.admin_token(),
        json={"name": "apprise", "kind": "apprise", "url": url},
    )
    assert status == 201, ch
    assert ch["url"] == f"json://bob:***@127.0.0.1:{receiver.port}/notify"
    [q] = await queue(core.core.db, Spec(ch["id"], node="web-1", metric="cpu_pct", value=97, threshold=90))
    core.core.outbox.notify()
    await wait_for(lambda: receiver.got, what="apprise's POST")
    [got] = receiver.got
    assert got.path == "/notify"
    assert got.headers["Authorization"] == "Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    body = got.json()
    assert body["title"] == "[FIRING] cpu_pct 97 > 90 on web-1 (rule cpu high, critical)"
    assert "[FIRING] cpu_pct 97 > 90 on web-1" in body["message"]
    assert body["type"] == "failure"  # critical
    row = await wait_until(lambda: delivery(core.core.db, q.delivery_id), lambda d: d["state"] == "sent")
    assert row["attempts"] == 1
    assert PASSWORD not in caplog.text


async def test_an_apprise_failure_is_retried_with_its_reason(core: RunningCore, receiver: Receiver) -> None:
    receiver.status = 500
    status, ch = await core.request(
        "POST",
        "/api/v1/channels",
        await core.admin_token(),
        json={"name": "apprise", "kind": "apprise", "url": f"json://127.0.0.1:{receiver.port}/notify"},
    )
    assert status == 201, ch
    status, result = await core.request("POST", f"/api/v1/channels/{ch['id']}/test", await core.admin_token())
    assert result["ok"] is False
    assert result["message"].startswith("apprise could not send: ")
    assert "500" in result["message"], result
    [q] = await queue(core.core.db, Spec(ch["id"], status="resolved"))
    core.core.outbox.notify()
    row = await wait_until(
        lambda: delivery(core.core.db, q.delivery_id), lambda d: d["attempts"] >= 1, what="a failed attempt"
    )
    assert row["state"] == "retrying" and "500" in row["last_error"]
    receiver.status = 200
    await wait_until(lambda: delivery(core.core.db, q.delivery_id), lambda d: d["state"] == "sent")
    assert receiver.got[-1].json()["type"] == "success"  # resolved
