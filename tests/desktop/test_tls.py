"""The desktop against a real TLS core: the fingerprint shown on first connection (trust on first use),
pinned in the profile, and a changed certificate blocked with a warning until the user trusts it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QLabel

from servermanager.core.datadir import TLS_CERT_FILE, TLS_KEY_FILE
from servermanager.desktop.context import AppContext
from servermanager.desktop.dialogs import CertificateDialog
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.secrets import SERVICE
from servermanager.desktop.settings import Profile
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import (
    Cores,
    MemoryKeyring,
    Run,
    admin_password,
    close_agents,
    make_ctx,
    until,
)

LOGIN = "/api/v1/auth/login"


@pytest.fixture
def cores(run: Run, tmp_path: Path) -> Iterator[Cores]:
    """The conftest's core, served over HTTPS/WSS with the certificate it made for itself."""
    box = Cores(tmp_path / "core", tls="on")
    run(box.start())
    try:
        yield box
    finally:
        run(close_agents())
        run(box.stop())


def fingerprint_text(dialog: CertificateDialog, name: str) -> str:
    label = dialog.findChild(QLabel, name)
    assert label is not None, name
    return label.text()


def connect_with_password(window: MainWindow, cores: Cores, name: str = "Hub") -> None:
    dialog = window.open_connection()
    dialog.profile_box.setCurrentText("New profile…")
    dialog.name_edit.setText(name)
    dialog.url_edit.setText(cores.c.url)
    dialog.user_edit.setText("admin")
    dialog.password_edit.setText(admin_password(cores.c))
    dialog.connect_button.click()


async def rekey(cores: Cores) -> str:
    """The same core (database, port) restarted with a new certificate; its fingerprint."""
    old = cores.c.fingerprint
    port = cores.c.port
    await cores.stop()
    (cores.data_dir / TLS_CERT_FILE).unlink()
    (cores.data_dir / TLS_KEY_FILE).unlink()
    cores.requests.clear()
    new = (await cores.start(port)).fingerprint
    assert new != old
    return new


def test_first_connection_shows_the_fingerprint_and_trusting_it_signs_in(
    window: MainWindow,
    ctx: AppContext,
    cores: Cores,
    run: Run,
    keyring_backend: MemoryKeyring,
    qapp: object,
    settings_file: Path,
) -> None:
    connect_with_password(window, cores)
    run(until(lambda: window.certificate_dialog is not None, "the certificate dialog"))
    dialog = window.certificate_dialog
    assert dialog is not None and dialog.isVisible() and not dialog.changed
    assert fingerprint_text(dialog, "presented") == cores.c.fingerprint
    assert "servermanager admin fingerprint" in dialog.message.text()
    # Before the user decides, not a request reached the core, so no password either.
    assert cores.requests == [] and ctx.rest.session is None
    assert (
        window.connection_dialog is not None
        and cores.c.url.split("//")[1] in window.connection_dialog.error.text()
    )

    dialog.trust_button.click()
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "the live link over wss"))
    assert window.connection_dialog is None and window.certificate_dialog is None
    assert ctx.rest.session is not None and ctx.rest.session.pin == cores.c.fingerprint
    saved = ctx.profiles.get("Hub")
    assert saved is not None and saved.fingerprint == cores.c.fingerprint
    assert LOGIN in cores.requests

    # The next run of the app resumes against the pinned certificate without asking.
    run(ctx.close())
    again = make_ctx(qapp, settings_file)  # type: ignore[arg-type]
    win = MainWindow(again)
    try:
        win.start()
        run(until(lambda: again.live.state == LinkState.CONNECTED, "resumed live link"))
        assert win.certificate_dialog is None and win.connection_dialog is None
    finally:
        win._quitting = True
        win.close()
        run(again.close())


