"""Signing in and out of a profile: the session's tokens, where they are kept, and starting live updates."""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

from servermanager.desktop.aio import Aio
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.live import LiveLink
from servermanager.desktop.net.rest import RestClient, Session
from servermanager.desktop.secrets import Kept, SecretsError, TokenStore
from servermanager.desktop.settings import Profile, Profiles

log = logging.getLogger(__name__)


class SignIn(QObject):
    """Owns the sign-in flow; the window and dialogs call it and listen to its signals."""

    signed_in = Signal(object)  # Session
    signed_out = Signal()
    warning = Signal(str)  # signed in, but something the user should know (token not saved)
    needs_login = Signal(str)  # the session is gone; ask again, with this reason

    def __init__(
        self, rest: RestClient, live: LiveLink, secrets: TokenStore, profiles: Profiles, aio: Aio
    ) -> None:
        super().__init__()
        self.rest = rest
        self.live = live
        self.secrets = secrets
        self.profiles = profiles
        self.aio = aio
        self.profile: Profile | None = None
        self.kept = Kept.NOWHERE
        # Whether signing in makes this profile the one the app opens on next time; False for the
        # extra cores of a window that shows several.
        self.remember_last = True
        rest.refresh_token_rotated.connect(self._rotated)
        rest.session_expired.connect(self._expired)

    async def sign_in(
        self,
        profile: Profile,
        secret: str,
        *,
        remember: bool = True,
        session_only: bool = False,
        otp: str | None = None,
    ) -> Session:
        """Sign in with a password or an API token (profile.auth says which).

        remember: keep the token between runs (OS keyring). session_only: keep it in memory for
        this run only, which is what is left when the system has no keyring. otp: the two-factor
        code (or a recovery code) of a user who has it; without one such a user's sign-in raises
        CoreError("otp_required"), and nothing changes.
        """
        pin = profile.fingerprint or None
        if profile.auth == "token":
            session = await self.rest.login_token(profile.url, secret.strip(), pin=pin)
        else:
            device = await self.secrets.load(profile.device_key)
            session = await self.rest.login(profile.url, profile.username, secret, device, pin=pin, otp=otp)
            if session.device_token and session.device_token != device:
                await self._keep_device(profile, session.device_token)
        # Only now, with the new session in hand: a failed attempt leaves the current one running.
        await self._leave_current()
        profile.url = session.url
        profile.remember = remember
        self.profile = profile
        self.profiles.upsert(profile)
        if self.remember_last:
            self.profiles.last = profile.name
        token = session.access_token if session.is_api_token else session.refresh_token
        assert token is not None
        self.kept = Kept.NOWHERE
        if remember or session_only:
            try:
                self.kept = await self.secrets.save(
                    profile.secret_key, token, session_only=session_only or not remember
                )
            except SecretsError as exc:
                self.warning.emit(f"Signed in, but your sign-in will not be remembered: {exc}")
        self.live.start()
        self.signed_in.emit(session)
        return session

    async def resume(self, profile: Profile) -> Session | None:
        """Sign in silently with the token kept for this profile; None when there is none.

        A token the core refuses is forgotten; an unreachable core raises and keeps it.
        """
        token = await self.secrets.load(profile.secret_key)
        if not token:
            return None
        kept_before = Kept.SESSION if self.secrets.where(profile.secret_key) == Kept.SESSION else Kept.KEYRING
        try:
            pin = profile.fingerprint or None
            if profile.auth == "token":
                session = await self.rest.login_token(profile.url, token, pin=pin)
            else:
                session = await self.rest.resume(profile.url, token, profile.username, pin=pin)
        except CoreError as exc:
            if exc.kind in ("bad_token", "session_expired", "bad_credentials"):
                log.info("the kept token for %s was refused; forgetting it", profile.name)
                await self._forget(profile)
                return None
            raise
        await self._leave_current()
        self.profile = profile
        self.kept = kept_before
        if self.remember_last:
            self.profiles.last = profile.name
        if session.refresh_token is not None:
            # Resuming spent the kept refresh token; keep its successor in the same place.
            await self._keep(profile, session.refresh_token)
        self.live.start()
        self.signed_in.emit(session)
        return session

    def trust(self, profile: Profile, fingerprint: str) -> None:
        """The user trusts this certificate for the profile's core: pin it, in the saved profile too,
        and in the running session when it is this profile's."""
        profile.fingerprint = fingerprint
        if self.profiles.get(profile.name) is not None:
            self.profiles.upsert(profile)
        session = self.rest.session
        if session is not None and self.profile is not None and self.profile.name == profile.name:
            self.profile.fingerprint = fingerprint
            self.rest.set_pin(fingerprint)
        log.info("pinned the certificate of %s: %s", profile.url, fingerprint)

    async def _keep(self, profile: Profile, token: str) -> None:
        try:
            await self.secrets.save(profile.secret_key, token, session_only=self.kept == Kept.SESSION)
        except SecretsError as exc:
            self.warning.emit(f"Your sign-in will not be remembered: {exc}")

    async def _keep_device(self, profile: Profile, token: str) -> None:
        # Kept even when the sign-in is not remembered: it grants nothing, it only keeps this device
        # signing in while someone else's failed guesses lock out the address.
        try:
            await self.secrets.save(profile.device_key, token, session_only=not self.secrets.persistent)
        except SecretsError as exc:
            log.info("device token not kept: %s", exc)

    async def sign_out(self) -> None:
        """Revoke the tokens on the core and delete the kept one: signing out means forgetting."""
        profile = self.profile
        await self.live.stop(idle=True)
        await self.rest.logout()
        if profile is not None:
            await self._forget(profile)
        self.profile = None
        self.kept = Kept.NOWHERE
        self.signed_out.emit()

    async def _leave_current(self) -> None:
        """Stop the previous session's live link (a no-op on first sign-in)."""
        await self.live.stop()

    async def _forget(self, profile: Profile) -> None:
        try:
            await self.secrets.delete(profile.secret_key)
        except SecretsError as exc:
            self.warning.emit(str(exc))

    def _rotated(self, refresh_token: str) -> None:
        """Refresh tokens work once: the kept copy must follow every rotation."""
        profile = self.profile
        if profile is None or self.kept == Kept.NOWHERE:
            return
        self.aio.spawn(self._keep(profile, refresh_token), "store-rotated-token")

    def _expired(self, message: str) -> None:
        profile = self.profile
        if profile is not None:
            self.aio.spawn(self._forget(profile), "forget-expired-token")
        self.signed_out.emit()
        self.needs_login.emit(message)
