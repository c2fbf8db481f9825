"""The Users tab against a real core: users created, re-roled, disabled, reset and deleted (the last
admin refused, in the core's words); sessions and tokens listed without secrets and revoked;
enrollment tokens revoked; what a non-admin sees."""

from __future__ import annotations

from typing import Any

import pyotp
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from devkit.cores import RunningCore
from servermanager.common import rest as m
from servermanager.desktop.context import AppContext
from servermanager.desktop.listpanel import ListPanel
from servermanager.desktop.users import (
    CredentialsModel,
    EnrollTokensModel,
    UsersModel,
    UsersPanel,
    credentials,
    generate_password,
)
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Run, admin_password, profile_for, sign_in, until


def press(box: QMessageBox | None, text: str) -> None:
    assert box is not None and box.isVisible()
    [button] = [b for b in box.buttons() if b.text() == text]
    button.click()


def after(panel: ListPanel[Any], run: Run, before: int, what: str) -> None:
    """Wait until the panel has loaded again since `before` (an action reloads it on success)."""
    run(until(lambda: panel.loads > before, what))


def cells(model: UsersModel, name: str) -> dict[str, str]:
    """A user's row as the table shows it, by column header."""
    for r, user in enumerate(model.records):
        if user.name == name:
            return {
                model.headerData(c, Qt.Orientation.Horizontal): model.index(r, c).data()
                for c in range(model.columnCount())
            }
    raise AssertionError(f"no row for {name}")


def select(panel: UsersPanel, name: str) -> None:
    assert panel.select(name), name
    assert panel.selected() is not None and panel.selected().name == name  # type: ignore[union-attr]


def test_admins_manage_users(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, qtmodeltester: Any
) -> None:
    run(sign_in(ctx, core))
    window.show()
    assert window.users_action.isVisible() and window.users_action.isEnabled()
    window.users_action.trigger()
    view = window.accounts
    assert view is not None and window.tabs.currentWidget() is view
    panel = view.users
    run(until(lambda: panel.loads == 1, "the users"))
    assert [u.name for u in panel.model.records] == ["admin"]
    assert cells(panel.model, "admin")["Must change password"] == "yes"  # the generated password
    qtmodeltester.check(panel.model)

    # Create: a temporary password the user must change.
    dialog = panel.open_new()
    assert dialog is not None
    dialog.name.setText("alice")
    dialog.role.setCurrentIndex(dialog.role.findData("operator"))
    dialog.password.setText("short")
    dialog.buttons.accepted.emit()
    assert "at least 8 characters" in dialog.error.text()
    dialog.password.setText("alice-first-1")
    dialog.repeat.setText("alice-first-1")
    loads = panel.loads
    dialog.buttons.accepted.emit()
    after(panel, run, loads, "alice in the list")
    assert cells(panel.model, "alice") | {"Created": ""} == {
        "Name": "alice",
        "Role": "operator",
        "Status": "active",
        "Two-factor": "off",
        "Must change password": "yes",
        "Created": "",
    }
    assert panel.status.text() == "Created alice (operator)."
    status, pair = run(
        core.request("POST", "/api/v1/auth/login", json={"username": "alice", "password": "alice-first-1"})
    )
    assert status == 200 and pair["must_change_password"] is True

    # A name the core refuses is said in the dialog, which stays open.
    again = panel.open_new()
    assert again is not None
    again.name.setText("alice")
    again.password.setText("whatever-1")
    again.repeat.setText("whatever-1")
    again.buttons.accepted.emit()
    run(until(lambda: again.error.isVisibleTo(again), "the refusal"))
    assert "alice" in again.error.text() and panel.dialog is again
    again.reject()

    # Change role.
    select(panel, "alice")
    role = panel.open_role()
    assert role is not None
    role.role.setCurrentIndex(role.role.findData("viewer"))
    loads = panel.loads
    role.buttons.accepted.emit()
    after(panel, run, loads, "the new role")
    assert cells(panel.model, "alice")["Role"] == "viewer"

    # Disable (asked first; signs her out), then enable.
    alice = pair["access_token"]
    select(panel, "alice")
    assert panel.disable_button.text() == "Disable"
    loads = panel.loads
    press(panel.toggle_disabled(), "Disable")
    after(panel, run, loads, "alice disabled")
    assert cells(panel.model, "alice")["Status"] == "disabled"
    assert run(core.request("GET", "/api/v1/auth/me", alice))[0] == 401
    select(panel, "alice")
    assert panel.disable_button.text() == "Enable"
    loads = panel.loads
    panel.disable_button.click()
    after(panel, run, loads, "alice enabled")
    assert cells(panel.model, "alice")["Status"] == "active"

    # Reset password: a generated temporary one, to be changed at the next sign-in.
    select(panel, "alice")
    reset = panel.open_reset()
    assert reset is not None and len(reset.password.text()) >= 12
    temporary = reset.password.text()
    loads = panel.loads
    reset.buttons.accepted.emit()
    after(panel, run, loads, "the reset")
    assert "must change it" in panel.status.text()
    status, pair = run(
        core.request("POST", "/api/v1/auth/login", json={"username": "alice", "password": temporary})
    )
    assert status == 200 and pair["must_change_password"] is True

    # Reset two-factor: only for a user who has it.
    token = pair["access_token"]
    run(core.request("POST", "/api/v1/auth/password", token, json={"current_password": temporary, "new_password": "alice-own-pw1"}))  # fmt: skip
    _, setup = run(core.request("POST", "/api/v1/auth/totp/setup", token))
    code = pyotp.TOTP(setup["secret"]).now()
    assert run(core.request("POST", "/api/v1/auth/totp/enable", token, json={"code": code}))[0] == 200
    panel.refresh()
    run(until(lambda: cells(panel.model, "alice")["Two-factor"] == "on", "two-factor on"))
    select(panel, "alice")
    assert panel.totp_button.isEnabled()
    loads = panel.loads
    press(panel.reset_totp(), "Reset two-factor")
    after(panel, run, loads, "two-factor reset")
    assert cells(panel.model, "alice")["Two-factor"] == "off"
    select(panel, "alice")
    assert not panel.totp_button.isEnabled()

    # The last admin can be neither demoted nor deleted: the core's words, in the dialog or the status.
    select(panel, "admin")
    demote = panel.open_role()
    assert demote is not None
    demote.role.setCurrentIndex(demote.role.findData("operator"))
    demote.buttons.accepted.emit()
    run(until(lambda: demote.error.isVisibleTo(demote), "the refusal"))
    assert demote.error.text() == "This is the last enabled admin; make another admin first."
    demote.reject()
    select(panel, "admin")
    box = panel.delete_selected()
    assert box is not None and "This is you" in box.text()
    press(box, "Delete")
    run(until(lambda: "Could not" in panel.status.text(), "the refusal"))
    assert panel.status.text() == (
        "Could not delete admin: This is the last enabled admin; make another admin first."
    )
    select(panel, "admin")
    press(panel.toggle_disabled(), "Disable")
    run(until(lambda: panel.status.text().startswith("Could not disable admin"), "the refusal"))

    # Delete (asked first; a cancel deletes nothing).
    select(panel, "alice")
    box = panel.delete_selected()
    assert box is not None
    box.button(QMessageBox.StandardButton.Cancel).click()
    assert "alice" in [u.name for u in panel.model.records]
    loads = panel.loads
    press(panel.delete_selected(), "Delete")
    after(panel, run, loads, "alice deleted")
    assert [u.name for u in panel.model.records] == ["admin"]
    assert run(core.request("GET", "/api/v1/auth/me", token))[0] == 401