def test_a_changed_certificate_blocks_sign_in_until_deliberately_trusted(
    cores: Cores, run: Run, keyring_backend: MemoryKeyring, qapp: object, settings_file: Path
) -> None:
    old = cores.c.fingerprint
    profile = Profile("Hub", cores.c.url, "password", "admin", fingerprint=old)
    first = make_ctx(qapp, settings_file)  # type: ignore[arg-type]
    try:
        run(first.signin.sign_in(profile, admin_password(cores.c)))
    finally:
        run(first.close())
    refresh = keyring_backend.items[(SERVICE, profile.secret_key)]
    new = run(rekey(cores))

    # The next run of the app: it resumes the last profile with its kept refresh token.
    ctx = make_ctx(qapp, settings_file)  # type: ignore[arg-type]
    window = MainWindow(ctx)
    try:
        window.start()
        run(until(lambda: window.certificate_dialog is not None, "the changed-certificate warning"))
        dialog = window.certificate_dialog
        assert dialog is not None and dialog.changed and dialog.isVisible()
        assert fingerprint_text(dialog, "expected") == old and fingerprint_text(dialog, "presented") == new
        text = dialog.message.text()
        assert "intercepting" in text and "replaced" in text and "servermanager admin fingerprint" in text
        assert "Nothing was sent" in text
        # Blocked: no request reached the core (the kept refresh token did not travel), no session.
        assert cores.requests == [] and ctx.rest.session is None
        assert keyring_backend.items[(SERVICE, profile.secret_key)] == refresh
        # Trusting takes a deliberate tick first.
        assert not dialog.trust_button.isEnabled()
        assert dialog.confirm_box is not None
        dialog.confirm_box.setChecked(True)
        assert dialog.trust_button.isEnabled()
        dialog.trust_button.click()
        run(until(lambda: ctx.live.state == LinkState.CONNECTED, "signed in with the new pin"))
        assert ctx.rest.session is not None and ctx.rest.session.pin == new
        saved = ctx.profiles.get("Hub")
        assert saved is not None and saved.fingerprint == new
        assert window.connection_dialog is None
    finally:
        window._quitting = True
        window.close()
        run(ctx.close())


def test_declining_a_changed_certificate_sends_nothing(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run, keyring_backend: MemoryKeyring
) -> None:
    old = cores.c.fingerprint
    ctx.profiles.upsert(Profile("Hub", cores.c.url, "password", "admin", fingerprint=old))
    run(rekey(cores))
    dialog = window.open_connection(selected="Hub")
    dialog.password_edit.setText(admin_password(cores.c))
    dialog.connect_button.click()
    run(until(lambda: window.certificate_dialog is not None, "the changed-certificate warning"))
    warning = window.certificate_dialog
    assert warning is not None and warning.changed
    warning.reject()  # "Don't connect"
    run(until(lambda: window.certificate_dialog is None, "the warning closed"))
    assert "has changed since it was pinned" in dialog.error.text()
    assert cores.requests == [] and ctx.rest.session is None  # the password never left
    saved = ctx.profiles.get("Hub")
    assert saved is not None and saved.fingerprint == old


def test_a_certificate_that_changes_while_signed_in_stops_the_link_and_asks(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run, keyring_backend: MemoryKeyring
) -> None:
    connect_with_password(window, cores)
    run(until(lambda: window.certificate_dialog is not None, "the certificate dialog"))
    assert window.certificate_dialog is not None
    window.certificate_dialog.trust_button.click()
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "the live link"))

    new = run(rekey(cores))
    run(until(lambda: window.certificate_dialog is not None, "the warning about the running session"))
    dialog = window.certificate_dialog
    assert dialog is not None and dialog.changed and fingerprint_text(dialog, "presented") == new
    assert ctx.live.state != LinkState.CONNECTED
    # Neither the live socket's token nor a poll reached the re-keyed core.
    assert cores.requests == []
    assert dialog.confirm_box is not None
    dialog.confirm_box.setChecked(True)
    dialog.trust_button.click()
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "the live link with the new pin"))
    saved = ctx.profiles.get("Hub")
    assert saved is not None and saved.fingerprint == new
