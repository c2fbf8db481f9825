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
    """Pick or create a profile (name + core URL) and sign in with a password or an API token."""

    submitted = Signal(object, str, bool, bool)  # Profile, secret, remember, session_only
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
        self.url_edit.setPlaceholderText("http://core.example:8760")
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

        form = QFormLayout()
        form.addRow("Profile name", self.name_edit)
        form.addRow("Core address", self.url_edit)
        form.addRow("Sign in with", method)
        form.addRow("User name", self.user_edit)
        form.addRow("Password", self.password_edit)
        form.addRow("API token", self.token_edit)
        self._form = form

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
        self._method_changed()

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
        return Profile(
            name=name,
            url=url,
            auth="password" if self.password_radio.isChecked() else "token",
            username=self.user_edit.text().strip(),
            remember=self.remember_box.isChecked(),
        )

    def _submit(self) -> None:
        prof = self.profile()
        secret = self.password_edit.text() if prof.auth == "password" else self.token_edit.text().strip()
        problem = None
        if not prof.url:
            problem = "Enter the core's address, e.g. http://core.example:8760."
        elif prof.auth == "password" and not prof.username:
            problem = "Enter your user name."
        elif not secret:
            problem = "Enter your password." if prof.auth == "password" else "Paste your API token."
        if problem:
            self.show_error(problem)
            return
        self.set_busy(True)
        self.submitted.emit(prof, secret, self.remember_box.isChecked(), self.session_box.isChecked())

    def show_error(self, message: str) -> None:
        self.set_busy(False)
        self.error.setText(message)
        self.error.setVisible(bool(message))

    def set_busy(self, busy: bool) -> None:
        self.connect_button.setEnabled(not busy)
        self.connect_button.setText("Connecting…" if busy else "Connect")
        if busy:
            self.error.hide()


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