def test_sessions_and_tokens_are_listed_without_secrets_and_revoked(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, qtmodeltester: Any
) -> None:
    olga = run(core.user_token("olga", "viewer", password="olga-pass-1"))
    status, api = run(core.request("POST", "/api/v1/tokens", olga, json={"name": "backup-script"}))
    assert status == 201
    enroll = run(core.enroll_token(uses=3))
    session = run(sign_in(ctx, core))
    window.show()
    window.sessions_action.trigger()
    view = window.accounts
    assert view is not None and view.currentWidget() is view.sessions
    panel = view.sessions
    run(until(lambda: panel.loads == 1, "your sign-ins"))
    mine = panel.model.records
    assert [c.current for c in mine if c.kind == "sign-in"].count(True) == 1
    qtmodeltester.check(panel.model)
    shown = _everything(panel.model)
    assert session.access_token not in shown and (session.refresh_token or "") not in shown

    # An admin picks another user: one row per sign-in, one per API token, never a secret.
    assert panel.user_box.isVisible()
    loads = panel.loads
    panel.pick_user("olga")
    after(panel, run, loads, "olga's tokens")
    assert sorted((c.user, c.kind, c.name) for c in panel.model.records) == [
        ("olga", "API token", "backup-script"),
        ("olga", "sign-in", ""),
    ]
    shown = _everything(panel.model)
    assert olga not in shown and api["token"] not in shown
    assert "olga:" in panel.status.text() and "never shown" in panel.status.text()

    [signin] = [r for r, c in enumerate(panel.model.records) if c.kind == "sign-in"]
    panel.table.selectRow(signin)
    box = panel.revoke_selected()
    assert box is not None and "Whoever uses it is signed out" in box.text()
    loads = panel.loads
    press(box, "Revoke")
    after(panel, run, loads, "the revocation")
    assert [c.kind for c in panel.model.records] == ["API token"]
    assert run(core.request("GET", "/api/v1/auth/me", olga))[0] == 401  # her sign-in ended at once
    assert run(core.request("GET", "/api/v1/auth/me", api["token"]))[0] == 200  # her script goes on

    # Enrollment tokens: listed by id and uses left, revoked.
    view.show_page("enroll")
    enroll_panel = view.enroll
    run(until(lambda: enroll_panel.loads == 1, "the enrollment tokens"))
    assert [t.uses_left for t in enroll_panel.model.records] == [3]
    assert enroll not in _everything(enroll_panel.model)
    qtmodeltester.check(enroll_panel.model)
    enroll_panel.table.selectRow(0)
    loads = enroll_panel.loads
    enroll_panel.revoke_button.click()
    after(enroll_panel, run, loads, "the revocation")
    assert enroll_panel.model.rowCount() == 0
    _, listed = run(core.request("GET", "/api/v1/enroll-tokens", run(core.admin_token())))
    assert listed["tokens"] == []

    # Revoking this app's own sign-in signs it out, after saying so.
    view.show_page("sessions")
    loads = panel.loads
    panel.pick_user(None)
    after(panel, run, loads, "your sign-ins")
    [current] = [r for r, c in enumerate(panel.model.records) if c.current]
    panel.table.selectRow(current)
    box = panel.revoke_selected()
    assert box is not None and "signed out here" in box.text()
    press(box, "Revoke")
    run(until(lambda: window.connection_dialog is not None, "the sign-in dialog"))
    assert ctx.rest.session is None and window.accounts is None


