"""Sign-in against a real core: tokens in the keyring only, session-only without one, profiles, switching cores."""

from __future__ import annotations

from pathlib import Path

import keyring.backends.fail
import pytest
from pytestqt.qtbot import QtBot

from devkit.cores import RunningCore
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.secrets import SERVICE, Kept, SecretsError
from servermanager.desktop.settings import Profile
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import (
    CORE_SETTINGS,
    MemoryKeyring,
    Run,
    admin_password,
    close_agents,
    enrolled,
    make_ctx,
    profile_for,
    sign_in,
    until,
)


def test_login_keeps_token_in_keyring_and_logout_deletes_it(
    ctx: AppContext, core: RunningCore, run: Run, keyring_backend: MemoryKeyring, settings_file: Path
) -> None:
    session = run(sign_in(ctx, core))
    key = profile_for(core).secret_key
    kept = keyring_backend.items[(SERVICE, key)]
    assert kept == session.refresh_token and kept.startswith("smr_")
    assert ctx.signin.kept == Kept.KEYRING
    ctx.settings.store.sync()
    stored = settings_file.read_text()
    assert core.url in stored  # the profile is there...
    assert session.access_token not in stored and kept not in stored  # ...its secrets are not

    run(ctx.signin.sign_out())
    assert (SERVICE, key) not in keyring_backend.items
    assert ctx.live.state == LinkState.IDLE
    # Signing out also revoked the refresh token on the core.
    status, body = run(core.request("POST", "/api/v1/auth/refresh", json={"refresh_token": kept}))
    assert status == 401, body


def test_restart_resumes_with_the_kept_token(
    qapp: object, core: RunningCore, run: Run, keyring_backend: MemoryKeyring, settings_file: Path
) -> None:
    first = make_ctx(qapp, settings_file)  # type: ignore[arg-type]
    run(sign_in(first, core))
    old = keyring_backend.items[(SERVICE, profile_for(core).secret_key)]
    run(first.close())

    # A new run of the app: same settings file, same keyring, no password typed.
    ctx = make_ctx(qapp, settings_file)  # type: ignore[arg-type]
    win = MainWindow(ctx)
    try:
        win.start()
        run(until(lambda: ctx.live.state == LinkState.CONNECTED, "resumed live link"))
        assert win.connection_dialog is None
        assert ctx.rest.session is not None and ctx.rest.session.role == "admin"
        # Refresh tokens work once; the keyring holds the rotated one.
        new = keyring_backend.items[(SERVICE, profile_for(core).secret_key)]
        assert new != old and new == ctx.rest.session.refresh_token
    finally:
        win._quitting = True
        win.close()
        run(ctx.close())


def test_api_token_through_the_connection_dialog(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, keyring_backend: MemoryKeyring
) -> None:
    viewer = run(core.user_token("watcher", "viewer"))
    status, body = run(core.request("POST", "/api/v1/tokens", viewer, json={"name": "desk"}))
    assert status == 201, body
    token = body["token"]

    dialog = window.open_connection()
    assert dialog.notice.isHidden() and not dialog.remember_box.isHidden()
    dialog.profile_box.setCurrentText("New profile…")
    dialog.name_edit.setText("Staging")
    dialog.url_edit.setText(core.url)
    dialog.token_radio.setChecked(True)
    assert dialog.user_edit.isHidden() and not dialog.token_edit.isHidden()
    dialog.token_edit.setText(token)
    dialog.connect_button.click()
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "live link"))
    assert window.connection_dialog is None  # accepted and gone
    assert ctx.rest.session is not None and ctx.rest.session.role == "viewer"
    assert keyring_backend.items[(SERVICE, "api-token@" + core.url)] == token
    assert window.user_label.text() == "watcher (viewer)"

    run(ctx.signin.sign_out())
    assert keyring_backend.items == {}
    # An API token is shared with scripts: signing out of the app forgets it but does not revoke it.
    status, _ = run(core.request("GET", "/api/v1/nodes", token))
    assert status == 200


