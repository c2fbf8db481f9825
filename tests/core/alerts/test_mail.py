"""Email channels against a real SMTP server (aiosmtpd): plain with auth, STARTTLS and smtps with a
self-signed certificate the test trusts through SSL_CERT_FILE, quiet hours holding a mail until they
end, and the failures in plain words."""

from __future__ import annotations

import datetime
import email
import ipaddress
import ssl
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devkit.cores import RunningCore
from devkit.ports import free_port
from tests.core.alerts.helpers import Rig
from tests.helpers.alerts import Spec, delivery, queue
from tests.helpers.wait import wait_for, wait_until

USER, PASSWORD = "alerts", "smtp-Pa55word-xyz"
# The plain server takes AUTH without TLS on purpose (aiosmtpd warns about that).
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append(
            (envelope.mail_from, list(envelope.rcpt_tos), email.message_from_bytes(envelope.content))
        )
        return "250 OK"


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    crt = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _server_context(cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    return ctx


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest, cert: tuple[Path, Path]) -> Iterator[tuple[Inbox, int]]:
    """mode: "plain" (auth without TLS), "starttls" (TLS required before auth) or "smtps"."""
    mode = getattr(request, "param", "plain")
    inbox = Inbox()
    port = free_port()
    kw: dict[str, Any] = {"authenticator": _auth, "auth_required": True}
    if mode == "plain":
        kw["auth_require_tls"] = False
    elif mode == "starttls":
        kw.update(tls_context=_server_context(cert), require_starttls=True)
    else:
        # aiosmtpd does not see implicit TLS as TLS, so it would not offer AUTH on it otherwise.
        kw.update(ssl_context=_server_context(cert), auth_require_tls=False)
    controller = Controller(
        inbox, hostname="127.0.0.1", port=port, server_hostname="localhost", ready_timeout=30.0, **kw
    )
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def mail_channel(core: RunningCore, url: str, starttls: bool, **extra: Any) -> int:
    status, ch = await core.request(
        "POST",
        "/api/v1/channels",
        await core.admin_token(),
        json={
            "name": "mail",
            "kind": "email",
            "url": url,
            "to": ["ops@example.com", "oncall@example.com"],
            "from_addr": "servermanager@example.com",
            "starttls": starttls,
            **extra,
        },
    )
    assert status == 201, ch
    assert ch["url"] == url.replace(PASSWORD, "***").replace("wrong-password", "***")
    return int(ch["id"])


