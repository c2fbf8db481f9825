"""Accounts: the users (admins create them, change roles, disable, reset passwords and two-factor,
delete), sign-ins and API tokens (yours; admins: anyone's) and enrollment tokens, each revocable.

No page shows a secret: the core lists tokens by a short public id only.
"""

from __future__ import annotations

import contextlib
import secrets
import string
from collections.abc import Awaitable
from dataclasses import dataclass

from PySide6.QtCore import QItemSelection
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTabWidget,
    QWidget,
)

from servermanager.common import rest as m
from servermanager.desktop.account import MIN_PASSWORD, monospace
from servermanager.desktop.context import AppContext
from servermanager.desktop.format import fmt_time
from servermanager.desktop.listpanel import ListPanel
from servermanager.desktop.models.records import RecordsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import Session
from servermanager.desktop.widgets import FormDialog, confirm

ROLES = (
    ("viewer", "Viewer: sees the fleet, charts and alerts"),
    ("operator", "Operator: also runs commands, manages services, edits alert rules"),
    ("admin", "Admin: also manages users, tokens and channels"),
)
ADMIN_HINT = "Only admins manage users."


def yes(flag: bool, text: str = "yes") -> str:
    return text if flag else ""


class UsersModel(RecordsModel[m.User]):
    columns = (
        ("Name", lambda u: u.name),
        ("Role", lambda u: u.role),
        ("Status", lambda u: "disabled" if u.disabled else "active"),
        ("Two-factor", lambda u: "on" if u.totp else "off"),
        ("Must change password", lambda u: yes(u.must_change_password)),
        ("Created", lambda u: fmt_time(u.created_at)),
    )


def generate_password(length: int = 16) -> str:
    """A temporary password to read out or paste: letters and digits, no look-alikes."""
    alphabet = "".join(c for c in string.ascii_letters + string.digits if c not in "Il1O0o")
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _role_box(current: str = "viewer") -> QComboBox:
    box = QComboBox()
    for role, label in ROLES:
        box.addItem(label, role)
    box.setCurrentIndex(max(0, box.findData(current)))
    return box


@dataclass(frozen=True)
class NewUser:
    name: str
    password: str
    role: str
    must_change: bool


