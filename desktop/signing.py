"""The operator's signing key: an Ed25519 pair made on first use, its private half only in the OS keyring.

Every command and service request the app sends is signed with it, once per target node
(common.signing says over what). An agent that lists the public key in its [exec] trusted keys runs
what this app signs; the core only relays the signatures and can make none. The key is the same
for every connection profile: it is the operator's, not the core's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import getpass
import logging
import socket

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import protocol as p
from servermanager.common import signing
from servermanager.desktop.secrets import Kept, SecretsError, TokenStore

log = logging.getLogger(__name__)

ACCOUNT = "operator-signing-key"  # the keyring entry, beside the sign-in tokens
_PREFIX = "ed25519-seed:"  # what the entry holds: this and the base64 of the 32-byte private key


def default_comment() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "operator"
    return f"{user}@{socket.gethostname()} (desktop)"


class OperatorKey(QObject):
    """Loads the key from the keyring, or makes and stores one; signs requests with it.

    Where the OS has no keyring the key is kept for this session only (`kept` says so), and agents
    would need the next session's key added again.
    """

    ready = Signal(str)  # the public key line, once the key is loaded or made

    def __init__(
        self, secrets: TokenStore, comment: str | None = None, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.secrets = secrets
        self.comment = comment or default_comment()
        self.kept: Kept | None = None
        self._key: Ed25519PrivateKey | None = None
        self._lock = asyncio.Lock()

    async def key(self) -> Ed25519PrivateKey:
        async with self._lock:
            if self._key is None:
                self._key = await self._load() or await self._make()
                self.ready.emit(self.public_line())
            return self._key

    async def _load(self) -> Ed25519PrivateKey | None:
        stored = await self.secrets.load(ACCOUNT)
        if stored is None:
            return None
        try:
            if not stored.startswith(_PREFIX):
                raise ValueError("unknown format")
            key = Ed25519PrivateKey.from_private_bytes(
                base64.b64decode(stored[len(_PREFIX) :], validate=True)
            )
        except (ValueError, binascii.Error) as exc:
            log.warning("the signing key in the keyring is unreadable (%s); making a new one", exc)
            return None
        self.kept = Kept.SESSION if self.secrets.where(ACCOUNT) == Kept.SESSION else Kept.KEYRING
        return key

    async def _make(self) -> Ed25519PrivateKey:
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        value = _PREFIX + base64.b64encode(seed).decode()
        try:
            self.kept = await self.secrets.save(ACCOUNT, value)
        except SecretsError as exc:
            log.warning("signing key kept for this session only: %s", exc)
            self.kept = await self.secrets.save(ACCOUNT, value, session_only=True)
        log.info("made a signing key %s, kept in the %s", self.key_id_of(key), self.kept.value)
        return key

    @staticmethod
    def key_id_of(key: Ed25519PrivateKey) -> str:
        return signing.key_id(_raw(key))

    @property
    def loaded(self) -> bool:
        return self._key is not None

    def public_line(self) -> str:
        """The line for an agent's [exec] trusted_keys; the key must be loaded (await key())."""
        assert self._key is not None, "await key() first"
        return signing.public_key_line(_raw(self._key), self.comment)

    def key_id(self) -> str:
        assert self._key is not None, "await key() first"
        return self.key_id_of(self._key)

    async def sign(
        self, cmd: p.Command, node_ids: list[int], lifetime: float = signing.DEFAULT_LIFETIME
    ) -> dict[int, p.CommandSignature]:
        """`cmd` signed for each node, each with its own nonce."""
        key = await self.key()
        kid = self.key_id_of(key)
        out = {}
        for node_id in node_ids:
            block = signing.signature_block(node_id, kid, lifetime=lifetime)
            sig = key.sign(signing.signed_bytes(cmd, block))
            out[node_id] = msgspec.structs.replace(block, sig=signing.encode_sig(sig))
        return out


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def trust_instruction(line: str) -> str:
    return (
        "Agents run only what a key in their [exec] trusted keys signed, once they list any. "
        "To let this app run commands on a server, add this line to the agent's config "
        f'(/etc/servermanager/agent.toml):\n\n[exec]\ntrusted_keys = ["{line}"]\n\n'
        "or as a line of its trusted_keys_file, then restart the agent (the file is re-read by itself)."
    )


class SigningKeyDialog(QDialog):
    """Shows the public key line, with Copy and the one step that makes an agent trust it."""

    def __init__(self, line: str, key_id: str, kept: Kept | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Signing key")
        self.line = QLineEdit(line)
        self.line.setObjectName("publicKey")
        self.line.setReadOnly(True)
        self.line.setCursorPosition(0)
        self.copy_button = QPushButton("Copy")
        self.copy_button.clicked.connect(self.copy)
        where = (
            "Its private half is kept in the system keyring and never leaves this computer."
            if kept == Kept.KEYRING
            else "This system has no keyring, so the key is kept for this session only: "
            "the next session makes a new one, which agents must trust again."
        )
        intro = QLabel(f"Commands and service actions you send are signed with key {key_id}. {where}")
        intro.setWordWrap(True)
        self.instruction = QLabel(trust_instruction(line))
        self.instruction.setObjectName("trustInstruction")
        self.instruction.setWordWrap(True)
        self.instruction.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.line)
        layout.addWidget(self.copy_button)
        layout.addWidget(self.instruction)
        layout.addWidget(buttons)
        self.resize(640, self.sizeHint().height())

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.line.text())