async def test_an_alert_arrives_by_mail_with_its_summary(
    core: RunningCore, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    cid = await mail_channel(core, f"smtp://{USER}:{PASSWORD}@127.0.0.1:{port}", starttls=False)
    [q] = await queue(core.core.db, Spec(cid, node="web-1", metric="cpu_pct", value=97, threshold=90))
    core.core.outbox.notify()
    await wait_for(lambda: inbox.mails, what="the mail")
    [(sender, rcpts, msg)] = inbox.mails
    assert sender == "servermanager@example.com"
    assert rcpts == ["ops@example.com", "oncall@example.com"]
    assert msg["Subject"] == "[FIRING] cpu_pct 97 > 90 on web-1 (rule cpu high, critical)"
    assert msg["To"] == "ops@example.com, oncall@example.com"
    text = msg.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "[FIRING] cpu_pct 97 > 90 on web-1 (rule cpu high, critical)" in text
    assert f"alert id {q.alert_id}, node id 1" in text
    row = await wait_until(lambda: delivery(core.core.db, q.delivery_id), lambda d: d["state"] == "sent")
    assert row["attempts"] == 1


class Clock:
    """The outbox's wall clock, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_quiet_hours_hold_a_mail_until_they_end_then_it_goes_once(
    core: RunningCore, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    # The outbox's "now" is 03:00 tomorrow, inside quiet hours 02:30-04:00 of the core's local time.
    three = (datetime.datetime.now() + datetime.timedelta(days=1)).replace(
        hour=3, minute=0, second=0, microsecond=0
    )
    end = three.replace(hour=4).timestamp()
    clock = Clock(three.timestamp())
    core.core.outbox.clock = clock
    cid = await mail_channel(
        core, f"smtp://{USER}:{PASSWORD}@127.0.0.1:{port}", starttls=False, quiet_hours="02:30-04:00"
    )

    # A real alert: an agent's sample over a rule that notifies the mail channel.
    rig = await Rig(core).start()
    try:
        await rig.rule(channels=[cid])
        await rig.sample(97.0)
        [(alert_id, channel, status, _, state, *_)] = await rig.deliveries()
        assert (channel, status, state) == (cid, "firing", "pending")
        did = await core.core.db.fetchone("SELECT id FROM alert_deliveries WHERE alert_id = ?", (alert_id,))
        assert did is not None
        core.core.outbox.notify()
        held = await wait_until(
            lambda: delivery(core.core.db, did[0]),
            lambda d: d["next_attempt_at"] == end,
            what="the mail held until the quiet hours end",
        )
        assert held == {
            "state": "pending", "attempts": 0, "sent_at": None, "next_attempt_at": end, "last_error": None
        }  # fmt: skip
        # More passes inside the window (one a minute before its end) send nothing and keep it pending.
        clock.now = end - 60
        await core.core.outbox.dispatch()
        await core.core.outbox.idle()
        assert inbox.mails == [] and await delivery(core.core.db, did[0]) == held

        # The end minute is not quiet: the mail goes, once.
        clock.now = end
        core.core.outbox.notify()
        await wait_for(lambda: inbox.mails, what="the mail after the quiet hours")
        sent = await wait_until(
            lambda: delivery(core.core.db, did[0]), lambda d: d["state"] == "sent", what="the row marked sent"
        )
        assert sent["attempts"] == 1 and sent["sent_at"] == end
        clock.now = end + 3600
        await core.core.outbox.dispatch()
        await core.core.outbox.idle()
        [(_, rcpts, msg)] = inbox.mails
        assert rcpts == ["ops@example.com", "oncall@example.com"]
        assert msg["Subject"] == "[FIRING] cpu_pct 97 > 90 on web-1 (rule cpu high, warning)"
    finally:
        await rig.agent.close()


async def test_several_alerts_make_one_mail(core: RunningCore, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    cid = await mail_channel(core, f"smtp://{USER}:{PASSWORD}@127.0.0.1:{port}", starttls=False)
    await queue(
        core.core.db,
        Spec(cid, node="web-1", node_id=1, due_in=0.1),
        Spec(cid, node="web-2", node_id=2, metric="mem_pct", value=95.5, threshold=90, due_in=0.1),
    )
    core.core.outbox.notify()
    await wait_for(lambda: inbox.mails, what="the mail")
    [(_, _, msg)] = inbox.mails
    assert msg["Subject"] == "[FIRING] 2 alerts on web-1, web-2"
    text = msg.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "cpu_pct 97 > 90 on web-1" in text and "mem_pct 95.5 > 90 on web-2" in text


@pytest.mark.parametrize("smtp_server", ["starttls"], indirect=True)
async def test_starttls_with_a_trusted_certificate(
    core: RunningCore,
    smtp_server: tuple[Inbox, int],
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbox, port = smtp_server
    cid = await mail_channel(core, f"smtp://{USER}:{PASSWORD}@localhost:{port}", starttls=True)
    admin = await core.admin_token()
    # Not trusted yet: the test says why, in plain words.
    status, result = await core.request("POST", f"/api/v1/channels/{cid}/test", admin)
    assert status == 200 and result["ok"] is False
    assert "the TLS certificate of localhost is not trusted" in result["message"]
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    status, result = await core.request("POST", f"/api/v1/channels/{cid}/test", admin)
    assert result == {"ok": True, "message": "sent a test notification on mail"}, result
    [(_, _, msg)] = inbox.mails
    assert msg["Subject"].startswith("[TEST]")


@pytest.mark.parametrize("smtp_server", ["smtps"], indirect=True)
async def test_smtps_implicit_tls(
    core: RunningCore,
    smtp_server: tuple[Inbox, int],
    cert: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inbox, port = smtp_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))
    cid = await mail_channel(core, f"smtps://{USER}:{PASSWORD}@localhost:{port}", starttls=False)
    [q] = await queue(core.core.db, Spec(cid, status="resolved"))
    core.core.outbox.notify()
    await wait_for(lambda: inbox.mails, what="the mail over TLS")
    assert inbox.mails[0][2]["Subject"] == "[RESOLVED] cpu_pct 97 > 90 on web-1 (rule cpu high, critical)"
    await wait_until(lambda: delivery(core.core.db, q.delivery_id), lambda d: d["state"] == "sent")


async def test_failures_in_plain_words(core: RunningCore, smtp_server: tuple[Inbox, int]) -> None:
    inbox, port = smtp_server
    admin = await core.admin_token()
    cid = await mail_channel(core, f"smtp://{USER}:wrong-password@127.0.0.1:{port}", starttls=False)
    status, result = await core.request("POST", f"/api/v1/channels/{cid}/test", admin)
    assert result["ok"] is False
    assert result["message"].startswith("the SMTP server refused the login: 535")
    assert "wrong-password" not in result["message"]
    # The plain server offers no STARTTLS: refused rather than sent in the clear.
    status, _ = await core.request(
        "PATCH",
        f"/api/v1/channels/{cid}",
        admin,
        json={"url": f"smtp://{USER}:{PASSWORD}@127.0.0.1:{port}", "starttls": True},
    )
    assert status == 200
    status, result = await core.request("POST", f"/api/v1/channels/{cid}/test", admin)
    assert result["ok"] is False
    assert f"the SMTP server 127.0.0.1:{port} does not offer STARTTLS" in result["message"]
    down = free_port()
    status, _ = await core.request(
        "PATCH",
        f"/api/v1/channels/{cid}",
        admin,
        json={"url": f"smtp://127.0.0.1:{down}", "starttls": False},
    )
    status, result = await core.request("POST", f"/api/v1/channels/{cid}/test", admin)
    assert result == {
        "ok": False,
        "message": "could not connect to the SMTP server 127.0.0.1: connection refused",
    }
    assert inbox.mails == []