class UserDialog(FormDialog):
    """A new user: name, role, initial password (emits NewUser)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("New user", parent)
        self.name = QLineEdit()
        self.name.setPlaceholderText("e.g. alice")
        self.role = _role_box()
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText(f"at least {MIN_PASSWORD} characters")
        self.repeat = QLineEdit()
        self.repeat.setEchoMode(QLineEdit.EchoMode.Password)
        self.must_change = QCheckBox("They must choose their own password at first sign-in")
        self.must_change.setChecked(True)
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Role", self.role)
        form.addRow("Initial password", self.password)
        form.addRow("Repeat it", self.repeat)
        form.addRow("", self.must_change)
        self.lay_out(form)
        self.setMinimumWidth(520)

    def body(self) -> NewUser:
        name = self.name.text().strip()
        if not name:
            raise ValueError("A user needs a name.")
        password = self.password.text()
        if len(password) < MIN_PASSWORD:
            raise ValueError(f"The password needs at least {MIN_PASSWORD} characters.")
        if password != self.repeat.text():
            raise ValueError("The password and its repetition differ.")
        return NewUser(name, password, str(self.role.currentData()), self.must_change.isChecked())


class RoleDialog(FormDialog):
    """Another role for a user (emits the role's name)."""

    def __init__(self, user: m.User, parent: QWidget | None = None) -> None:
        super().__init__(f"Role of {user.name}", parent)
        self.user_id = user.id
        self.role = _role_box(user.role)
        form = QFormLayout()
        form.addRow("Role", self.role)
        note = QLabel("Takes effect at once, on their open sessions too.")
        note.setWordWrap(True)
        self.lay_out(form, note)
        self.setMinimumWidth(480)

    def body(self) -> str:
        return str(self.role.currentData())


class ResetPasswordDialog(FormDialog):
    """A temporary password for a user, shown so it can be passed on (emits it). They are signed
    out everywhere and must choose their own at the next sign-in."""

    def __init__(self, user: m.User, parent: QWidget | None = None) -> None:
        super().__init__(f"Reset the password of {user.name}", parent)
        self.user_id = user.id
        self.user_name = user.name
        self.password = QLineEdit(generate_password())
        self.password.setFont(monospace())
        self.generate = QPushButton("Generate")
        self.generate.clicked.connect(lambda: self.password.setText(generate_password()))
        row = QHBoxLayout()
        row.addWidget(self.password, 1)
        row.addWidget(self.generate)
        form = QFormLayout()
        form.addRow("Temporary password", row)
        note = QLabel(
            f"Give it to {user.name} over a channel you trust. They are signed out everywhere now, and "
            "must choose their own password when they next sign in."
        )
        note.setWordWrap(True)
        self.lay_out(form, note)
        self.buttons.button(self.buttons.StandardButton.Save).setText("Reset password")
        self.setMinimumWidth(480)

    def body(self) -> str:
        password = self.password.text()
        if len(password) < MIN_PASSWORD:
            raise ValueError(f"The password needs at least {MIN_PASSWORD} characters.")
        return password


class UsersPanel(ListPanel[m.User]):
    """The Users page (admins): every change goes to the core, whose refusals are said as it says them."""

    noun = "user"
    denied_hint = ADMIN_HINT

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, UsersModel(), parent)
        self.model.setParent(self)
        self.dialog: FormDialog | None = None
        self.box: QMessageBox | None = None
        self.add_button("New user…", self.open_new, needs_selection=False)
        self.role_button = self.add_button("Change role…", self.open_role)
        self.disable_button = self.add_button("Disable", self.toggle_disabled)
        self.password_button = self.add_button("Reset password…", self.open_reset)
        self.totp_button = self.add_button("Reset two-factor", self.reset_totp)
        self.delete_button = self.add_button("Delete…", self.delete_selected)
        self.finish_bar()

    def may_edit(self, session: Session) -> bool:
        return session.role == "admin"

    async def fetch(self) -> list[m.User]:
        return await self.ctx.rest.users()

    def summary(self, records: list[m.User]) -> str:
        admins = sum(1 for u in records if u.role == "admin" and not u.disabled)
        text = super().summary(records)
        return f"{text}, {admins} enabled admin{'s' if admins != 1 else ''}"

    def _selection_changed(self, *args: QItemSelection) -> None:
        super()._selection_changed(*args)
        user = self.selected()
        self.disable_button.setText("Enable" if user is not None and user.disabled else "Disable")
        self.totp_button.setEnabled(self.totp_button.isEnabled() and user is not None and user.totp)

    def select(self, name: str) -> bool:
        for row, user in enumerate(self.model.records):
            if user.name == name:
                self.table.selectRow(row)
                return True
        return False

    def _is_me(self, user: m.User) -> bool:
        session = self.ctx.rest.session
        return session is not None and session.user == user.name

    def _show(self, dialog: FormDialog) -> None:
        if self.dialog is not None:
            self.dialog.close()
        self.dialog = dialog
        dialog.show()

    async def _in_dialog(self, dialog: FormDialog, action: Awaitable[object], done: str) -> None:
        try:
            await action
        except CoreError as exc:
            dialog.show_error(exc.message)
            return
        dialog.accept()
        await self._load()
        self.status.setText(done)

    # ------------------------------------------------------------ actions

    def open_new(self) -> UserDialog | None:
        if not self.can_edit:
            return None
        dialog = UserDialog(self)
        dialog.submitted.connect(lambda new: self.ctx.aio.spawn(self._create(dialog, new), "user-create"))
        self._show(dialog)
        return dialog

    async def _create(self, dialog: UserDialog, new: NewUser) -> None:
        async def create() -> None:
            user = await self.ctx.rest.create_user(new.name, new.password, new.role)
            if new.must_change:
                # Setting it as an admin's reset marks it temporary: the core asks for a new one.
                await self.ctx.rest.reset_password(user.id, new.password)

        await self._in_dialog(dialog, create(), f"Created {new.name} ({new.role}).")

    def open_role(self) -> RoleDialog | None:
        user = self.selected()
        if user is None or not self.can_edit:
            return None
        dialog = RoleDialog(user, self)
        dialog.submitted.connect(
            lambda role: self.ctx.aio.spawn(
                self._in_dialog(
                    dialog,
                    self.ctx.rest.patch_user(user.id, m.UserPatch(role=role)),
                    f"{user.name} is now {role}.",
                ),
                "user-role",
            )
        )
        self._show(dialog)
        return dialog

    def open_reset(self) -> ResetPasswordDialog | None:
        user = self.selected()
        if user is None or not self.can_edit:
            return None
        dialog = ResetPasswordDialog(user, self)
        dialog.submitted.connect(
            lambda password: self.ctx.aio.spawn(
                self._in_dialog(
                    dialog,
                    self.ctx.rest.reset_password(user.id, password),
                    f"The password of {user.name} was reset; they must change it at their next sign-in.",
                ),
                "user-password",
            )
        )
        self._show(dialog)
        return dialog

    def toggle_disabled(self) -> QMessageBox | None:
        user = self.selected()
        if user is None or not self.can_edit:
            return None
        if user.disabled:
            self.act(
                f"enable {user.name}", lambda: self.ctx.rest.patch_user(user.id, m.UserPatch(disabled=False))
            )
            return None
        me = " This is you: you will be signed out too." if self._is_me(user) else ""
        self.box = confirm(
            self,
            "Disable user",
            f"Disable {user.name}? They are signed out everywhere at once and cannot sign in until "
            f"enabled again; their API tokens stop working.{me}",
            "Disable",
            lambda: self.act(
                f"disable {user.name}", lambda: self.ctx.rest.patch_user(user.id, m.UserPatch(disabled=True))
            ),
        )
        return self.box

    def reset_totp(self) -> QMessageBox | None:
        user = self.selected()
        if user is None or not self.can_edit or not user.totp:
            return None
        self.box = confirm(
            self,
            "Reset two-factor sign-in",
            f"Turn off two-factor sign-in for {user.name} (a lost phone)? Their recovery codes stop "
            "working; they sign in with their password alone and can set it up again.",
            "Reset two-factor",
            lambda: self.act(
                f"reset two-factor of {user.name}",
                lambda: self.ctx.rest.patch_user(user.id, m.UserPatch(totp=False)),
            ),
        )
        return self.box

    def delete_selected(self) -> QMessageBox | None:
        user = self.selected()
        if user is None or not self.can_edit:
            return None
        me = " This is you: you will be signed out." if self._is_me(user) else ""
        self.box = confirm(
            self,
            "Delete user",
            f"Delete {user.name}? Their sign-ins and API tokens end at once. The audit log keeps what "
            f"they did. This cannot be undone.{me}",
            "Delete",
            lambda: self.act(f"delete {user.name}", lambda: self.ctx.rest.delete_user(user.id)),
        )
        return self.box

    def shutdown(self) -> None:
        super().shutdown()
        if self.dialog is not None:
            self.dialog.close()