def _everything(model: Any) -> str:
    """Every cell and tooltip of a model, as one string."""
    return " ".join(
        str(model.index(r, c).data(role))
        for r in range(model.rowCount())
        for c in range(model.columnCount())
        for role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole)
    )


def test_a_non_admin_sees_only_their_own_sessions(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    run(core.user_token("olga", "operator", password="olga-pass-1"))
    run(ctx.signin.sign_in(profile_for(core, "olga"), "olga-pass-1"))
    window.show()
    assert not window.users_action.isVisible()
    assert window.account_menu.isEnabled()
    view = window.open_accounts("users")  # a stale shortcut: lands on what she may see
    assert view is not None
    assert not view.isTabVisible(view.indexOf(view.users))
    assert not view.isTabVisible(view.indexOf(view.enroll))
    assert view.currentWidget() is view.sessions
    run(until(lambda: view.sessions.loads == 1, "her sign-ins"))
    assert {c.user for c in view.sessions.model.records} == {"olga"}
    assert view.sessions.user_box.isHidden()
    assert view.users.loads == 0  # never asked the core for the users
    # Signing out closes the tab.
    run(ctx.signin.sign_out())
    assert window.accounts is None
    assert admin_password(core)  # the admin was untouched


def test_credentials_group_a_sign_in_and_models_hold(qtmodeltester: Any) -> None:
    tokens = [
        m.TokenInfo("a1", "bob", "access", None, 100.0, 1000.0, "fam1", current=True),
        m.TokenInfo("r1", "bob", "refresh", None, 100.0, 9000.0, "fam1"),
        m.TokenInfo("k1", "bob", "api", "cron", 50.0, None, None),
        m.TokenInfo("r2", "bob", "refresh", None, 200.0, 9500.0, "fam2"),
    ]
    rows = credentials(tokens)
    assert [(c.id, c.kind, c.current) for c in rows] == [
        ("r2", "sign-in", False),
        ("r1", "sign-in", True),
        ("k1", "API token", False),
    ]
    assert rows[1].expires_at == 9000.0 and rows[2].expires_at is None
    model = CredentialsModel()
    model.set_records(rows)
    assert model.index(1, 2).data() == "this app, now" and model.index(2, 4).data() == "revoked only"
    qtmodeltester.check(model)
    enroll = EnrollTokensModel()
    enroll.set_records([m.EnrollTokenInfo("e1", 1.0, 2.0, 5)])
    assert enroll.index(0, 3).data() == "5"
    qtmodeltester.check(enroll)
    users = UsersModel()
    users.set_records([m.User(1, "root", "admin", 1.0, disabled=True, totp=True)])
    assert [users.index(0, c).data() for c in range(4)] == ["root", "admin", "disabled", "on"]
    qtmodeltester.check(users)
    passwords = {generate_password() for _ in range(20)}
    assert len(passwords) == 20 and all(len(p) == 16 and p.isalnum() for p in passwords)
