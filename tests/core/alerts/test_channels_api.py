"""/api/v1/channels on a real core: roles, precise 400s, redaction everywhere, send-test, delete rules."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from devkit.cores import RunningCore
from devkit.ports import free_port
from servermanager.core.alerts import apprise_sender
from servermanager.core.runtime import QUIET_LOGGERS
from tests.helpers.receiver import Receiver

SECRET = "whsec-Zq9xK2mN7pL4"
PASSWORD = "pw-Hunter2Hunter2"
TOKEN = "T0KEN4abcdef9876543210"


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[RunningCore]:
    server = await RunningCore(tmp_path / "core", alert_delivery_timeout=2.0).start()
    try:
        yield server
    finally:
        await server.stop()


async def create(core: RunningCore, **body: Any) -> tuple[int, Any]:
    return await core.request("POST", "/api/v1/channels", await core.admin_token(), json=body)


def no_secret(anything: Any) -> None:
    text = anything if isinstance(anything, str) else json.dumps(anything)
    for s in (SECRET, PASSWORD, TOKEN):
        assert s not in text, f"{s} leaked in {text[:300]}"


async def test_secrets_never_in_answers_audit_or_log(
    core: RunningCore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    # The core's own logging: everything at DEBUG but the libraries runtime holds at INFO.
    caplog.set_level(logging.DEBUG)
    for name in QUIET_LOGGERS:
        caplog.set_level(logging.INFO, logger=name)
    url = f"http://alice:{PASSWORD}@127.0.0.1:{receiver.port}/hooks/{TOKEN}?key={TOKEN}&format=json"
    status, ch = await create(core, name="ops", kind="webhook", url=url, secret=SECRET)
    assert status == 201, ch
    assert ch["url"] == f"http://alice:***@127.0.0.1:{receiver.port}/hooks/***?key=***&format=json"
    assert ch["has_secret"] is True
    assert "secret" not in ch
    admin = await core.admin_token()
    viewer = await core.user_token("vera", "viewer")
    for token in (admin, viewer):
        status, listed = await core.request("GET", "/api/v1/channels", token)
        assert status == 200
        assert listed["channels"] == [ch]
        status, one = await core.request("GET", f"/api/v1/channels/{ch['id']}", token)
        assert status == 200 and one == ch
    # The test POST reaches the receiver with the real URL and secret ...
    status, result = await core.request("POST", f"/api/v1/channels/{ch['id']}/test", admin)
    assert status == 200 and result == {"ok": True, "message": "sent a test notification on ops"}
    [got] = receiver.got
    assert got.path == f"/hooks/{TOKEN}?key={TOKEN}&format=json"
    assert got.headers["Authorization"].startswith("Basic ")
    assert got.headers["X-ServerManager-Event"] == "test"
    ts = got.headers["X-ServerManager-Timestamp"]
    expected = hmac.new(SECRET.encode(), ts.encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-ServerManager-Signature"] == f"sha256={expected}"
    # ... a PATCH without `secret` keeps it, and the redacted URL sent back keeps the stored one.
    status, patched = await core.request(
        "PATCH", f"/api/v1/channels/{ch['id']}", admin, json={"name": "ops2", "url": ch["url"]}
    )
    assert status == 200 and patched["has_secret"] is True and patched["url"] == ch["url"], patched
    status, result = await core.request("POST", f"/api/v1/channels/{ch['id']}/test", admin)
    assert result["ok"] is True
    ts = receiver.got[1].headers["X-ServerManager-Timestamp"]
    expected = hmac.new(
        SECRET.encode(), ts.encode() + b"." + receiver.got[1].body, hashlib.sha256
    ).hexdigest()
    assert receiver.got[1].headers["X-ServerManager-Signature"] == f"sha256={expected}"
    assert receiver.got[1].path == f"/hooks/{TOKEN}?key={TOKEN}&format=json"
    # A failing test names the problem without the URL's secrets.
    down = free_port()
    status, patched = await core.request(
        "PATCH",
        f"/api/v1/channels/{ch['id']}",
        admin,
        json={"url": f"http://alice:{PASSWORD}@127.0.0.1:{down}/hooks/{TOKEN}"},
    )
    assert status == 200, patched
    status, result = await core.request("POST", f"/api/v1/channels/{ch['id']}/test", admin)
    assert status == 200
    assert result["ok"] is False
    assert f"could not connect to 127.0.0.1:{down}" in result["message"]
    # null keeps the secret too (an editor's untouched field); a new one replaces it.
    status, patched = await core.request(
        "PATCH", f"/api/v1/channels/{ch['id']}", admin, json={"secret": None}
    )
    assert status == 200 and patched["has_secret"] is True
    status, patched = await core.request(
        "PATCH", f"/api/v1/channels/{ch['id']}", admin, json={"secret": SECRET + "-new"}
    )
    assert status == 200 and patched["has_secret"] is True
    stored = await core.core.channels.get(ch["id"])
    assert stored is not None and stored.config.secret == SECRET + "-new"
    status, audit = await core.request("GET", "/api/v1/audit?action=channel.update", admin)
    assert [e["detail"]["changed"] for e in audit["entries"]] == [["secret"], [], ["url"], ["name"]]
    status, audit = await core.request("GET", "/api/v1/audit", admin)
    actions = [e["action"] for e in audit["entries"] if e["action"].startswith("channel.")]
    assert actions == [
        "channel.update",
        "channel.update",
        "channel.test",
        "channel.update",
        "channel.test",
        "channel.update",
        "channel.test",
        "channel.create",
    ]
    no_secret(audit)
    no_secret(caplog.text)
    assert "could not connect" in caplog.text  # the failed test is logged, scrubbed


async def test_viewer_and_operator_may_not_create_or_test(core: RunningCore, receiver: Receiver) -> None:
    status, ch = await create(core, name="hook", kind="webhook", url=receiver.url())
    assert status == 201
    for role in ("viewer", "operator"):
        token = await core.user_token(f"u-{role}", role)
        body = {"name": "mine", "kind": "webhook", "url": receiver.url()}
        for method, path, payload in (
            ("POST", "/api/v1/channels", body),
            ("POST", f"/api/v1/channels/{ch['id']}/test", None),
            ("PATCH", f"/api/v1/channels/{ch['id']}", {"name": "x"}),
            ("DELETE", f"/api/v1/channels/{ch['id']}", None),
        ):
            status, answer = await core.request(method, path, token, json=payload)
            assert status == 403, (role, method, path, answer)
            assert answer["error"]["code"] == "forbidden"
        status, _ = await core.request("GET", "/api/v1/channels", token)
        assert status == 200
    assert receiver.got == []


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (
            {"name": "x", "kind": "pager", "url": "http://h/"},
            "invalid_body",
            "Invalid enum value 'pager' - at `$.kind`",
        ),
        (
            {"name": "x", "kind": "webhook", "url": "ftp://h/x"},
            "invalid_channel",
            "must be http:// or https://",
        ),
        ({"name": "x", "kind": "webhook", "url": "http:///nohost"}, "invalid_channel", "with a host"),
        ({"name": "x", "kind": "webhook", "url": "http://h:99999/"}, "invalid_channel", "bad port"),
        (
            {"name": "x", "kind": "email", "url": "smtp://mx.example.com", "from_addr": "sm@example.com"},
            "invalid_channel",
            "at least one address in `to`",
        ),
        (
            {"name": "x", "kind": "email", "url": "smtp://mx.example.com", "to": ["ops@example.com"]},
            "invalid_channel",
            "needs `from_addr`",
        ),
        (
            {
                "name": "x",
                "kind": "email",
                "url": "https://mx.example.com",
                "to": ["a@b.c"],
                "from_addr": "s@b.c",
            },
            "invalid_channel",
            "smtp://[user:password@]host[:port] or smtps://",
        ),
        (
            {"name": "x", "kind": "email", "url": "smtp://h", "to": ["nobody"], "from_addr": "s@b.c"},
            "invalid_channel",
            "not an email address: 'nobody'",
        ),
        (
            {"name": "x", "kind": "webhook", "url": "http://h/", "quiet_hours": "25:00-07:00"},
            "invalid_body",
            "quiet_hours",
        ),
        (
            {"name": "x", "kind": "webhook", "url": "http://h/", "quiet_hours": "07:00-07:00"},
            "invalid_channel",
            "start and end are the same",
        ),
        ({"name": "x", "kind": "webhook", "url": "http://h/***"}, "invalid_channel", "redaction mark"),
        (
            {"name": "x", "kind": "webhook", "url": "http://h/", "to": ["a@b.c"]},
            "invalid_channel",
            "for email",
        ),
        ({"name": "x", "kind": "apprise", "url": "nosuch://abc"}, "invalid_channel", "'nosuch://'"),
        ({"name": "x", "kind": "webhook"}, "invalid_body", "missing required field `url`"),
    ],
)
async def test_bad_input_gets_a_precise_400(
    core: RunningCore, body: dict[str, Any], code: str, words: str
) -> None:
    status, answer = await create(core, **body)
    assert status == 400, answer
    assert answer["error"]["code"] == code
    assert words in answer["error"]["message"]
    status, listed = await core.request("GET", "/api/v1/channels", await core.admin_token())
    assert listed["channels"] == []


async def test_names_are_unique_and_ids_are_checked(core: RunningCore) -> None:
    status, _ = await create(core, name="a", kind="webhook", url="http://h/")
    assert status == 201
    status, answer = await create(core, name="a", kind="webhook", url="http://h/")
    assert status == 409 and "a channel named 'a' exists" in answer["error"]["message"]
    admin = await core.admin_token()
    status, answer = await core.request("GET", "/api/v1/channels/abc", admin)
    assert status == 400 and answer["error"]["code"] == "invalid_path"
    status, answer = await core.request("PATCH", "/api/v1/channels/999", admin, json={"name": "z"})
    assert status == 404
    status, answer = await core.request("POST", "/api/v1/channels/999/test", admin)
    assert status == 404


async def test_a_channel_rules_use_cannot_be_deleted(core: RunningCore) -> None:
    status, ch = await create(core, name="a", kind="webhook", url="http://h/")
    assert status == 201
    spec = {"metric": "cpu_pct", "channels": [ch["id"]]}
    await core.core.db.insert(
        "INSERT INTO alert_rules (name, spec, enabled, created_at, created_by) VALUES (?, ?, 1, ?, 'admin')",
        ("cpu high", msgspec.json.encode(spec).decode(), time.time()),
    )
    admin = await core.admin_token()
    status, answer = await core.request("DELETE", f"/api/v1/channels/{ch['id']}", admin)
    assert status == 409, answer
    assert answer["error"]["code"] == "channel_in_use"
    assert "cpu high (id 1)" in answer["error"]["message"]
    await core.core.db.execute("UPDATE alert_rules SET spec = ?", ('{"channels": []}',))
    status, _ = await core.request("DELETE", f"/api/v1/channels/{ch['id']}", admin)
    assert status == 204
    status, _ = await core.request("GET", f"/api/v1/channels/{ch['id']}", admin)
    assert status == 404
    status, audit = await core.request("GET", "/api/v1/audit?action=channel.delete", admin)
    assert [e["result"] for e in audit["entries"]] == ["ok", "error"]


async def test_without_apprise_an_apprise_channel_is_refused(
    core: RunningCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # what `import apprise` meets where it is missing
    apprise_sender._load.cache_clear()
    try:
        status, answer = await create(core, name="tg", kind="apprise", url="tgram://123456789:abcdef/4242")
    finally:
        monkeypatch.undo()
        apprise_sender._load.cache_clear()
    assert status == 400
    assert answer["error"] == {
        "code": "apprise_unavailable",
        "message": apprise_sender.NOT_INSTALLED,
    }
    assert "apprise is not installed on this core" in answer["error"]["message"]


async def test_openapi_lists_the_channel_routes(core: RunningCore) -> None:
    status, doc = await core.request("GET", "/api/v1/openapi.json", await core.admin_token())
    assert status == 200
    assert {"get", "post"} <= set(doc["paths"]["/api/v1/channels"])
    assert {"get", "patch", "delete"} <= set(doc["paths"]["/api/v1/channels/{id}"])
    assert "post" in doc["paths"]["/api/v1/channels/{id}/test"]
