"""Add server (admins): a fresh enrollment token and the one line that installs and enrolls an agent with it."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import rest as m
from servermanager.desktop.account import monospace
from servermanager.desktop.format import fmt_time

TTLS = (
    ("15 minutes", 900.0),
    ("1 hour", 3600.0),
    ("4 hours", 4 * 3600.0),
    ("1 day", 86400.0),
    ("7 days", 7 * 86400.0),
)


@dataclass(frozen=True)
class InstallRequest:
    ttl: float
    uses: int
    core_url: str | None  # None: the address the core is reached at


class AddServerDialog(QDialog):
    """Pick how long the token lives (and for how many servers), then copy the Linux or Windows line.

    Emits `requested` with an InstallRequest; whoever owns it answers with show_command or show_error.
    """

    requested = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add server")
        intro = QLabel(
            "Run one line on the new server: it downloads the agent from this core, checks it, installs "
            "it as a service and enrolls it. Each line carries a new enrollment token: treat it as a "
            "password until it is used or expires."
        )
        intro.setWordWrap(True)
        self.ttl = QComboBox()
        for label, seconds in TTLS:
            self.ttl.addItem(label, seconds)
        self.ttl.setCurrentIndex(1)
        self.uses = QSpinBox()
        self.uses.setRange(1, 1000)
        self.uses.setSuffix(" server(s)")
        self.core_url = QLineEdit()
        self.core_url.setPlaceholderText("default: the address this app reaches the core at")
        self.make_button = QPushButton("Make the install line")
        self.make_button.setDefault(True)
        self.make_button.clicked.connect(self._request)
        form = QFormLayout()
        form.addRow("Valid for", self.ttl)
        form.addRow("Enrolls up to", self.uses)
        form.addRow("Core address", self.core_url)

        self.linux, self.copy_linux = self._line("linuxLine")
        self.windows, self.copy_windows = self._line("windowsLine")
        self.expires = QLabel()
        self.pin = QLabel()
        self.pin.setObjectName("pin")
        self.pin.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.pin.setWordWrap(True)
        result = QFormLayout()
        result.addRow("Linux (as a user who may sudo)", self._with_copy(self.linux, self.copy_linux))
        result.addRow("Windows (elevated PowerShell)", self._with_copy(self.windows, self.copy_windows))
        result.addRow("Expires", self.expires)
        result.addRow("Certificate", self.pin)
        self.output = QWidget()
        self.output.setLayout(result)
        self.output.hide()

        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.error.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.make_button)
        layout.addWidget(self.output)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        # Closed, it forgets the line: reopened later, it shows no token that may be spent or expired.
        self.finished.connect(lambda _r: self.clear())
        self.resize(760, self.sizeHint().height())

    def _line(self, name: str) -> tuple[QLineEdit, QPushButton]:
        edit = QLineEdit()
        edit.setObjectName(name)
        edit.setReadOnly(True)
        edit.setFont(monospace())
        button = QPushButton("Copy")
        button.clicked.connect(lambda: QGuiApplication.clipboard().setText(edit.text()))
        return edit, button

    @staticmethod
    def _with_copy(edit: QLineEdit, button: QPushButton) -> QWidget:
        row = QWidget()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(edit, 1)
        lay.addWidget(button)
        return row

    def _request(self) -> None:
        self.show_error("")
        self.make_button.setEnabled(False)
        url = self.core_url.text().strip()
        self.requested.emit(InstallRequest(float(self.ttl.currentData()), self.uses.value(), url or None))

    def show_command(self, cmd: m.InstallCommand) -> None:
        self.make_button.setEnabled(True)
        self.linux.setText(cmd.linux)
        self.windows.setText(cmd.windows)
        for edit in (self.linux, self.windows):
            edit.setCursorPosition(0)
        servers = "one server" if cmd.uses == 1 else f"up to {cmd.uses} servers"
        self.expires.setText(
            f"{fmt_time(cmd.expires_at)}, or once it enrolled {servers} (token {cmd.token_id})"
        )
        self.pin.setText(
            f"{cmd.fingerprint} — both lines check that the core at {cmd.core_url} presents it"
            if cmd.fingerprint
            else f"none: {cmd.core_url} is plain HTTP, so the token crosses the network unencrypted"
        )
        self.output.show()

    def show_error(self, message: str) -> None:
        self.make_button.setEnabled(True)
        self.error.setText(message)
        self.error.setVisible(bool(message))

    def clear(self) -> None:
        for edit in (self.linux, self.windows):
            edit.clear()
        self.expires.clear()
        self.pin.clear()
        self.output.hide()
        self.show_error("")