def test_no_keyring_offers_session_only(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        assert not ctx.secrets.persistent
        with pytest.raises(SecretsError, match="no keyring"):
            run(ctx.secrets.save("x", "y"))
        dialog = window.open_connection()
        assert "no keyring" in dialog.notice.text()
        assert not dialog.notice.isHidden() and not dialog.session_box.isHidden()
        assert dialog.remember_box.isHidden() and dialog.session_box.isChecked()
        dialog.url_edit.setText(core.url)
        dialog.user_edit.setText("admin")
        dialog.password_edit.setText(admin_password(core))
        dialog.connect_button.click()
        run(until(lambda: ctx.live.state == LinkState.CONNECTED, "live link"))
        profile = ctx.signin.profile
        assert profile is not None
        assert ctx.signin.kept == Kept.SESSION and ctx.secrets.where(profile.secret_key) == Kept.SESSION
        assert run(ctx.secrets.load(profile.secret_key)) == ctx.rest.session.refresh_token  # type: ignore[union-attr]

        run(ctx.signin.sign_out())
        assert ctx.secrets.where(profile.secret_key) == Kept.NOWHERE
    finally:
        keyring.set_keyring(previous)


def test_profiles_are_kept_and_deletable(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, keyring_backend: MemoryKeyring
) -> None:
    ctx.profiles.upsert(Profile("Alpha", "http://alpha:8760"))
    run(sign_in(ctx, core))
    assert [p.name for p in ctx.profiles.all()] == ["Alpha", "Test core"]
    assert ctx.profiles.last == "Test core"
    dialog = window.open_connection()
    assert dialog.profile_box.currentText() == "Test core"
    assert dialog.url_edit.text() == core.url
    dialog.delete_button.click()
    assert [p.name for p in ctx.profiles.all()] == ["Alpha"]
    run(until(lambda: keyring_backend.items == {}, "the deleted profile's token forgotten"))


def test_switching_profiles_shows_only_the_other_cores_fleet(
    window: MainWindow,
    ctx: AppContext,
    core: RunningCore,
    run: Run,
    keyring_backend: MemoryKeyring,
    tmp_path: Path,
    qtbot: QtBot,
) -> None:
    here = run(enrolled(core, "here-1"))
    other = run(RunningCore(tmp_path / "other", **CORE_SETTINGS).start())
    try:
        run(enrolled(other, "there-1"))
        run(enrolled(other, "there-2"))
        run(sign_in(ctx, core))
        assert [n.name for n in ctx.model.nodes()] == ["here-1"]
        window.open_node(here.node_id or 0)
        with qtbot.waitSignal(window.tray_state.notify, timeout=5000):
            run(here.close())
        assert ctx.model.counts() == (0, 1)

        prof = Profile("Other", other.url, "password", "admin")
        run(ctx.signin.sign_in(prof, admin_password(other)))
        run(until(lambda: ctx.live.state == LinkState.CONNECTED, "the other core's live link"))
        assert sorted(n.name for n in ctx.model.nodes()) == ["there-1", "there-2"]
        # Both cores number their nodes from 1. Diffing one fleet into the other would report the
        # offline here-1 "back online" as there-1, and leave here-1's view showing there-1.
        with qtbot.assertNotEmitted(window.tray_state.notify, wait=600):
            pass
        assert window.node_views == {}
        assert {p.name for p in ctx.profiles.all()} == {"Test core", "Other"}
        assert (SERVICE, prof.secret_key) in keyring_backend.items
        assert (SERVICE, profile_for(core).secret_key) in keyring_backend.items  # both stay signed in
    finally:
        run(close_agents())
        run(ctx.live.stop())
        run(other.stop())


def test_a_failed_sign_in_leaves_the_current_session_running(
    ctx: AppContext, core: RunningCore, run: Run, keyring_backend: MemoryKeyring
) -> None:
    agent = run(enrolled(core, "web-1", cpu=10.0))
    session = run(sign_in(ctx, core))
    with pytest.raises(CoreError, match="Wrong user name or password"):
        run(ctx.signin.sign_in(Profile("Other", core.url, "password", "admin"), "nope"))
    assert ctx.rest.session == session
    assert ctx.signin.profile is not None and ctx.signin.profile.name == "Test core"
    # Live updates still flow.
    run(agent.send_samples(agent.make(1, cpu=66.0)))
    node = agent.node_id or 0
    run(
        until(
            lambda: (
                (n := ctx.model.node(node)) is not None
                and n.latest is not None
                and n.latest.metrics.cpu_pct == 66.0
            ),
            "a live sample after the failed attempt",
            timeout=3.0,
        )
    )


def test_a_known_device_signs_in_while_its_address_is_locked_out(
    ctx: AppContext, core: RunningCore, run: Run, keyring_backend: MemoryKeyring
) -> None:
    session = run(sign_in(ctx, core))
    device = keyring_backend.items[(SERVICE, profile_for(core).device_key)]
    assert device == session.device_token and device.startswith("smd_")
    run(ctx.signin.sign_out())
    assert keyring_backend.items[(SERVICE, profile_for(core).device_key)] == device  # kept past sign-out
    # Someone on the same address guesses the admin password until the address is locked out.
    for _ in range(core.settings.login_max_failures):
        status, _ = run(
            core.request("POST", "/api/v1/auth/login", json={"username": "admin", "password": "x"})
        )
        assert status == 401
    status, _ = run(
        core.request(
            "POST", "/api/v1/auth/login", json={"username": "admin", "password": admin_password(core)}
        )
    )
    assert status == 429
    # The app on this device still gets in: it sends its device token.
    again = run(sign_in(ctx, core))
    assert again.user == "admin" and again.device_token == device