# ---------------------------------------------------------------- sign-ins and tokens


@dataclass(frozen=True)
class Credential:
    """One row of "Sessions and tokens": a sign-in (its access and refresh tokens together) or an API
    token. `id` revokes it (any token of a sign-in ends the whole sign-in)."""

    id: str
    user: str
    kind: str  # "sign-in" or "API token"
    name: str
    created_at: float
    expires_at: float | None
    current: bool


def credentials(tokens: list[m.TokenInfo]) -> list[Credential]:
    """The core's token list as people think of it: one row per sign-in, one per API token, newest first."""
    rows: list[Credential] = []
    sessions: dict[str, list[m.TokenInfo]] = {}
    for t in tokens:
        if t.kind in ("access", "refresh") and t.session:
            sessions.setdefault(t.session, []).append(t)
        else:
            kind = "API token" if t.kind == "api" else t.kind
            rows.append(Credential(t.id, t.user, kind, t.name or "", t.created_at, t.expires_at, t.current))
    for group in sessions.values():
        handle = next((t for t in group if t.kind == "refresh"), group[0])
        ends = [t.expires_at for t in group]
        rows.append(
            Credential(
                handle.id,
                handle.user,
                "sign-in",
                "",
                min(t.created_at for t in group),
                None if None in ends else max(e for e in ends if e is not None),
                any(t.current for t in group),
            )
        )
    return sorted(rows, key=lambda c: c.created_at, reverse=True)


class CredentialsModel(RecordsModel[Credential]):
    columns = (
        ("User", lambda c: c.user),
        ("What", lambda c: c.kind),
        ("Name", lambda c: "this app, now" if c.current else c.name),
        ("Since", lambda c: fmt_time(c.created_at)),
        ("Until", lambda c: fmt_time(c.expires_at) if c.expires_at is not None else "revoked only"),
        ("Id", lambda c: c.id),
    )


