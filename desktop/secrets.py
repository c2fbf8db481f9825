"""Tokens in the OS keyring (never in QSettings), with a session-only fallback when there is none."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum

import keyring
import keyring.backends.fail
import keyring.backends.null
from keyring.backend import KeyringBackend
from keyring.errors import KeyringError, PasswordDeleteError

log = logging.getLogger(__name__)

SERVICE = "servermanager"


class SecretsError(Exception):
    """The keyring refused; the message is fit to show to the user as is."""


class Kept(StrEnum):
    """Where a token ended up."""

    KEYRING = "keyring"
    SESSION = "session"  # in memory until the app quits
    NOWHERE = "nowhere"


def _backend_usable(kr: KeyringBackend) -> bool:
    # The fail backend raises on every call and the null backend silently forgets: neither keeps a secret.
    if isinstance(kr, keyring.backends.fail.Keyring | keyring.backends.null.Keyring):
        return False
    backends = getattr(kr, "backends", None)  # the chainer: usable only if it chains something
    return backends is None or bool(backends)


class TokenStore:
    """Reads and writes tokens by account name. Keyring calls can block (a D-Bus unlock prompt),
    so they run in a worker thread and the GUI thread never waits on them."""

    def __init__(self, service: str = SERVICE) -> None:
        self.service = service
        self._session: dict[str, str] = {}

    @property
    def backend(self) -> KeyringBackend:
        return keyring.get_keyring()

    @property
    def persistent(self) -> bool:
        """True when the OS offers a keyring that keeps tokens between runs."""
        return _backend_usable(self.backend)

    def unavailable_reason(self) -> str:
        return (
            "This system has no keyring (secret store) that Server Manager can use, "
            "so it cannot remember your sign-in after you quit. "
            "Install and unlock a keyring such as GNOME Keyring or KWallet to stay signed in."
        )

    async def save(self, account: str, token: str, *, session_only: bool = False) -> Kept:
        """Keep the token in the keyring, or in memory when asked to (or when no keyring exists)."""
        if session_only:
            self._session[account] = token
            return Kept.SESSION
        if not self.persistent:
            raise SecretsError(self.unavailable_reason())
        try:
            await asyncio.to_thread(self.backend.set_password, self.service, account, token)
        except KeyringError as exc:
            raise SecretsError(f"The system keyring refused to store the token: {exc}") from None
        self._session.pop(account, None)
        return Kept.KEYRING

    async def load(self, account: str) -> str | None:
        if account in self._session:
            return self._session[account]
        if not self.persistent:
            return None
        try:
            return await asyncio.to_thread(self.backend.get_password, self.service, account)
        except KeyringError as exc:
            log.warning("keyring read failed for %s: %s", account, exc)
            return None

    async def delete(self, account: str) -> None:
        """Forget the token everywhere; a token that was never stored is not an error."""
        self._session.pop(account, None)
        if not self.persistent:
            return
        try:
            await asyncio.to_thread(self.backend.delete_password, self.service, account)
        except PasswordDeleteError:
            pass
        except KeyringError as exc:
            raise SecretsError(f"The system keyring refused to delete the token: {exc}") from None

    def where(self, account: str) -> Kept:
        """Whether a token is held in memory for this session (keyring contents need a load())."""
        return Kept.SESSION if account in self._session else Kept.NOWHERE
