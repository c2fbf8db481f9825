"""Your account from the desktop against a real core: two-factor set-up, recovery codes and sign-in with
a code through the connection dialog; changing the password (asked right after sign-in when the core
says so); a role that must set up two-factor; "Confirm it's you" before commands and service actions."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

import pyotp
import pytest
from PySide6.QtGui import QGuiApplication

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from servermanager.core.auth import Role
from servermanager.desktop.account import StepUpDialog, TwoFactorDialog, grouped
from servermanager.desktop.context import AppContext
from servermanager.desktop.dialogs import ConnectionDialog
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import (
    Cores,
    MemoryKeyring,
    Run,
    admin_password,
    enrolled,
    sign_in,
    until,
)
from tests.desktop.test_console import answer


def connect(window: MainWindow, core: RunningCore, user: str, password: str) -> ConnectionDialog:
    """Fill in the connection dialog and press Connect, as a person would."""
    dialog = window.open_connection()
    dialog.url_edit.setText(core.url)
    dialog.password_radio.setChecked(True)
    dialog.user_edit.setText(user)
    dialog.password_edit.setText(password)
    dialog.connect_button.click()
    return dialog


def wrong_code(totp: pyotp.TOTP) -> str:
    """Six digits that are none of the codes the core accepts right now (this step and its neighbours)."""
    near = {totp.at(time.time() + k * 30) for k in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in near)


def test_two_factor_from_setup_to_signing_in_with_a_code(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, tmp_path: Path
) -> None:
    run(core.user_token("olga", "operator", password="olga-pass-1"))
    window.show()
    dialog = connect(window, core, "olga", "olga-pass-1")
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "signed in"))
    assert window.connection_dialog is None
    # Nothing asked of her at sign-in: her password is her own and two-factor is optional here.
    assert window.account.password_dialog is None and window.account.two_factor_dialog is None

    window.two_factor_action.trigger()
    tf = window.account.two_factor_dialog
    assert isinstance(tf, TwoFactorDialog) and tf.isVisible()
    run(until(lambda: tf.page == "off", "the current state"))
    tf.setup_button.click()
    run(until(lambda: tf.page == "setup", "the secret"))
    totp = pyotp.TOTP(tf.secret)
    assert tf.secret_edit.text() == grouped(tf.secret) and " " in tf.secret_edit.text()
    assert tf.secret_edit.font().styleHint() == tf.secret_edit.font().StyleHint.Monospace
    assert tf.uri_edit.text().startswith("otpauth://totp/") and "olga" in tf.uri_edit.text()
    tf.copy_secret.click()
    assert QGuiApplication.clipboard().text() == tf.secret
    tf.copy_uri.click()
    assert QGuiApplication.clipboard().text() == tf.uri

    tf.enable_code.setText("12345")  # not six digits: said here, nothing sent
    tf.enable_button.click()
    assert tf.error.text() == "Enter the 6 digits the app shows." and tf.page == "setup"
    tf.enable_code.setText(wrong_code(totp))
    tf.enable_button.click()
    run(until(lambda: tf.error.isVisibleTo(tf), "the core's refusal"))
    assert tf.error.text() == "That code is wrong or expired; check the app's clock."
    assert tf.page == "setup"
    tf.enable_code.setText(totp.now())
    tf.enable_button.click()
    run(until(lambda: tf.page == "codes", "the recovery codes"))
    codes = tf.codes
    assert len(codes) == 10 and tf.codes_text.toPlainText().split("\n") == codes
    assert "shown only this once" in tf.codes_notice.text() and tf.codes_notice.isVisibleTo(tf)
    assert not tf.close_button.isEnabled() and tf.close_button.text() == "Done"
    saved = tmp_path / "codes.txt"
    assert tf.save_codes(saved)
    assert all(code in saved.read_text() for code in codes)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert tf.stored_box.isChecked() and tf.close_button.isEnabled()
    tf.close_button.click()
    assert window.account.two_factor_dialog is None
    assert run(ctx.rest.me()).totp is True

    # Signing in again now needs the code: the dialog asks for it once the password was right.
    run(ctx.signin.sign_out())
    dialog = window.connection_dialog or window.open_connection()
    dialog.url_edit.setText(core.url)
    dialog.user_edit.setText("olga")
    dialog.password_edit.setText("olga-pass-1")
    assert not dialog.asks_code
    dialog.connect_button.click()
    run(until(lambda: dialog.asks_code, "the code field"))
    assert "6-digit code" in dialog.error.text() and ctx.rest.session is None
    dialog.connect_button.click()  # no code typed: said here
    assert "Enter the code" in dialog.error.text()
    dialog.code_edit.setText("12345")  # too short for the core: said here too
    dialog.connect_button.click()
    assert "6 digits" in dialog.error.text() and dialog.connect_button.isEnabled()
    dialog.code_edit.setText(wrong_code(totp))
    dialog.connect_button.click()
    run(until(lambda: dialog.connect_button.isEnabled() and dialog.error.isVisibleTo(dialog), "refusal"))
    assert dialog.error.text() == "Wrong or already used two-factor code."
    assert ctx.rest.session is None and dialog.asks_code
    dialog.code_edit.setText(totp.at(time.time() + 30))  # the next step's code: the last one is spent
    dialog.connect_button.click()
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "signed in with the code"))
    assert window.connection_dialog is None and ctx.rest.session is not None

    # Turning it off needs a code too; a recovery code does.
    tf = window.account.two_factor()
    assert tf is not None
    run(until(lambda: tf.page == "on", "the current state"))
    tf.disable_code.setText(wrong_code(totp))
    tf.disable_button.click()
    run(until(lambda: tf.error.isVisibleTo(tf), "the refusal"))
    assert tf.error.text() == "That code is wrong or expired." and tf.page == "on"
    tf.disable_code.setText(codes[3])
    tf.disable_button.click()
    run(until(lambda: tf.page == "off", "two-factor off"))
    assert run(ctx.rest.me()).totp is False
    tf.close_button.click()


def test_the_generated_password_is_changed_right_after_sign_in(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    generated = admin_password(core)
    other = run(core.admin_token())  # another sign-in of the same user
    window.show()
    connect(window, core, "admin", generated)
    run(until(lambda: window.account.password_dialog is not None, "the change-password dialog"))
    dialog = window.account.password_dialog
    assert dialog is not None and dialog.isVisible()
    assert not dialog.reason.isHidden() and "generated" in dialog.reason.text()
    assert dialog.cancel_button.text() == "Later"

    dialog.current.setText(generated)
    dialog.new.setText("a-better-one-1")
    dialog.repeat.setText("a-better-one-2")
    dialog.save_button.click()
    assert dialog.error.text() == "The new password and its repetition differ."
    dialog.current.setText("not-it-at-all")
    dialog.repeat.setText("a-better-one-1")
    dialog.save_button.click()
    run(until(lambda: dialog.error.isVisibleTo(dialog), "the core's refusal"))
    assert dialog.error.text() == "The current password is wrong."
    assert window.account.password_dialog is dialog
    dialog.current.setText(generated)
    dialog.save_button.click()
    run(until(lambda: window.account.password_dialog is None, "the dialog to close"))
    assert "Password changed" in window.statusBar().currentMessage()

    # This session goes on; the other sign-in ended; the new password is the one that works.
    assert run(ctx.rest.me()).must_change_password is False
    assert run(core.request("GET", "/api/v1/auth/me", other))[0] == 401
    status, _ = run(
        core.request("POST", "/api/v1/auth/login", json={"username": "admin", "password": "a-better-one-1"})
    )
    assert status == 200

    # Everyone can change their password from the Account menu, without a reason shown.
    assert window.password_action in window.account_menu.actions()
    window.password_action.trigger()
    again = window.account.password_dialog
    assert again is not None and again.reason.isHidden() and again.cancel_button.text() == "Cancel"
    again.reject()


def test_a_postponed_password_change_is_asked_again_at_the_next_start(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, keyring_backend: MemoryKeyring
) -> None:
    window.show()
    connect(window, core, "admin", admin_password(core))
    run(until(lambda: window.account.password_dialog is not None, "the change-password dialog"))
    dialog = window.account.password_dialog
    assert dialog is not None
    dialog.cancel_button.click()  # Later
    assert window.account.password_dialog is None and ctx.rest.session is not None
    # A later start resumes with the kept token and asks again (the core still says so).
    run(window._resume(ctx.signin.profile))  # type: ignore[arg-type]
    assert window.account.password_dialog is not None
    window.account.password_dialog.reject()


def test_a_role_that_must_use_two_factor_sets_it_up_after_sign_in(
    window: MainWindow, ctx: AppContext, run: Run, tmp_path: Path
) -> None:
    box = Cores(tmp_path / "strict", totp_required_role="operator")
    core = run(box.start())
    try:
        # Made on the core itself: its admins must set up two-factor before they make anyone.
        run(core.core.users.create("ops", "password123", Role.OPERATOR))
        window.show()
        connect(window, core, "ops", "password123")
        run(until(lambda: window.account.two_factor_dialog is not None, "the two-factor dialog"))
        tf = window.account.two_factor_dialog
        assert tf is not None and not tf.reason.isHidden()
        assert "operator role must sign in with two factors" in tf.reason.text()
        with pytest.raises(CoreError, match="set up two-factor sign-in first") as refused:
            run(ctx.rest.nodes())
        assert refused.value.kind == "totp_setup_required"
        run(until(lambda: tf.page == "off", "the state"))
        tf.setup_button.click()
        run(until(lambda: tf.page == "setup", "the secret"))
        tf.enable_code.setText(pyotp.TOTP(tf.secret).now())
        tf.enable_button.click()
        run(until(lambda: tf.page == "codes", "the recovery codes"))
        assert run(ctx.rest.nodes()) == []  # now the core answers
        tf.reject()
        run(ctx.signin.sign_out())
    finally:
        run(box.stop())


def _age_step_up(core: RunningCore, run: Run) -> None:
    """As if the step-up window had passed since the password was entered."""
    run(core.core.db.execute("UPDATE tokens SET stepped_up_at = stepped_up_at - 3600"))


def test_a_stale_session_confirms_it_is_you_then_the_command_runs(
    window: MainWindow, ctx: AppContext, cores: Cores, core: RunningCore, run: Run
) -> None:
    web = run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    window.show()
    assert web.node_id is not None
    _age_step_up(core, run)
    console = window.open_console([web.node_id])
    assert console is not None
    console.command.setText("uptime")
    console.run_button.click()
    run(until(lambda: window.account.step_up_dialog is not None, "Confirm it's you"))
    step = window.account.step_up_dialog
    assert isinstance(step, StepUpDialog) and step.isVisible() and step.kind == "password"
    assert step.windowTitle() == "Confirm it's you"
    step.secret.setText("not-my-password")
    step.confirm_button.click()
    run(until(lambda: step.error.isVisibleTo(step), "the refusal"))
    assert step.error.text() == "Wrong password or code." and window.account.step_up_dialog is step
    step.secret.setText(admin_password(core))
    step.confirm_button.click()
    cmd = run(answer(web, stdout="up 3 days\n"))  # the command reached the agent
    assert cmd.shell == "uptime"
    # Signed afresh for the retry, as the app signs every command (its expiry still ahead).
    assert cmd.signature is not None and cmd.signature.expires_at > time.time()
    out = console.outputs[web.node_id]
    run(until(lambda: out.done, "the result"))
    assert out.badge.text() == "ok" and out.stdout == "up 3 days\n"
    assert window.account.step_up_dialog is None
    posts = [r for r in cores.requests if r.startswith(("/api/v1/commands", "/api/v1/auth/step-up"))]
    assert posts[:4] == [
        "/api/v1/commands",
        "/api/v1/auth/step-up",
        "/api/v1/auth/step-up",
        "/api/v1/commands",
    ]


def test_a_declined_step_up_sends_nothing_and_says_so(
    window: MainWindow, ctx: AppContext, cores: Cores, core: RunningCore, run: Run
) -> None:
    web = run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    window.show()
    assert web.node_id is not None and web.ws is not None
    _age_step_up(core, run)
    # Reading the list changes nothing on the server: it needs no step-up, even on a stale session.
    panel = window.open_node(web.node_id).show_services()
    listing: p.Command = run(web.recv_type(p.Command))
    assert listing.service == p.ServiceRequest(action="list")
    services = [p.ServiceInfo("nginx", "active", "enabled", "A web server")]
    run(
        web.ws.send_bytes(
            p.encode(p.CommandResult(command_id=listing.command_id, status="ok", services=services))
        )
    )
    run(until(lambda: panel.loads == 1, "the list"))
    assert window.account.step_up_dialog is None
    # A restart does: declined, nothing is sent and the panel says why.
    assert panel.select("nginx")
    box = panel.ask("restart")
    assert box is not None
    [ok] = [b for b in box.buttons() if b.text() == "Restart"]
    ok.click()
    run(until(lambda: window.account.step_up_dialog is not None, "Confirm it's you"))
    step = window.account.step_up_dialog
    assert step is not None
    step.reject()
    run(until(lambda: "failed" in panel.status.text(), "the restart to give up"))
    assert panel.status.text() == ("Restart nginx failed: Not done: it needs you to confirm it is you first.")
    # Confirmed this time: the restart reaches the agent.
    box = panel.ask("restart")
    assert box is not None
    [ok] = [b for b in box.buttons() if b.text() == "Restart"]
    ok.click()
    run(until(lambda: window.account.step_up_dialog is not None, "Confirm it's you again"))
    step = window.account.step_up_dialog
    assert step is not None
    step.secret.setText(admin_password(core))
    step.confirm_button.click()
    cmd: p.Command = run(web.recv_type(p.Command))
    assert cmd.service == p.ServiceRequest(action="restart", name="nginx")
    run(web.ws.send_bytes(p.encode(p.CommandResult(command_id=cmd.command_id, status="ok", exit_code=0))))
    run(until(lambda: "done" in panel.status.text(), "the restart outcome"))


def test_calls_waiting_at_once_share_one_confirmation(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    """A two-factor user confirms with a code (here a recovery code), once for every waiting call."""
    token = run(core.user_token("olga", "operator", password="olga-pass-1"))
    _, setup = run(core.request("POST", "/api/v1/auth/totp/setup", token))
    totp = pyotp.TOTP(setup["secret"])
    _, codes = run(core.request("POST", "/api/v1/auth/totp/enable", token, json={"code": totp.now()}))
    run(ctx.rest.login(core.url, "olga", "olga-pass-1", otp=codes["codes"][0]))
    window.show()
    _age_step_up(core, run)

    async def both() -> list[bool]:
        return list(
            await asyncio.gather(window.account.confirm_identity(), window.account.confirm_identity())
        )

    task = ctx.aio.spawn(both())
    run(until(lambda: window.account.step_up_dialog is not None, "one dialog"))
    step = window.account.step_up_dialog
    assert step is not None and step.kind == "code" and "authenticator" in step.message.text()
    step.secret.setText("123")
    step.confirm_button.click()
    assert "6 digits" in step.error.text() and not task.done()
    step.secret.setText(codes["codes"][1])
    step.confirm_button.click()
    run(until(task.done, "both answers"))
    assert task.result() == [True, True]
    _, audit = run(core.request("GET", "/api/v1/audit?action=auth.step_up", run(core.admin_token())))
    assert [e["result"] for e in audit["entries"]] == ["ok"]  # one step-up for both