class TokensPanel(ListPanel[Credential]):
    """Sessions and tokens: your sign-ins and API tokens (admins pick a user), each revocable."""

    noun = "sign-in or token"

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, CredentialsModel(), parent)
        self.model.setParent(self)
        self.box: QMessageBox | None = None
        self.user_label = QLabel("User")
        self.user_box = QComboBox()
        self.user_box.setMinimumContentsLength(14)
        self.user_box.currentIndexChanged.connect(lambda _i: self.refresh())
        self.bar.addWidget(self.user_label)
        self.bar.addWidget(self.user_box)
        self.revoke_button = self.add_button("Revoke…", self.revoke_selected)
        self.finish_bar()

    def may_edit(self, session: Session) -> bool:
        return True  # everyone revokes their own; the core scopes it

    def _session_changed(self, session: Session | None) -> None:
        admin = session is not None and session.role == "admin"
        self.user_label.setVisible(admin)
        self.user_box.setVisible(admin)
        if not admin:
            self.user_box.blockSignals(True)
            self.user_box.clear()
            self.user_box.blockSignals(False)
        super()._session_changed(session)

    @property
    def user(self) -> str | None:
        """Whose tokens are listed: None for your own."""
        data = self.user_box.currentData()
        return str(data) if data else None

    def pick_user(self, name: str | None) -> None:
        index = self.user_box.findData(name or "")
        if index >= 0:
            self.user_box.setCurrentIndex(index)

    async def fetch(self) -> list[Credential]:
        session = self.ctx.rest.session
        if session is not None and session.role == "admin":
            self._fill_users([u.name for u in await self.ctx.rest.users()], session.user)
        return credentials(await self.ctx.rest.tokens(self.user))

    def _fill_users(self, names: list[str], me: str) -> None:
        current = self.user or ""
        self.user_box.blockSignals(True)
        self.user_box.clear()
        self.user_box.addItem(f"{me} (you)", "")
        for name in names:
            if name != me:
                self.user_box.addItem(name, name)
        self.user_box.setCurrentIndex(max(0, self.user_box.findData(current)))
        self.user_box.blockSignals(False)

    def summary(self, records: list[Credential]) -> str:
        signins = sum(1 for c in records if c.kind == "sign-in")
        api = len(records) - signins
        whose = f"{self.user}: " if self.user else ""
        return (
            f"{whose}{signins} sign-in{'s' if signins != 1 else ''}, {api} API token{'s' if api != 1 else ''}"
            " (secrets are never shown: the core keeps only their hashes)"
        )

    def revoke_selected(self) -> QMessageBox | None:
        cred = self.selected()
        if cred is None or not self.can_edit:
            return None
        what = "this sign-in" if cred.kind == "sign-in" else f"the API token {cred.name or cred.id}"
        here = (
            " It is the sign-in this app is using now: you will be signed out here."
            if cred.current
            else " Whoever uses it is signed out at once."
        )
        self.box = confirm(
            self,
            "Revoke",
            f"Revoke {what} of {cred.user}?{here}",
            "Revoke",
            lambda: self.act(f"revoke {cred.id}", lambda: self.ctx.rest.revoke_token(cred.id)),
        )
        return self.box


class EnrollTokensModel(RecordsModel[m.EnrollTokenInfo]):
    columns = (
        ("Id", lambda t: t.id),
        ("Created", lambda t: fmt_time(t.created_at)),
        ("Expires", lambda t: fmt_time(t.expires_at)),
        ("Uses left", lambda t: str(t.uses_left)),
    )


class EnrollTokensPanel(ListPanel[m.EnrollTokenInfo]):
    """Enrollment tokens still usable (admins): revoke one that was shared too widely."""

    noun = "enrollment token"

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, EnrollTokensModel(), parent)
        self.model.setParent(self)
        self.revoke_button = self.add_button("Revoke", self.revoke_selected)
        self.finish_bar()

    def may_edit(self, session: Session) -> bool:
        return session.role == "admin"

    async def fetch(self) -> list[m.EnrollTokenInfo]:
        return await self.ctx.rest.enroll_tokens()

    def revoke_selected(self) -> None:
        token = self.selected()
        if token is not None and self.can_edit:
            self.act(f"revoke {token.id}", lambda: self.ctx.rest.revoke_enroll_token(token.id))


class AccountsView(QTabWidget):
    """The Users tab: users and enrollment tokens (admins), sessions and tokens (everyone). Each
    page loads when first shown and again on its own Refresh."""

    PAGES = ("users", "sessions", "enroll")

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.users = UsersPanel(ctx)
        self.sessions = TokensPanel(ctx)
        self.enroll = EnrollTokensPanel(ctx)
        self.addTab(self.users, "Users")
        self.addTab(self.sessions, "Sessions and tokens")
        self.addTab(self.enroll, "Enrollment tokens")
        self._loaded: set[int] = set()
        self.currentChanged.connect(self._shown)
        ctx.rest.session_changed.connect(self._session_changed)
        self._session_changed(ctx.rest.session)

    def _session_changed(self, session: Session | None) -> None:
        admin = session is not None and session.role == "admin"
        for page in (self.users, self.enroll):
            self.setTabVisible(self.indexOf(page), admin)
        if not admin and self.currentWidget() is not self.sessions:
            self.setCurrentWidget(self.sessions)

    def show_page(self, page: str) -> None:
        index = self.PAGES.index(page)
        if not self.isTabVisible(index):
            index = self.indexOf(self.sessions)
        if self.currentIndex() == index:
            self._shown(index)
        else:
            self.setCurrentIndex(index)

    def _shown(self, index: int) -> None:
        if index not in self._loaded and self.isTabVisible(index):
            self._loaded.add(index)
            panel = self.widget(index)
            if isinstance(panel, ListPanel):
                panel.refresh()

    def shutdown(self) -> None:
        for panel in (self.users, self.sessions, self.enroll):
            panel.shutdown()
        with contextlib.suppress(RuntimeError, TypeError):
            self.ctx.rest.session_changed.disconnect(self._session_changed)
