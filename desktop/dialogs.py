"""Dialogs: connection (profiles and sign-in), settings (generated from the schema), node editing.

They are dumb: they emit what the user asked for and show what they are told. Nothing here
talks to the network, and none of them is run with exec(), which would nest a Qt event loop
inside the asyncio one.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import protocol as p
from servermanager.desktop.net.rest import normalize_url
from servermanager.desktop.settings import Profile, Settings

NEW_PROFILE = "New profile…"
_TAG = re.compile(r"^[A-Za-z0-9_.:/-]{1,32}$")


class ConnectionDialog(QDialog):
    """Pick or create a profile (name + core URL) and sign in with a password or an API token; a
    user with two-factor sign-in is asked for the code when the core says so (`ask_code`)."""

    submitted = Signal(object, str, bool, bool, str)  # Profile, secret, remember, session_only, code
    profile_deleted = Signal(str)

    def __init__(
        self,
        profiles: list[Profile],
        *,
        selected: str | None = None,
        keyring_ok: bool = True,
        keyring_reason: str = "",
        message: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Connect to a core")
        self.setMinimumWidth(460)
        self._profiles = {prof.name: prof for prof in profiles}
        self.keyring_ok = keyring_ok

        self.profile_box = QComboBox()
        self.profile_box.addItems([*self._profiles, NEW_PROFILE])
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Forget this profile and its kept sign-in")
        self.delete_button.clicked.connect(self._delete)
        top = QHBoxLayout()
        top.addWidget(self.profile_box, 1)
        top.addWidget(self.delete_button)

        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("e.g. Production")
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("https://core.example:8760")
        self.password_radio = QRadioButton("User name and password")
        self.token_radio = QRadioButton("API token")
        self.password_radio.setChecked(True)
        self._method = QButtonGroup(self)
        self._method.addButton(self.password_radio)
        self._method.addButton(self.token_radio)
        method = QHBoxLayout()
        method.addWidget(self.password_radio)
        method.addWidget(self.token_radio)
        method.addStretch(1)
        self.user_edit = QLineEdit()
        self.password_edit = QLineEdit()
        self.password_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("smt_…")
        self.code_edit = QLineEdit()
        self.code_edit.setObjectName("otp")
        self.code_edit.setPlaceholderText("123456, or a recovery code")
        self.code_edit.setMaxLength(32)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.code_edit.setFont(mono)

        form = QFormLayout()
        form.addRow("Profile name", self.name_edit)
        form.addRow("Core address", self.url_edit)
        form.addRow("Sign in with", method)
        form.addRow("User name", self.user_edit)
        form.addRow("Password", self.password_edit)
        form.addRow("API token", self.token_edit)
        form.addRow("Two-factor code", self.code_edit)
        self._form = form
        self._form.setRowVisible(self.code_edit, False)

        self.remember_box = QCheckBox("Stay signed in on this computer")
        self.remember_box.setChecked(True)
        self.session_box = QCheckBox("Keep my sign-in for this session only")
        self.notice = QLabel()
        self.notice.setObjectName("notice")
        self.notice.setWordWrap(True)
        if keyring_ok:
            self.notice.hide()
            self.session_box.hide()
        else:
            # Say it plainly and offer the one thing that still works: remembering until quit.
            self.notice.setText(keyring_reason)
            self.remember_box.hide()
            self.remember_box.setChecked(False)
            self.session_box.setChecked(True)

        self.error = QLabel(message)
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.setVisible(bool(message))

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.connect_button = self.buttons.addButton("Connect", QDialogButtonBox.ButtonRole.AcceptRole)
        self.connect_button.setDefault(True)
        self.buttons.accepted.connect(self._submit)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(form)
        layout.addWidget(self.remember_box)
        layout.addWidget(self.notice)
        layout.addWidget(self.session_box)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

        self.profile_box.currentTextChanged.connect(self._load_profile)
        self.password_radio.toggled.connect(self._method_changed)
        if selected in self._profiles:
            self.profile_box.setCurrentText(selected)
        elif selected:
            self.profile_box.setCurrentText(NEW_PROFILE)
        self._load_profile(self.profile_box.currentText())
        if selected and selected not in self._profiles:
            self.url_edit.setText(selected)
            self.name_edit.setText(urlsplit(normalize_url(selected)).netloc or selected)

    # ------------------------------------------------------------ behaviour

    def _load_profile(self, name: str) -> None:
        prof = self._profiles.get(name)
        self.delete_button.setEnabled(prof is not None)
        if prof is None:
            self.name_edit.clear()
            self.url_edit.clear()
            self.user_edit.setText("admin")
            self.password_radio.setChecked(True)
        else:
            self.name_edit.setText(prof.name)
            self.url_edit.setText(prof.url)
            self.user_edit.setText(prof.username)
            (self.token_radio if prof.auth == "token" else self.password_radio).setChecked(True)
            if self.keyring_ok:
                self.remember_box.setChecked(prof.remember)
        self.password_edit.clear()
        self.token_edit.clear()
        self._forget_code()
        self._method_changed()

    def ask_code(self, message: str) -> None:
        """The password was right and the user has two-factor sign-in: ask for the code too."""
        self.set_busy(False)
        self._form.setRowVisible(self.code_edit, True)
        self.code_edit.clear()
        self.code_edit.setFocus()
        self.error.setText(message)
        self.error.setVisible(bool(message))
        # Room for the new row and the message, or the fields are squeezed to half their height.
        self.resize(self.width(), max(self.height(), self.sizeHint().height()))

    def _forget_code(self) -> None:
        self.code_edit.clear()
        self._form.setRowVisible(self.code_edit, False)

    @property
    def asks_code(self) -> bool:
        return self.code_edit.isVisibleTo(self)

    def _method_changed(self) -> None:
        by_password = self.password_radio.isChecked()
        for widget, visible in (
            (self.user_edit, by_password),
            (self.password_edit, by_password),
            (self.token_edit, not by_password),
        ):
            widget.setVisible(visible)
            label = self._form.labelForField(widget)
            if label is not None:
                label.setVisible(visible)
        if not by_password:
            self._forget_code()
        (self.password_edit if by_password else self.token_edit).setFocus()

    def _delete(self) -> None:
        name = self.profile_box.currentText()
        if name in self._profiles:
            del self._profiles[name]
            self.profile_box.removeItem(self.profile_box.currentIndex())
            self.profile_deleted.emit(name)

    def profile(self) -> Profile:
        url = normalize_url(self.url_edit.text())
        name = self.name_edit.text().strip() or urlsplit(url).netloc or url
        stored = self._profiles.get(self.profile_box.currentText())
        return Profile(
            name=name,
            url=url,
            auth="password" if self.password_radio.isChecked() else "token",
            username=self.user_edit.text().strip(),
            remember=self.remember_box.isChecked(),
            # A trusted certificate stays with its core: another address is another core.
            fingerprint=stored.fingerprint if stored is not None and stored.url == url else "",
        )

    def _submit(self) -> None:
        prof = self.profile()
        secret = self.password_edit.text() if prof.auth == "password" else self.token_edit.text().strip()
        problem = None
        if not prof.url:
            problem = "Enter the core's address, e.g. https://core.example:8760."
        elif prof.auth == "password" and not prof.username:
            problem = "Enter your user name."
        elif not secret:
            problem = "Enter your password." if prof.auth == "password" else "Paste your API token."
        code = self.code_edit.text().strip() if prof.auth == "password" and self.asks_code else ""
        if not problem and self.asks_code and prof.auth == "password" and len(code.replace(" ", "")) < 6:
            problem = "Enter the code from your authenticator app (6 digits) or a recovery code."
        if problem:
            self.show_error(problem)
            return
        self.set_busy(True)
        self.submitted.emit(prof, secret, self.remember_box.isChecked(), self.session_box.isChecked(), code)

    def show_error(self, message: str) -> None:
        self.set_busy(False)
        self.error.setText(message)
        self.error.setVisible(bool(message))

    def set_busy(self, busy: bool) -> None:
        self.connect_button.setEnabled(not busy)
        self.connect_button.setText("Connecting…" if busy else "Connect")
        if busy:
            self.error.hide()


class CertificateDialog(QDialog):
    """Trust a core's certificate: on first use (nothing vouches for it), or a changed one (a warning).

    Shows the fingerprint to compare with what `servermanager admin fingerprint` prints on the core.
    A changed certificate is trusted only after the user ticks that they compared it.
    """

    trusted = Signal(str)  # the fingerprint the user chose to trust

    def __init__(
        self,
        url: str,
        presented: str,
        *,
        expected: str | None = None,
        reason: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.presented = presented
        self.changed = expected is not None
        host = urlsplit(url).netloc or url
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)

        def fingerprint_label(text: str, name: str) -> QLabel:
            label = QLabel(text)
            label.setObjectName(name)
            label.setFont(mono)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            return label

        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.confirm_box: QCheckBox | None = None
        layout = QVBoxLayout(self)
        self.buttons = QDialogButtonBox()
        if not self.changed:
            self.setWindowTitle("Trust this core's certificate?")
            self.message.setText(
                f"This is the first connection to {host} over HTTPS, and no authority this computer knows "
                f"vouches for its certificate ({reason or 'it is self-signed'}). A core makes such a "
                "certificate for itself on its first start.\n\n"
                "Compare this fingerprint with what `servermanager admin fingerprint` prints on the core "
                "(or its start-up log). If they match, trust it: this profile then accepts only this "
                "certificate from the core, and warns you if it ever changes."
            )
            layout.addWidget(self.message)
            layout.addWidget(fingerprint_label(presented, "presented"))
            self.trust_button = self.buttons.addButton(
                "Trust and connect", QDialogButtonBox.ButtonRole.AcceptRole
            )
            cancel = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
            cancel.setDefault(True)
        else:
            self.setWindowTitle("The core's certificate has changed")
            self.message.setObjectName("warning")
            self.message.setText(
                f"Warning: {host} presented a different certificate from the one this profile trusts. "
                "Nothing was sent to it: no password, no token.\n\n"
                "Either someone is intercepting the connection and posing as the core (on this network "
                "or on the way), or the core's certificate was replaced: its data dir was reset or "
                "restored without its certificate, or its admin installed a new one.\n\n"
                "Ask the core's admin, or look yourself: `servermanager admin fingerprint` on the core "
                "prints its certificate. Trust the new one only if it matches what is presented now."
            )
            layout.addWidget(self.message)
            form = QFormLayout()
            form.addRow("Trusted until now", fingerprint_label(expected or "", "expected"))
            form.addRow("Presented now", fingerprint_label(presented, "presented"))
            layout.addLayout(form)
            self.confirm_box = QCheckBox(
                "I compared the presented fingerprint with the core's, and they match"
            )
            layout.addWidget(self.confirm_box)
            cancel = self.buttons.addButton("Don't connect", QDialogButtonBox.ButtonRole.RejectRole)
            cancel.setDefault(True)
            self.trust_button = self.buttons.addButton(
                "Trust the new certificate", QDialogButtonBox.ButtonRole.AcceptRole
            )
            self.trust_button.setEnabled(False)
            self.confirm_box.toggled.connect(self.trust_button.setEnabled)
        self.trust_button.setAutoDefault(False)
        self.buttons.accepted.connect(self._trust)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(640)

    def _trust(self) -> None:
        if self.confirm_box is not None and not self.confirm_box.isChecked():
            return
        self.trusted.emit(self.presented)
        self.accept()


class SettingsDialog(QDialog):
    """One row per schema entry; every change applies at once (the theme switches live)."""

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        self.editors: dict[str, QWidget] = {}
        form = QFormLayout()
        for spec in settings.schema():
            value = settings.get(spec.key)
            editor: QWidget
            if spec.choices:
                combo = QComboBox()
                for choice, label in spec.choices:
                    combo.addItem(label, choice)
                combo.setCurrentIndex(max(0, combo.findData(value)))
                combo.currentIndexChanged.connect(
                    lambda _i, k=spec.key, c=combo: self._set(k, c.currentData())
                )
                editor = combo
                form.addRow(spec.description, editor)
            elif spec.type is bool:
                box = QCheckBox(spec.description)
                box.setChecked(bool(value))
                box.toggled.connect(lambda on, k=spec.key: self._set(k, on))
                editor = box
                form.addRow(editor)
            else:
                line = QLineEdit(str(value))
                line.editingFinished.connect(lambda k=spec.key, e=line: self._set(k, e.text()))
                editor = line
                form.addRow(spec.description, editor)
            editor.setObjectName(f"setting_{spec.key}")
            self.editors[spec.key] = editor
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Close | QDialogButtonBox.StandardButton.RestoreDefaults
        )
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults).clicked.connect(self._defaults)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)
        settings.changed.connect(self._show)

    def _set(self, key: str, value: Any) -> None:
        self.settings.set(key, value)

    def _defaults(self) -> None:
        self.settings.reset()

    def _show(self, key: str, value: Any) -> None:
        editor = self.editors.get(key)
        if isinstance(editor, QComboBox):
            editor.setCurrentIndex(max(0, editor.findData(value)))
        elif isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, QLineEdit):
            editor.setText(str(value))


def parse_tags(text: str) -> list[str]:
    return sorted({t for t in re.split(r"[,\s]+", text) if t})


def bad_tags(tags: list[str]) -> list[str]:
    """The tags the core would refuse."""
    return [t for t in tags if not _TAG.match(t)]


class EditNodeDialog(QDialog):
    """Rename a node, move it to another group and set its tags."""

    submitted = Signal(int, str, str, list)  # node id, name, group, tags

    def __init__(self, node: p.NodeInfo, groups: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.node_id = node.id
        self.setWindowTitle(f"Edit {node.name}")
        self.name_edit = QLineEdit(node.name)
        self.group_box = QComboBox()
        self.group_box.setEditable(True)
        self.group_box.addItems(["", *groups])
        self.group_box.setCurrentText(node.group)
        line = self.group_box.lineEdit()
        if line is not None:
            line.setPlaceholderText("no group")
        self.tags_edit = QLineEdit(", ".join(node.tags))
        self.tags_edit.setPlaceholderText("e.g. web, eu-west")
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.hide()
        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        form.addRow("Group", self.group_box)
        form.addRow("Tags", self.tags_edit)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self._submit)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(buttons)

    def _submit(self) -> None:
        name = self.name_edit.text().strip()
        tags = parse_tags(self.tags_edit.text())
        bad = [t for t in tags if not _TAG.match(t)]
        if not name:
            self.show_error("A node needs a name.")
        elif bad:
            self.show_error(f"Tags may hold letters, digits and _ . : / - only: {', '.join(bad)}")
        else:
            self.submitted.emit(self.node_id, name, self.group_box.currentText().strip(), tags)

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))
