"""Failures talking to the core read plainly: wrong passwords, unreachable cores, bad certificates, error replies."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from aiohttp import web

from devkit.cores import RunningCore
from devkit.ports import free_port
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.errors import CoreError, explain_error, host_of, http_error
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import (
    MemoryKeyring,
    Run,
    until,
)


def test_wrong_password_and_unreachable_core_read_plainly(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, keyring_backend: MemoryKeyring
) -> None:
    dialog = window.open_connection()
    dialog.url_edit.setText(core.url)
    dialog.user_edit.setText("admin")
    dialog.password_edit.setText("not the password")
    dialog.connect_button.click()
    run(until(lambda: not dialog.error.isHidden(), "an error"))
    assert dialog.error.text() == "Wrong user name or password."
    assert dialog.connect_button.isEnabled()
    assert ctx.rest.session is None and keyring_backend.items == {}

    port = free_port()
    dialog.url_edit.setText(f"127.0.0.1:{port}")  # no scheme: http is assumed
    dialog.password_edit.setText("whatever")
    dialog.connect_button.click()
    run(until(lambda: "reach" in dialog.error.text(), "an unreachable error"))
    assert dialog.error.text() == (
        f"Cannot reach the core at 127.0.0.1:{port}. Check the address and that the core is running."
    )
    assert "Traceback" not in dialog.error.text()


def _self_signed(tmp: Path) -> ssl.SSLContext:
    """A certificate for 'other.example' only: connecting to 127.0.0.1 must fail verification."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("other.example")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return context


def test_certificate_mismatch_reads_plainly(ctx: AppContext, run: Run, tmp_path: Path) -> None:
    server_ssl = _self_signed(tmp_path)
    app = web.Application()
    runner = web.AppRunner(app)
    port = free_port()

    async def serve() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ssl).start()

    run(serve())
    try:
        with pytest.raises(CoreError) as err:
            run(ctx.rest.login(f"https://127.0.0.1:{port}", "admin", "pw"))
        assert err.value.kind == "certificate"
        assert err.value.message.startswith(f"The certificate of 127.0.0.1:{port} does not match")
    finally:
        run(runner.cleanup())


@pytest.mark.parametrize(
    ("status", "body", "login", "kind", "message"),
    [
        (
            502,
            b"<html>bad gateway</html>",
            False,
            "not_core",
            "core:1 answered HTTP 502, but does not look like",
        ),
        (
            401,
            b'{"error":{"code":"bad_credentials","message":"wrong user name or password"}}',
            True,
            "bad_credentials",
            "Wrong user name or password.",
        ),
        # The core says which credential was wrong: a two-factor code, the current password.
        (
            401,
            b'{"error":{"code":"bad_credentials","message":"wrong or already used two-factor code"}}',
            True,
            "bad_credentials",
            "Wrong or already used two-factor code.",
        ),
        (
            403,
            b'{"error":{"code":"bad_credentials","message":"the current password is wrong"}}',
            False,
            "bad_credentials",
            "The current password is wrong.",
        ),
        (
            401,
            b'{"error":{"code":"otp_required","message":"add the code as \'otp\'"}}',
            True,
            "otp_required",
            "Enter the 6-digit code from your authenticator app",
        ),
        (
            403,
            b'{"error":{"code":"step_up_required","message":"POST /api/v1/auth/step-up"}}',
            False,
            "step_up_required",
            "Confirm it is you first",
        ),
        (
            403,
            b'{"error":{"code":"totp_setup_required","message":"operators must"}}',
            False,
            "totp_setup_required",
            "Your role must sign in with two factors",
        ),
        (
            409,
            b'{"error":{"code":"last_admin","message":"this is the last enabled admin"}}',
            False,
            "last_admin",
            "This is the last enabled admin.",
        ),
        (
            404,
            b'{"error":{"code":"not_found","message":"no such user"}}',
            False,
            "not_found",
            "No such user.",
        ),
        (
            401,
            b'{"error":{"code":"unauthorized","message":"x"}}',
            True,
            "bad_token",
            "The core did not accept",
        ),
        (
            401,
            b'{"error":{"code":"unauthorized","message":"x"}}',
            False,
            "session_expired",
            "Your session has",
        ),
        (
            403,
            b'{"error":{"code":"forbidden","message":"needs admin"}}',
            False,
            "forbidden",
            "Not allowed: needs admin.",
        ),
        (
            404,
            b'{"error":{"code":"not_found","message":"no such node"}}',
            False,
            "not_found",
            "That node no longer",
        ),
        (409, b'{"error":{"code":"conflict","message":"name taken"}}', False, "conflict", "Name taken."),
    ],
)
def test_error_replies_read_as_sentences(
    status: int, body: bytes, login: bool, kind: str, message: str
) -> None:
    err = http_error(status, body, "http://core:1/api/v1/x", login=login)
    assert (err.kind, err.status) == (kind, status)
    assert err.message.startswith(message)


def test_transport_failures_read_as_sentences() -> None:
    assert (
        explain_error(TimeoutError(), "http://core:1").message == "The core at core:1 did not answer in time."
    )
    assert explain_error(ValueError("x"), "nonsense").kind == "bad_url"
    assert explain_error(RuntimeError("boom"), "http://core:1").kind == "internal"
    same = CoreError("unreachable", "as it was")
    assert explain_error(same, "http://core:1") is same
    assert host_of("http://core.example:8760/api") == "core.example:8760" and host_of("plain") == "plain"
