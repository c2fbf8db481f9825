"""Your account, talking to the core: change password, two-factor sign-in, "Confirm it's you" before
commands (step-up), and what the core asks right after sign-in.

The dialogs (desktop.account) are dumb; this controller opens them, runs their requests through
RestClient and shows the outcome in them. It answers RestClient.confirm_identity, so every call the
core refuses with `step_up_required` (console, services, anything later) asks the user here, once
however many calls are waiting, and then runs again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QDialog, QWidget

from servermanager.desktop.account import ChangePasswordDialog, StepUpDialog, TwoFactorDialog
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import Session

log = logging.getLogger(__name__)

PASSWORD_REASON = (
    "The core asks you to choose a new password: yours was generated when the core was set up, or an "
    "admin reset it, so someone else has seen it. You can do it later, but you will be asked again at "
    "every sign-in until you do."
)


def totp_reason(role: str) -> str:
    return (
        f"Users with the {role} role must sign in with two factors on this core, and yours are not set "
        "up yet: until they are, the core refuses everything else. It takes a minute with an "
        "authenticator app on your phone."
    )


class AccountFlow(QObject):
    """Opens the account dialogs over `parent` (the main window) and does what they ask."""

    message = Signal(str)  # an outcome for the status bar

    def __init__(self, ctx: AppContext, parent: QWidget) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.window = parent
        self.password_dialog: ChangePasswordDialog | None = None
        self.two_factor_dialog: TwoFactorDialog | None = None
        self.step_up_dialog: StepUpDialog | None = None
        self._confirmed: asyncio.Future[bool] | None = None
        self._prompts: list[Callable[[], QDialog | None]] = []
        hook = self.confirm_identity
        ctx.rest.confirm_identity = hook
        ctx.rest.session_changed.connect(self._session_changed)
        # The context may outlive the window: then nobody is there to ask.
        parent.destroyed.connect(lambda: AccountFlow._unhook(ctx, hook))

    def _parent(self) -> QWidget | None:
        return self.window if self.window.isVisible() else None

    def _session_changed(self, session: Session | None) -> None:
        if session is None:
            # Signed out: nothing here applies any more.
            self._prompts.clear()
            for dialog in (self.password_dialog, self.two_factor_dialog, self.step_up_dialog):
                if dialog is not None:
                    dialog.reject()

    # ------------------------------------------------------------ after sign-in

    def after_sign_in(self, *, must_change_password: bool, totp_setup_required: bool) -> None:
        """What the core asked at sign-in, one dialog after the other: two-factor first (without it
        nothing else works), then the new password."""
        session = self.ctx.rest.session
        if session is None:
            return
        if totp_setup_required:
            self._prompts.append(lambda: self.two_factor(reason=totp_reason(session.role)))
        if must_change_password:
            self._prompts.append(lambda: self.change_password(reason=PASSWORD_REASON))
        self._next_prompt()

    async def check(self) -> None:
        """After a silent sign-in (a kept token): ask the core what it wants of this user."""
        try:
            me = await self.ctx.rest.me()
        except CoreError as exc:
            log.info("could not read the account after sign-in: %s", exc.message)
            return
        self.after_sign_in(
            must_change_password=me.must_change_password, totp_setup_required=me.totp_setup_required
        )

    def _next_prompt(self) -> None:
        if self.password_dialog is not None or self.two_factor_dialog is not None:
            return  # the open one calls again when it closes
        while self._prompts:
            if self._prompts.pop(0)() is not None:
                return

    # ------------------------------------------------------------ change password

    def change_password(self, reason: str = "") -> ChangePasswordDialog | None:
        session = self.ctx.rest.session
        if session is None:
            return None
        if self.password_dialog is not None:
            self.password_dialog.raise_()
            return self.password_dialog
        dialog = ChangePasswordDialog(session.user, reason=reason, parent=self._parent())
        dialog.submitted.connect(
            lambda body: self.ctx.aio.spawn(self._change_password(dialog, *body), "change-password")
        )
        dialog.finished.connect(lambda _r: self._closed(dialog))
        self.password_dialog = dialog
        dialog.show()
        return dialog

    async def _change_password(self, dialog: ChangePasswordDialog, current: str, new: str) -> None:
        dialog.set_busy(True)
        try:
            await self.ctx.rest.change_password(current, new)
        except CoreError as exc:
            dialog.set_busy(False)
            dialog.show_error(exc.message)
            return
        dialog.accept()
        self.message.emit("Password changed. Your other sign-ins were ended; this one goes on.")

    # ------------------------------------------------------------ two-factor

    def two_factor(self, reason: str = "") -> TwoFactorDialog | None:
        if self.ctx.rest.session is None:
            return None
        if self.two_factor_dialog is not None:
            self.two_factor_dialog.raise_()
            return self.two_factor_dialog
        dialog = TwoFactorDialog(reason=reason, parent=self._parent())
        dialog.setup_requested.connect(lambda: self.ctx.aio.spawn(self._setup(dialog), "totp-setup"))
        dialog.enable_requested.connect(
            lambda code: self.ctx.aio.spawn(self._enable(dialog, code), "totp-enable")
        )
        dialog.disable_requested.connect(
            lambda code: self.ctx.aio.spawn(self._disable(dialog, code), "totp-disable")
        )
        dialog.finished.connect(lambda _r: self._closed(dialog))
        self.two_factor_dialog = dialog
        dialog.show()
        self.ctx.aio.spawn(self._check_totp(dialog), "totp-state")
        return dialog

    async def _check_totp(self, dialog: TwoFactorDialog) -> None:
        try:
            me = await self.ctx.rest.me()
        except CoreError as exc:
            dialog.show_error(f"Could not read your account: {exc.message}")
            return
        if me.totp:
            dialog.show_on()
        else:
            dialog.show_off()

    async def _setup(self, dialog: TwoFactorDialog) -> None:
        try:
            setup = await self.ctx.rest.totp_setup()
        except CoreError as exc:
            dialog.show_error(exc.message)
            return
        dialog.show_setup(setup.secret, setup.uri)

    async def _enable(self, dialog: TwoFactorDialog, code: str) -> None:
        try:
            codes = await self.ctx.rest.totp_enable(code)
        except CoreError as exc:
            dialog.show_error(exc.message)
            return
        dialog.show_codes(codes)
        self.message.emit("Two-factor sign-in is on.")

    async def _disable(self, dialog: TwoFactorDialog, code: str) -> None:
        try:
            await self.ctx.rest.totp_disable(code)
        except CoreError as exc:
            dialog.show_error(exc.message)
            return
        dialog.show_off()
        self.message.emit("Two-factor sign-in is off.")

    # ------------------------------------------------------------ step-up

    async def confirm_identity(self) -> bool:
        """Ask the user to confirm it is them and tell the core (POST /auth/step-up): True once it
        accepted, False when they cancelled. Calls waiting at the same time share one dialog."""
        pending = self._confirmed
        if pending is None or pending.done():
            pending = asyncio.get_running_loop().create_future()
            self._confirmed = pending
            await self._ask_step_up(pending)
        # Shielded: one waiter being cancelled (its panel closed) does not answer for the others.
        return await asyncio.shield(pending)

    async def _ask_step_up(self, answer: asyncio.Future[bool]) -> None:
        session = self.ctx.rest.session
        if session is None:
            answer.set_result(False)
            return
        try:
            totp = (await self.ctx.rest.me()).totp
        except CoreError as exc:
            log.info("could not read the account before a step-up: %s", exc.message)
            totp = False  # the password works for everyone
        if answer.done():
            return
        dialog = StepUpDialog(session.user, totp=totp, parent=self._parent())
        dialog.submitted.connect(
            lambda kind, value: self.ctx.aio.spawn(self._step_up(dialog, answer, kind, value), "step-up")
        )
        dialog.finished.connect(lambda _r: self._step_up_closed(dialog, answer))
        self.step_up_dialog = dialog
        dialog.show()
        dialog.raise_()

    async def _step_up(
        self, dialog: StepUpDialog, answer: asyncio.Future[bool], kind: str, value: str
    ) -> None:
        try:
            if kind == "code":
                await self.ctx.rest.step_up(code=value)
            else:
                await self.ctx.rest.step_up(password=value)
        except CoreError as exc:
            dialog.show_error(exc.message)
            return
        if not answer.done():
            answer.set_result(True)
        dialog.accept()

    def _step_up_closed(self, dialog: StepUpDialog, answer: asyncio.Future[bool]) -> None:
        if not answer.done():
            answer.set_result(False)
        if self.step_up_dialog is dialog:
            self.step_up_dialog = None
        dialog.deleteLater()

    # ------------------------------------------------------------ plumbing

    def _closed(self, dialog: QDialog) -> None:
        if dialog is self.password_dialog:
            self.password_dialog = None
        if dialog is self.two_factor_dialog:
            self.two_factor_dialog = None
        dialog.deleteLater()
        self._next_prompt()

    @staticmethod
    def _unhook(ctx: AppContext, hook: object) -> None:
        if ctx.rest.confirm_identity == hook:
            ctx.rest.confirm_identity = None
