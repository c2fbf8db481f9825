"""The account lifecycle: users' roles, disabling, deleting and passwords; tokens and sessions listed and revoked; TOTP two-factor and step-up."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from typing import Any

import pyotp

from servermanager.common import rest as m
from servermanager.core.auth import Principal, Role, Users, hash_password, verify_password
from servermanager.core.store.db import Database

ISSUER = "Server Manager"
RECOVERY_CODES = 10
# A TOTP code is good for its 30 s step and one step either side (clocks drift); each step once.
TOTP_WINDOW = 1


class AccountError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def token_id(h: bytes) -> str:
    """A token's public handle: the first 8 bytes of its hash, which reveal nothing of the secret."""
    return h[:8].hex()


def _code_hash(code: str) -> bytes:
    return hashlib.sha256(code.replace("-", "").strip().lower().encode()).digest()


class Accounts:
    def __init__(self, db: Database, users: Users) -> None:
        self.db = db
        self.users = users

    # ------------------------------------------------------------ users

    async def all(self) -> list[m.User]:
        rows = await self.db.fetchall(
            "SELECT id, name, role, created_at, disabled, must_change_password, totp_enabled FROM users ORDER BY id"
        )
        return [m.User(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5]), bool(r[6])) for r in rows]

    async def get(self, uid: int) -> m.User:
        for u in await self.all():
            if u.id == uid:
                return u
        raise AccountError(404, "not_found", "no such user")

    async def by_name(self, name: str) -> m.User:
        for u in await self.all():
            if u.name == name:
                return u
        raise AccountError(404, "not_found", f"no user {name!r}")

    async def _other_active_admins(self, uid: int) -> int:
        row = await self.db.fetchone(
            "SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0 AND id != ?", (uid,)
        )
        return int(row[0])

    async def patch(self, uid: int, patch: m.UserPatch) -> m.User:
        user = await self.get(uid)
        losing_admin = user.role == "admin" and (
            (patch.role is not None and patch.role != "admin") or patch.disabled is True
        )
        if losing_admin and await self._other_active_admins(uid) == 0:
            raise AccountError(409, "last_admin", "this is the last enabled admin; make another admin first")
        async with self.db.transaction() as con:
            if patch.role is not None:
                await con.execute("UPDATE users SET role = ? WHERE id = ?", (patch.role, uid))
            if patch.disabled is not None:
                await con.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(patch.disabled), uid))
                if patch.disabled:
                    # Signed out everywhere at once; open sockets close on the next recheck (≤ 1 s).
                    await con.execute("DELETE FROM tokens WHERE user_id = ? AND kind != 'device'", (uid,))
            if patch.totp is False:
                await con.execute(
                    "UPDATE users SET totp_enabled = 0, totp_secret = NULL, totp_last_step = 0 WHERE id = ?",
                    (uid,),
                )
                await con.execute("DELETE FROM recovery_codes WHERE user_id = ?", (uid,))
        return await self.get(uid)

    async def delete(self, uid: int) -> m.User:
        user = await self.get(uid)
        if user.role == "admin" and await self._other_active_admins(uid) == 0:
            raise AccountError(409, "last_admin", "this is the last enabled admin; make another admin first")
        await self.db.execute("DELETE FROM users WHERE id = ?", (uid,))  # tokens and codes cascade
        return user

    async def set_password(
        self, uid: int, password: str, *, must_change: bool, keep_session: str | None
    ) -> None:
        """A new password signs the user out everywhere but `keep_session` (the caller's own sign-in)."""
        if len(password) < 8:
            raise AccountError(400, "invalid_body", "password must be at least 8 characters")
        pw_hash = await asyncio.to_thread(hash_password, password)
        async with self.db.transaction() as con:
            await con.execute(
                "UPDATE users SET pw_hash = ?, must_change_password = ? WHERE id = ?",
                (pw_hash, int(must_change), uid),
            )
            await con.execute(
                "DELETE FROM tokens WHERE user_id = ? AND kind IN ('access', 'refresh') "
                "AND (family IS NULL OR family IS NOT ?)",
                (uid, keep_session),
            )

    async def change_own(self, who: Principal, current: str, new: str) -> None:
        row = await self.db.fetchone("SELECT pw_hash FROM users WHERE id = ?", (who.user_id,))
        if row is None or not await asyncio.to_thread(verify_password, current, row[0]):
            raise AccountError(403, "bad_credentials", "the current password is wrong")
        if current == new:
            raise AccountError(400, "invalid_body", "the new password must differ from the current one")
        await self.set_password(who.user_id, new, must_change=False, keep_session=await self.session_of(who))

    async def session_of(self, who: Principal) -> str | None:
        if not who.token:
            return None
        row = await self.db.fetchone("SELECT family FROM tokens WHERE hash = ?", (who.token,))
        return None if row is None else row[0]

    async def flags(self, uid: int) -> tuple[bool, bool]:
        """(must change password, two-factor on)."""
        row = await self.db.fetchone(
            "SELECT must_change_password, totp_enabled FROM users WHERE id = ?", (uid,)
        )
        return (bool(row[0]), bool(row[1])) if row else (False, False)

    # ------------------------------------------------------------ tokens

    async def tokens(self, uid: int | None, current: bytes = b"") -> list[m.TokenInfo]:
        """Live access, refresh and API tokens: a user's, or everyone's (uid None)."""
        sql = (
            "SELECT t.hash, u.name, t.kind, t.name, t.created_at, t.expires_at, t.family FROM tokens t "
            "JOIN users u ON u.id = t.user_id WHERE t.kind IN ('access', 'refresh', 'api') AND t.spent_at IS NULL "
            "AND (t.expires_at IS NULL OR t.expires_at >= ?)"
        )
        params: list[Any] = [time.time()]
        if uid is not None:
            sql += " AND t.user_id = ?"
            params.append(uid)
        rows = await self.db.fetchall(sql + " ORDER BY t.created_at DESC", params)
        return [
            m.TokenInfo(token_id(bytes(r[0])), r[1], r[2], r[3], r[4], r[5], r[6], bytes(r[0]) == current)
            for r in rows
        ]

    async def revoke(self, tid: str, uid: int | None) -> m.TokenInfo:
        """Revoke one token by its id (a session's access or refresh token ends the whole sign-in)."""
        for t in await self.tokens(uid):
            if t.id == tid:
                if t.session:
                    await self.db.execute("DELETE FROM tokens WHERE family = ?", (t.session,))
                else:
                    await self.db.execute(
                        "DELETE FROM tokens WHERE substr(hex(hash), 1, 16) = upper(?)", (tid,)
                    )
                return t
        raise AccountError(404, "not_found", "no such token (or not yours)")

    async def enroll_tokens(self) -> list[m.EnrollTokenInfo]:
        rows = await self.db.fetchall(
            "SELECT hash, created_at, expires_at, uses_left FROM enroll_tokens WHERE expires_at >= ? AND uses_left > 0 "
            "ORDER BY created_at DESC",
            (time.time(),),
        )
        return [m.EnrollTokenInfo(token_id(bytes(r[0])), r[1], r[2], r[3]) for r in rows]

    async def revoke_enroll(self, tid: str) -> None:
        n = await self.db.execute(
            "DELETE FROM enroll_tokens WHERE substr(hex(hash), 1, 16) = upper(?)", (tid,)
        )
        if n == 0:
            raise AccountError(404, "not_found", "no such enrollment token")

    # ------------------------------------------------------------ two-factor

    async def totp_setup(self, who: Principal) -> m.TotpSetup:
        _, enabled = await self.flags(who.user_id)
        if enabled:
            raise AccountError(409, "conflict", "two-factor sign-in is already on; turn it off first")
        secret = pyotp.random_base32()
        await self.db.execute("UPDATE users SET totp_secret = ? WHERE id = ?", (secret, who.user_id))
        return m.TotpSetup(secret, pyotp.TOTP(secret).provisioning_uri(name=who.name, issuer_name=ISSUER))

    async def totp_enable(self, who: Principal, code: str) -> m.RecoveryCodes:
        row = await self.db.fetchone(
            "SELECT totp_secret, totp_enabled FROM users WHERE id = ?", (who.user_id,)
        )
        if row is None or row[0] is None:
            raise AccountError(409, "conflict", "start with POST /auth/totp/setup")
        if row[1]:
            raise AccountError(409, "conflict", "two-factor sign-in is already on")
        if not await self._totp_ok(who.user_id, row[0], code):
            raise AccountError(400, "bad_code", "that code is wrong or expired; check the app's clock")
        codes = ["-".join(secrets.token_hex(4)[i : i + 4] for i in (0, 4)) for _ in range(RECOVERY_CODES)]
        async with self.db.transaction() as con:
            await con.execute("UPDATE users SET totp_enabled = 1 WHERE id = ?", (who.user_id,))
            await con.execute("DELETE FROM recovery_codes WHERE user_id = ?", (who.user_id,))
            await con.executemany(
                "INSERT INTO recovery_codes (user_id, hash) VALUES (?, ?)",
                [(who.user_id, _code_hash(c)) for c in codes],
            )
        return m.RecoveryCodes(codes)

    async def totp_disable(self, who: Principal, code: str) -> None:
        if not await self.second_factor(who.user_id, code):
            raise AccountError(400, "bad_code", "that code is wrong or expired")
        await self.patch(who.user_id, m.UserPatch(totp=False))

    async def _totp_ok(self, uid: int, secret: str, code: str) -> bool:
        code = code.strip().replace(" ", "")
        if not (len(code) == 6 and code.isdigit()):
            return False
        totp = pyotp.TOTP(secret)
        now = time.time()
        step = int(now // totp.interval)
        for off in range(-TOTP_WINDOW, TOTP_WINDOW + 1):
            if secrets.compare_digest(totp.at(now, counter_offset=off), code):
                # Each step's code works once: a code seen over a shoulder or a wire is spent.
                n = await self.db.execute(
                    "UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?",
                    (step + off, uid, step + off),
                )
                return n == 1
        return False

    async def second_factor(self, uid: int, code: str) -> bool:
        """The authenticator's code, or one of the recovery codes (used up)."""
        row = await self.db.fetchone("SELECT totp_secret, totp_enabled FROM users WHERE id = ?", (uid,))
        if row is None or not row[1] or row[0] is None:
            return False
        if await self._totp_ok(uid, row[0], code):
            return True
        n = await self.db.execute(
            "DELETE FROM recovery_codes WHERE user_id = ? AND hash = ?", (uid, _code_hash(code))
        )
        return n == 1

    # ------------------------------------------------------------ step-up

    async def step_up(self, who: Principal, password: str | None, code: str | None) -> None:
        ok = False
        if code is not None:
            ok = await self.second_factor(who.user_id, code)
        elif password is not None:
            row = await self.db.fetchone("SELECT pw_hash FROM users WHERE id = ?", (who.user_id,))
            ok = row is not None and await asyncio.to_thread(verify_password, password, row[0])
        if not ok:
            raise AccountError(403, "bad_credentials", "wrong password or code")
        await self.mark_stepped_up(who.token)

    async def mark_stepped_up(self, token: bytes) -> None:
        await self.db.execute("UPDATE tokens SET stepped_up_at = ? WHERE hash = ?", (time.time(), token))


def role_at_least(role: str, needed: str) -> bool:
    return Role(role).allows(Role(needed))
