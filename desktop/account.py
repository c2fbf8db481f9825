"""Your account's dialogs: change password, two-factor sign-in (set up, recovery codes, turn off) and
"Confirm it's you" (step-up).

They are dumb: they emit what the user asked for and show what they are told (desktop.accountflow
talks to the core). None is run with exec(), which would nest a Qt event loop inside asyncio's.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from servermanager.desktop.widgets import FormDialog

MIN_PASSWORD = 8  # the core's rule (common.rest.Password)


def monospace() -> QFont:
    font = QFont("monospace")
    font.setStyleHint(QFont.StyleHint.Monospace)
    return font


def grouped(secret: str, size: int = 4) -> str:
    """A base32 secret as an app asks for it, in groups: "JBSW Y3DP EHPK 3PXP"."""
    return " ".join(secret[i : i + size] for i in range(0, len(secret), size))


def _label(text: str = "", name: str = "") -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.PlainText)
    if name:
        label.setObjectName(name)
    return label


def _copy(text: str) -> None:
    QGuiApplication.clipboard().setText(text)


def code_edit(placeholder: str, name: str) -> QLineEdit:
    """A field for a 6-digit code or a recovery code: monospace, wide enough for its hint."""
    edit = QLineEdit()
    edit.setObjectName(name)
    edit.setFont(monospace())
    edit.setMaxLength(32)
    edit.setPlaceholderText(placeholder)
    edit.setMinimumWidth(edit.fontMetrics().horizontalAdvance(placeholder + "MMMM"))
    return edit


class ChangePasswordDialog(FormDialog):
    """Current password, the new one twice. With a `reason` (the core asks for a new password) it
    says why at the top, and Cancel reads "Later". Emits (current, new)."""

    def __init__(self, user: str, *, reason: str = "", parent: QWidget | None = None) -> None:
        super().__init__("Change password", parent)
        self.setObjectName("changePassword")
        self.reason = _label(reason, "notice")
        self.reason.setVisible(bool(reason))
        self.current = QLineEdit()
        self.new = QLineEdit()
        self.repeat = QLineEdit()
        for edit in (self.current, self.new, self.repeat):
            edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.new.setPlaceholderText(f"at least {MIN_PASSWORD} characters")
        form = QFormLayout()
        form.addRow("User", QLabel(user))
        form.addRow("Current password", self.current)
        form.addRow("New password", self.new)
        form.addRow("Repeat new password", self.repeat)
        note = _label(
            "Your other sign-ins (other computers, older sessions) are ended; this one stays signed in."
        )
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.save_button.setText("Change password")
        self.cancel_button = self.buttons.button(QDialogButtonBox.StandardButton.Cancel)
        if reason:
            self.cancel_button.setText("Later")
        self.lay_out(self.reason, form, note)
        self.setMinimumWidth(460)
        self.current.setFocus()

    def body(self) -> tuple[str, str]:
        current, new = self.current.text(), self.new.text()
        if not current:
            raise ValueError("Enter your current password.")
        if len(new) < MIN_PASSWORD:
            raise ValueError(f"The new password needs at least {MIN_PASSWORD} characters.")
        if new != self.repeat.text():
            raise ValueError("The new password and its repetition differ.")
        if new == current:
            raise ValueError("The new password must differ from the current one.")
        return current, new

    def set_busy(self, busy: bool) -> None:
        self.save_button.setEnabled(not busy)
        self.save_button.setText("Changing…" if busy else "Change password")


class TwoFactorDialog(QDialog):
    """Two-factor sign-in, page by page: checking, off (set up), the secret and a code to confirm,
    the recovery codes (once), on (turn off with a code)."""

    setup_requested = Signal()
    enable_requested = Signal(str)  # the first code from the app
    disable_requested = Signal(str)  # a code from the app, or a recovery code

    def __init__(self, *, reason: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Two-factor sign-in")
        self.setObjectName("twoFactor")
        self.secret = ""
        self.uri = ""
        self.codes: list[str] = []
        self.reason = _label(reason, "notice")
        self.reason.setVisible(bool(reason))
        # The pages in one column, only the current one shown: a QStackedWidget would keep the height
        # of its tallest page (the recovery codes) for every page.
        self.pages = QWidget()
        self._pages = QVBoxLayout(self.pages)
        self._pages.setContentsMargins(0, 0, 0, 0)
        self._current: QWidget = self.pages

        self.checking = _label("Checking your account…")
        self._pages.addWidget(self.checking)

        # Off: what it is, and "Set up".
        off = QWidget()
        lay = QVBoxLayout(off)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(
            _label(
                "Two-factor sign-in is off. With it on, signing in (and confirming it is you before "
                "a command) needs a 6-digit code from an authenticator app on your phone (Aegis, "
                "Google Authenticator, 1Password, …) besides your password."
            )
        )
        self.setup_button = QPushButton("Set up two-factor sign-in…")
        self.setup_button.clicked.connect(self._setup)
        row = QHBoxLayout()
        row.addWidget(self.setup_button)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addStretch(1)
        self.off_page = off
        self._pages.addWidget(off)

        # Set up: the secret and the link, then a first code.
        setup = QWidget()
        lay = QVBoxLayout(setup)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(
            _label(
                "1. In your authenticator app, add an account with “Enter a setup key” and type or "
                "paste this key (time-based):"
            )
        )
        self.secret_edit = QLineEdit()
        self.secret_edit.setObjectName("totpSecret")
        self.secret_edit.setReadOnly(True)
        self.secret_edit.setFont(monospace())
        self.copy_secret = QPushButton("Copy")
        self.copy_secret.clicked.connect(lambda: _copy(self.secret))
        row = QHBoxLayout()
        row.addWidget(self.secret_edit, 1)
        row.addWidget(self.copy_secret)
        lay.addLayout(row)
        lay.addWidget(
            _label("Or give it this link (an app or password manager that takes otpauth:// links):")
        )
        self.uri_edit = QLineEdit()
        self.uri_edit.setObjectName("totpUri")
        self.uri_edit.setReadOnly(True)
        self.uri_edit.setFont(monospace())
        self.copy_uri = QPushButton("Copy link")
        self.copy_uri.clicked.connect(lambda: _copy(self.uri))
        row = QHBoxLayout()
        row.addWidget(self.uri_edit, 1)
        row.addWidget(self.copy_uri)
        lay.addLayout(row)
        lay.addWidget(_label("2. Enter the 6-digit code the app now shows for Server Manager:"))
        self.enable_code = code_edit("123456", "enableCode")
        self.enable_code.returnPressed.connect(self._enable)
        self.enable_button = QPushButton("Turn on")
        self.enable_button.clicked.connect(self._enable)
        row = QHBoxLayout()
        row.addWidget(self.enable_code)
        row.addWidget(self.enable_button)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addStretch(1)
        self.setup_page = setup
        self._pages.addWidget(setup)

        # Recovery codes: shown once.
        codes = QWidget()
        lay = QVBoxLayout(codes)
        lay.setContentsMargins(0, 0, 0, 0)
        self.codes_notice = _label(
            "Two-factor sign-in is on. Store these recovery codes now, somewhere safe and apart "
            "from your phone (a password manager, or printed): they are shown only this once. "
            "Each one signs you in once when the app is not at hand.",
            "notice",
        )
        lay.addWidget(self.codes_notice)
        self.codes_text = QPlainTextEdit()
        self.codes_text.setObjectName("recoveryCodes")
        self.codes_text.setReadOnly(True)
        self.codes_text.setFont(monospace())
        self.codes_text.setMinimumHeight(120)
        lay.addWidget(self.codes_text, 1)
        self.copy_codes = QPushButton("Copy")
        self.copy_codes.clicked.connect(self._copy_codes)
        self.save_codes_button = QPushButton("Save to file…")
        self.save_codes_button.clicked.connect(self.ask_file)
        self.stored_box = QCheckBox("I have stored my recovery codes")
        row = QHBoxLayout()
        row.addWidget(self.copy_codes)
        row.addWidget(self.save_codes_button)
        row.addStretch(1)
        row.addWidget(self.stored_box)
        lay.addLayout(row)
        self.codes_page = codes
        self._pages.addWidget(codes)

        # On: turn it off with a code.
        on = QWidget()
        lay = QVBoxLayout(on)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(
            _label(
                "Two-factor sign-in is on: signing in needs your password and a code from your app "
                "(or one of your recovery codes). To turn it off, enter a code:"
            )
        )
        self.disable_code = code_edit("123456, or a recovery code", "disableCode")
        self.disable_code.returnPressed.connect(self._disable)
        self.disable_button = QPushButton("Turn off")
        self.disable_button.clicked.connect(self._disable)
        row = QHBoxLayout()
        row.addWidget(self.disable_code)
        row.addWidget(self.disable_button)
        row.addStretch(1)
        lay.addLayout(row)
        lay.addWidget(_label("Lost your phone and your codes? An admin can reset your two-factor sign-in."))
        lay.addStretch(1)
        self.on_page = on
        self._pages.addWidget(on)

        self.error = _label("", "error")
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.close_button = self.buttons.button(QDialogButtonBox.StandardButton.Close)
        self.buttons.rejected.connect(self.reject)
        self.stored_box.toggled.connect(lambda _on: self._update_close())
        layout = QVBoxLayout(self)
        layout.addWidget(self.reason)
        layout.addWidget(self.pages, 1)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self.file_dialog: QFileDialog | None = None
        self.setMinimumWidth(620)
        self._go(self.checking)

    # ------------------------------------------------------------ what the controller says

    @property
    def page(self) -> str:
        names = ("checking", "off", "setup", "codes", "on")
        return names[self._pages.indexOf(self._current)]

    def show_off(self) -> None:
        self._go(self.off_page)
        self.setup_button.setFocus()

    def show_setup(self, secret: str, uri: str) -> None:
        self.secret, self.uri = secret, uri
        self.secret_edit.setText(grouped(secret))
        self.uri_edit.setText(uri)
        self.uri_edit.setCursorPosition(0)
        self.enable_code.clear()
        self._go(self.setup_page)
        self.enable_code.setFocus()

    def show_codes(self, codes: list[str]) -> None:
        self.codes = list(codes)
        self.codes_text.setPlainText("\n".join(codes))
        self.stored_box.setChecked(False)
        self._go(self.codes_page)

    def show_on(self) -> None:
        self.disable_code.clear()
        self._go(self.on_page)
        self.disable_code.setFocus()

    def show_error(self, message: str) -> None:
        self.set_busy(False)
        self.error.setText(message)
        self.error.setVisible(bool(message))

    def set_busy(self, busy: bool) -> None:
        for button in (self.setup_button, self.enable_button, self.disable_button):
            button.setEnabled(not busy)
        if busy:
            self.error.hide()

    # ------------------------------------------------------------ behaviour

    def _go(self, page: QWidget) -> None:
        self.show_error("")
        for i in range(self._pages.count()):
            item = self._pages.itemAt(i)
            other = item.widget() if item is not None else None
            if other is not None:
                other.setVisible(other is page)
        self._current = page
        self._update_close()
        self.adjustSize()  # each page as tall as it needs

    def _update_close(self) -> None:
        # Leaving the codes unstored is allowed (Escape, the title bar), but Close says it plainly.
        on_codes = self._current is self.codes_page
        self.close_button.setText("Done" if on_codes else "Close")
        self.close_button.setEnabled(not on_codes or self.stored_box.isChecked())

    def _setup(self) -> None:
        self.set_busy(True)
        self.setup_requested.emit()

    def _enable(self) -> None:
        code = self.enable_code.text().strip().replace(" ", "")
        if not (len(code) == 6 and code.isdigit()):
            self.show_error("Enter the 6 digits the app shows.")
            return
        self.set_busy(True)
        self.enable_requested.emit(code)

    def _disable(self) -> None:
        code = self.disable_code.text().strip()
        if len(code.replace(" ", "")) < 6:
            self.show_error("Enter the 6 digits the app shows, or one of your recovery codes.")
            return
        self.set_busy(True)
        self.disable_requested.emit(code)

    def codes_text_for_file(self) -> str:
        return (
            "Server Manager recovery codes. Each signs in once in place of the authenticator's code.\n\n"
            + "\n".join(self.codes)
            + "\n"
        )

    def _copy_codes(self) -> None:
        _copy("\n".join(self.codes))

    def ask_file(self) -> QFileDialog:
        """A save dialog (not exec()'d); the chosen file gets the codes."""
        dialog = QFileDialog(
            self, "Save recovery codes", str(Path.home() / "server-manager-recovery-codes.txt")
        )
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setNameFilter("Text files (*.txt)")
        dialog.fileSelected.connect(lambda path: self.save_codes(Path(path)))
        self.file_dialog = dialog
        dialog.open()
        return dialog

    def save_codes(self, path: Path) -> bool:
        """Write the codes to a file only its owner can read."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.codes_text_for_file())
        except OSError as exc:
            self.show_error(f"Could not save the codes to {path}: {exc.strerror or exc}.")
            return False
        self.show_error("")
        self.stored_box.setText(f"I have stored my recovery codes (saved to {path.name})")
        self.stored_box.setChecked(True)
        return True


class StepUpDialog(QDialog):
    """Confirm it's you: the password, or (two-factor users) the app's code or a recovery code.
    Emits ("password" | "code", what was typed)."""

    submitted = Signal(str, str)

    def __init__(self, user: str, *, totp: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Confirm it's you")
        self.setObjectName("stepUp")
        self.kind = "code" if totp else "password"
        ask = (
            "enter the 6-digit code from your authenticator app (or one of your recovery codes)"
            if totp
            else "enter your password"
        )
        self.message = _label(
            f"Commands and service actions run on your servers: they need a recent confirmation "
            f"that it is really you ({user}) at the keyboard. To go on, {ask}."
        )
        if totp:
            self.secret = code_edit("123456, or a recovery code", "stepUpSecret")
        else:
            self.secret = QLineEdit()
            self.secret.setObjectName("stepUpSecret")
            self.secret.setEchoMode(QLineEdit.EchoMode.Password)
        form = QFormLayout()
        form.addRow("Code" if totp else "Password", self.secret)
        self.error = _label("", "error")
        self.error.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.confirm_button = self.buttons.addButton("Confirm", QDialogButtonBox.ButtonRole.AcceptRole)
        self.confirm_button.setDefault(True)
        self.buttons.accepted.connect(self._submit)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.message)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(440)
        self.secret.setFocus()

    def _submit(self) -> None:
        value = self.secret.text() if self.kind == "password" else self.secret.text().strip()
        if not value:
            self.show_error("Enter your password." if self.kind == "password" else "Enter the code.")
            return
        if self.kind == "code" and len(value.replace(" ", "")) < 6:
            self.show_error("A code has 6 digits; a recovery code looks like 3f9a-c2e1.")
            return
        self.set_busy(True)
        self.submitted.emit(self.kind, value)

    def show_error(self, message: str) -> None:
        self.set_busy(False)
        self.error.setText(message)
        self.error.setVisible(bool(message))
        if message:
            self.secret.selectAll()
            self.secret.setFocus()

    def set_busy(self, busy: bool) -> None:
        self.confirm_button.setEnabled(not busy)
        self.confirm_button.setText("Checking…" if busy else "Confirm")
        if busy:
            self.error.hide()
