"""The durable outbox against a real core and a real HTTP receiver: body, signature, grouping,
retries, restarts, quiet hours, disabled and deleted channels, giving up."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devkit.cores import RunningCore
from devkit.ports import free_port
from servermanager.core.datadir import DB_FILENAME
from tests.core.alerts.helpers import QUICK
from tests.helpers.alerts import Spec, delivery, queue, queue_offline
from tests.helpers.receiver import Receiver
from tests.helpers.wait import wait_for, wait_until


async def webhook(core: RunningCore, url: str, **extra: Any) -> int:
    status, body = await core.request(
        "POST",
        "/api/v1/channels",
        await core.admin_token(),
        json={"name": extra.pop("name", "hook"), "kind": "webhook", "url": url, **extra},
    )
    assert status == 201, body
    return int(body["id"])


def readme_verify() -> Callable[..., bool]:
    text = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify" in b)
    scope: dict[str, Any] = {}
    exec(block, scope)
    return scope["verify"]  # type: ignore[no-any-return]


async def test_webhook_gets_the_documented_body_with_a_valid_signature(
    core: RunningCore, receiver: Receiver
) -> None:
    secret = "whsec-0123456789abcdef"
    cid = await webhook(core, receiver.url(), secret=secret)
    [q] = await queue(core.core.db, Spec(cid))
    core.core.outbox.notify()
    await wait_for(lambda: receiver.got, what="the webhook POST")
    [got] = receiver.got
    assert got.path == "/hook"
    assert got.headers["Content-Type"] == "application/json"
    body = got.json()
    assert body["status"] == "firing"
    [alert] = body["alerts"]
    assert set(alert) == {
        "id",
        "rule",
        "node",
        "node_id",
        "severity",
        "value",
        "threshold",
        "started_at",
        "resolved_at",
    }
    assert alert["id"] == q.alert_id
    assert (alert["rule"], alert["node"], alert["node_id"]) == ("cpu high", "web-1", 1)
    assert (alert["severity"], alert["value"], alert["threshold"]) == ("critical", 97.0, 90.0)
    assert alert["resolved_at"] is None
    # The receiver's check, as the README shows it.
    ts = got.headers["X-ServerManager-Timestamp"]
    assert abs(int(ts) - time.time()) < 60
    expected = hmac.new(secret.encode(), ts.encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-ServerManager-Signature"] == f"sha256={expected}"
    wrong = hmac.new(b"other", ts.encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-ServerManager-Signature"] != f"sha256={wrong}"
    # The README's verification snippet accepts it, and refuses another secret or a changed body.
    verify = readme_verify()
    assert verify(secret, got.headers, got.body)
    assert not verify("other-secret", got.headers, got.body)
    assert not verify(secret, got.headers, got.body.replace(b"web-1", b"web-2"))
    assert got.headers["X-ServerManager-Deliveries"] == str(q.delivery_id)
    assert got.headers["X-ServerManager-Event"] == "alert"

    row = await wait_until(
        lambda: delivery(core.core.db, q.delivery_id), lambda d: d["state"] == "sent", what="sent"
    )
    assert row["attempts"] == 1 and row["sent_at"] is not None and row["last_error"] is None
    # Another pass finds nothing to send.
    await core.core.outbox.dispatch()
    await core.core.outbox.idle()
    assert len(receiver.got) == 1


async def test_no_signature_without_a_secret(core: RunningCore, receiver: Receiver) -> None:
    cid = await webhook(core, receiver.url())
    await queue(core.core.db, Spec(cid))
    core.core.outbox.notify()
    await wait_for(lambda: receiver.got, what="the webhook POST")
    assert "X-ServerManager-Signature" not in receiver.got[0].headers


async def test_rows_due_together_go_out_grouped_by_status(core: RunningCore, receiver: Receiver) -> None:
    cid = await webhook(core, receiver.url())
    rows = await queue(
        core.core.db,
        Spec(cid, node="web-1", node_id=1, due_in=0.2),
        Spec(cid, node="web-2", node_id=2, due_in=0.2),
        Spec(cid, node="db-1", node_id=3, status="resolved", due_in=0.2),
    )
    core.core.outbox.notify()
    await wait_until(
        lambda: _states(core, [q.delivery_id for q in rows]),
        lambda s: s == ["sent"] * 3,
        what="all three sent",
    )
    assert len(receiver.got) == 2
    by_status = {g.json()["status"]: g.json() for g in receiver.got}
    assert sorted(a["node"] for a in by_status["firing"]["alerts"]) == ["web-1", "web-2"]
    assert [a["node"] for a in by_status["resolved"]["alerts"]] == ["db-1"]
    assert by_status["resolved"]["alerts"][0]["resolved_at"] is not None
    firing = next(g for g in receiver.got if g.json()["status"] == "firing")
    assert firing.headers["X-ServerManager-Deliveries"] == f"{rows[0].delivery_id},{rows[1].delivery_id}"


async def _states(core: RunningCore, ids: list[int]) -> list[str]:
    return [(await delivery(core.core.db, i))["state"] for i in ids]


async def test_a_receiver_down_then_back_gets_it_once(core: RunningCore) -> None:
    port = free_port()
    cid = await webhook(core, f"http://127.0.0.1:{port}/hook")
    [q] = await queue(core.core.db, Spec(cid))
    core.core.outbox.notify()
    # Nothing listens: connection refused, retried with backoff.
    row = await wait_until(
        lambda: delivery(core.core.db, q.delivery_id),
        lambda d: d["attempts"] >= 2,
        what="two failed attempts",
    )
    assert row["state"] == "retrying"
    assert row["sent_at"] is None
    assert f"could not connect to 127.0.0.1:{port}" in row["last_error"]
    # Up but broken: a 500 is a failure too, in the receiver's words.
    receiver = await Receiver(port=port, status=500).start()
    try:
        row = await wait_until(
            lambda: delivery(core.core.db, q.delivery_id),
            lambda d: "answered 500" in (d["last_error"] or ""),  # not "500": the port may hold it
            what="a failed attempt with the receiver's 500",
        )
        assert "the receiver answered 500 Internal Server Error: receiver is broken" in row["last_error"]
        assert row["state"] == "retrying"
        failed_posts = len(receiver.got)
        assert failed_posts >= 1
        receiver.status = 200
        row = await wait_until(
            lambda: delivery(core.core.db, q.delivery_id), lambda d: d["state"] == "sent", what="sent"
        )
        assert len(receiver.got) == failed_posts + 1  # one successful POST, after the failed ones
        assert row["attempts"] >= 3
        assert "answered 500" in row["last_error"]  # why it took more than one attempt stays in the log
        await core.core.outbox.dispatch()
        await core.core.outbox.idle()
        assert len(receiver.got) == failed_posts + 1
    finally:
        await receiver.stop()


async def test_passes_during_a_slow_send_do_not_send_again(core: RunningCore, receiver: Receiver) -> None:
    receiver.gate = asyncio.Event()
    cid = await webhook(core, receiver.url())
    [q] = await queue(core.core.db, Spec(cid))
    core.core.outbox.notify()
    await wait_for(lambda: receiver.arrived == 1, what="the POST to arrive")
    for _ in range(3):  # overlapping passes while the receiver holds the answer
        await core.core.outbox.dispatch()
    assert receiver.arrived == 1
    receiver.gate.set()
    await wait_until(lambda: delivery(core.core.db, q.delivery_id), lambda d: d["state"] == "sent")
    await core.core.outbox.dispatch()
    await core.core.outbox.idle()
    assert receiver.arrived == 1 and len(receiver.got) == 1


async def test_a_receiver_that_never_answers_times_out(tmp_path: Path, receiver: Receiver) -> None:
    receiver.gate = asyncio.Event()  # never set
    server = await RunningCore(tmp_path / "core", **{**QUICK, "alert_delivery_timeout": 0.3}).start()
    try:
        cid = await webhook(server, receiver.url())
        [q] = await queue(server.core.db, Spec(cid))
        server.core.outbox.notify()
        row = await wait_until(
            lambda: delivery(server.core.db, q.delivery_id), lambda d: d["attempts"] >= 1, what="a timeout"
        )
        assert row["state"] == "retrying"
        assert row["last_error"] == "the receiver did not answer within 0.3s"
    finally:
        receiver.gate.set()
        await server.stop()


async def test_pending_rows_survive_a_restart_and_go_out_once(tmp_path: Path) -> None:
    folder = tmp_path / "core"
    port = free_port()
    first = await RunningCore(folder, **QUICK).start()
    try:
        cid = await webhook(first, f"http://127.0.0.1:{port}/hook")
        [retried] = await queue(first.core.db, Spec(cid, node="web-1", node_id=1))
        first.core.outbox.notify()
        await wait_until(
            lambda: delivery(first.core.db, retried.delivery_id),
            lambda d: d["state"] == "retrying",
            what="a failed attempt while the receiver is down",
        )
    finally:
        await first.stop()
    # Committed by the engine as the core went down, before any pass saw it.
    [unseen] = queue_offline(folder / DB_FILENAME, Spec(cid, node="web-2", node_id=2))
    receiver = await Receiver(port=port).start()
    second = await RunningCore(folder, **QUICK).start()
    try:
        await wait_until(
            lambda: _states(second, [retried.delivery_id, unseen.delivery_id]),
            lambda s: s == ["sent", "sent"],
            what="both sent after the restart",
        )
        await second.core.outbox.dispatch()
        await second.core.outbox.idle()
        ids = sorted(a["id"] for g in receiver.got for a in g.json()["alerts"])
        assert ids == sorted([retried.alert_id, unseen.alert_id])  # each exactly once
    finally:
        await second.stop()
        await receiver.stop()


async def test_quiet_hours_postpone_to_their_end(core: RunningCore, receiver: Receiver) -> None:
    now = time.time()
    start = datetime.fromtimestamp(now - 3600)
    end = datetime.fromtimestamp(now + 3600)
    quiet = f"{start:%H:%M}-{end:%H:%M}"
    cid = await webhook(core, receiver.url(), quiet_hours=quiet)
    [q] = await queue(core.core.db, Spec(cid))
    core.core.outbox.notify()
    row = await wait_until(
        lambda: delivery(core.core.db, q.delivery_id),
        lambda d: d["next_attempt_at"] > now + 60,
        what="the row postponed",
    )
    assert row["next_attempt_at"] == pytest.approx(end.replace(second=0, microsecond=0).timestamp(), abs=1)
    assert row["state"] == "pending" and row["attempts"] == 0
    await core.core.outbox.dispatch()
    await core.core.outbox.idle()
    assert receiver.got == []
    # Outside the window the same channel sends at once.
    status, body = await core.request(
        "PATCH", f"/api/v1/channels/{cid}", await core.admin_token(), json={"quiet_hours": None}
    )
    assert status == 200 and body["quiet_hours"] is None, body
    await queue(core.core.db, Spec(cid, node="web-9", node_id=9))
    core.core.outbox.notify()
    await wait_for(lambda: receiver.got, what="the POST outside quiet hours")
    assert [a["node"] for a in receiver.got[0].json()["alerts"]] == ["web-9"]
    assert (await delivery(core.core.db, q.delivery_id))["state"] == "pending"


async def test_disabled_and_deleted_channels_fail_their_rows(core: RunningCore, receiver: Receiver) -> None:
    off = await webhook(core, receiver.url(), name="off", enabled=False)
    gone = await webhook(core, receiver.url(), name="gone")
    status, _ = await core.request("DELETE", f"/api/v1/channels/{gone}", await core.admin_token())
    assert status == 204
    a, b = await queue(core.core.db, Spec(off), Spec(gone))
    core.core.outbox.notify()
    ra = await wait_until(lambda: delivery(core.core.db, a.delivery_id), lambda d: d["state"] == "failed")
    rb = await wait_until(lambda: delivery(core.core.db, b.delivery_id), lambda d: d["state"] == "failed")
    assert ra["last_error"] == "channel off is disabled"
    assert rb["last_error"] == f"channel {gone} no longer exists"
    assert receiver.got == []


async def test_deleting_a_channel_fails_its_undelivered_rows(core: RunningCore) -> None:
    cid = await webhook(core, f"http://127.0.0.1:{free_port()}/hook")
    [q] = await queue(core.core.db, Spec(cid, due_in=3600))
    status, _ = await core.request("DELETE", f"/api/v1/channels/{cid}", await core.admin_token())
    assert status == 204
    row = await delivery(core.core.db, q.delivery_id)
    assert (row["state"], row["last_error"]) == ("failed", "channel deleted")


async def test_gives_up_past_the_max_age(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "core", **{**QUICK, "alert_delivery_max_age": 0.3}).start()
    try:
        port = free_port()
        cid = await webhook(server, f"http://127.0.0.1:{port}/hook")
        [q] = await queue(server.core.db, Spec(cid))
        server.core.outbox.notify()
        row = await wait_until(
            lambda: delivery(server.core.db, q.delivery_id), lambda d: d["state"] == "failed", what="failed"
        )
        assert row["last_error"].startswith(f"gave up after {row['attempts']} attempts: could not connect")
        assert row["attempts"] >= 1 and row["sent_at"] is None
    finally:
        await server.stop()
