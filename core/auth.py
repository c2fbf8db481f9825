"""Users, roles, password hashing (scrypt), opaque bearer tokens, enrollment tokens, login throttling."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from servermanager.core.store.db import Database


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


class TokenKind(enum.StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"
    API = "api"
    # A device that once signed in with the right password: its failed logins are counted on their
    # own, so nobody can lock a user out by failing from a shared address (OWASP device cookies).
    DEVICE = "device"


# Prefixes make a leaked token recognisable (secret scanners) and tell kinds apart at a glance.
PREFIX = {
    TokenKind.ACCESS: "sma_",
    TokenKind.REFRESH: "smr_",
    TokenKind.API: "smt_",
    TokenKind.DEVICE: "smd_",
}
DEVICE_TTL = 180 * 86400.0
NODE_CRED_PREFIX = "smn_"
ENROLL_PREFIX = "sme_"

# scrypt: n=2**14, r=8 costs 16 MiB per hash -- memory-hard, yet ~50 ms so logins stay snappy.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${dk.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, dk = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(dk) // 2
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), dk)


def token_hash(token: str) -> bytes:
    """Tokens are random 256-bit values, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).digest()


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user through an access or API token."""

    user_id: int
    name: str
    role: Role
    via: TokenKind
    token: bytes = b""  # the hash of the token it came with (empty from a password check)
    stepped_up_at: float | None = None  # the session's last fresh password or TOTP entry
    totp: bool = False  # the user signs in with two factors


class AuthError(Exception):
    pass


class RefreshReuse(Exception):
    """A refresh token that was already spent came back: someone holds a copy. The whole session
    family (every token of that login) has been revoked."""

    def __init__(self, user: str, revoked: int) -> None:
        super().__init__(f"refresh token reused for user {user}; {revoked} token(s) of its session revoked")
        self.user = user


class Users:
    """Accounts and their tokens, stored in the core database."""

    def __init__(self, db: Database, access_ttl: float, refresh_ttl: float) -> None:
        self.db = db
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    async def count(self) -> int:
        row = await self.db.fetchone("SELECT count(*) FROM users")
        return int(row[0])

    async def create(self, name: str, password: str, role: Role) -> int:
        if not name or len(name) > 64 or not name.isprintable() or name.strip() != name:
            raise ValueError("user name must be 1-64 printable characters without surrounding spaces")
        if len(password) < 8:
            raise ValueError("password must be at least 8 characters")
        if await self.db.fetchone("SELECT 1 FROM users WHERE name = ?", (name,)):
            raise ValueError(f"user {name!r} already exists")
        # scrypt is ~50 ms of CPU by design: off the event loop, so every socket keeps being served.
        pw_hash = await asyncio.to_thread(hash_password, password)
        return await self.db.insert(
            "INSERT INTO users (name, role, pw_hash, created_at) VALUES (?, ?, ?, ?)",
            (name, role.value, pw_hash, time.time()),
        )

    async def check_password(self, name: str, password: str) -> Principal | None:
        """The user, if the password is right and the account enabled."""
        row = await self.db.fetchone("SELECT id, role, pw_hash, disabled FROM users WHERE name = ?", (name,))
        if row is None:
            # Burn the same time as a real check so user names cannot be probed by timing.
            await asyncio.to_thread(verify_password, password, _DUMMY_HASH)
            return None
        if not await asyncio.to_thread(verify_password, password, row[2]) or row[3]:
            return None
        return Principal(row[0], name, Role(row[1]), TokenKind.ACCESS)

    def _new(self, kind: TokenKind) -> tuple[str, float, float | None]:
        token = new_secret(PREFIX[kind])
        now = time.time()
        ttl = {
            TokenKind.ACCESS: self.access_ttl,
            TokenKind.REFRESH: self.refresh_ttl,
            TokenKind.DEVICE: DEVICE_TTL,
        }.get(kind)
        return token, now, now + ttl if ttl is not None else None

    async def issue(
        self, user_id: int, kind: TokenKind, name: str | None = None, family: str | None = None
    ) -> tuple[str, float | None]:
        """A new token; `family` ties a login's access and refresh tokens (and their rotations) together."""
        token, now, expires = self._new(kind)
        await self.db.execute(
            _INSERT_TOKEN, (token_hash(token), kind.value, user_id, name, expires, now, family)
        )
        return token, expires

    async def rotate_refresh(self, token: str) -> tuple[Principal, str, str, float] | None:
        """Spend a refresh token for a new access and refresh token of the same family: (who, access,
        refresh, access expiry) once, whatever the concurrency; None if unknown or expired. A token
        already spent raises RefreshReuse after revoking its whole family, new tokens included."""
        h = token_hash(token)
        now = time.time()
        async with self.db.transaction() as con:
            # One transaction on the one writer connection: of any number of concurrent refreshes,
            # exactly one changes the row, and its new tokens exist before any other looks.
            cur = await con.execute(
                "UPDATE tokens SET spent_at = ? WHERE hash = ? AND kind = 'refresh' AND spent_at IS NULL "
                "AND (expires_at IS NULL OR expires_at >= ?)",
                (now, h, now),
            )
            won = cur.rowcount == 1
            cur = await con.execute(
                "SELECT t.spent_at, t.family, u.id, u.name, u.role, t.expires_at FROM tokens t "
                "JOIN users u ON u.id = t.user_id WHERE t.hash = ? AND t.kind = 'refresh' AND u.disabled = 0",
                (h,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            if won:
                who = Principal(row[2], row[3], Role(row[4]), TokenKind.ACCESS)
                family = row[1] or secrets.token_hex(8)
                access, t0, expires = self._new(TokenKind.ACCESS)
                refresh, _, refresh_expires = self._new(TokenKind.REFRESH)
                for tok, kind, exp in (
                    (access, TokenKind.ACCESS, expires),
                    (refresh, TokenKind.REFRESH, refresh_expires),
                ):
                    await con.execute(
                        _INSERT_TOKEN, (token_hash(tok), kind.value, who.user_id, None, exp, t0, family)
                    )
                assert expires is not None
                return who, access, refresh, expires
            if row[0] is None or (row[5] is not None and row[5] < now):
                return None  # expired, not spent
            cur = await con.execute("DELETE FROM tokens WHERE family = ? OR hash = ?", (row[1], h))
            revoked = cur.rowcount
        raise RefreshReuse(row[3], revoked)

    async def revoke_family(self, token: str) -> int:
        """Revoke a token and every token of its session family (logout)."""
        h = token_hash(token)
        return await self.db.execute(
            "DELETE FROM tokens WHERE hash = ? OR (family IS NOT NULL AND family = "
            "(SELECT family FROM tokens WHERE hash = ?))",
            (h, h),
        )

    async def device_user(self, token: str) -> str | None:
        """The user a device token was given to, while it is valid."""
        row = await self.db.fetchone(
            "SELECT u.name FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = ? AND t.kind = 'device' "
            "AND t.expires_at >= ?",
            (token_hash(token), time.time()),
        )
        return None if row is None else str(row[0])

    async def resolve(self, token: str, kinds: tuple[TokenKind, ...]) -> Principal | None:
        row = await self.db.fetchone(
            "SELECT t.kind, t.expires_at, u.id, u.name, u.role, t.hash, t.stepped_up_at, u.totp_enabled FROM tokens t "
            "JOIN users u ON u.id = t.user_id WHERE t.hash = ? AND t.spent_at IS NULL AND u.disabled = 0",
            (token_hash(token),),
        )
        if row is None:
            return None
        kind = TokenKind(row[0])
        if kind not in kinds or (row[1] is not None and row[1] < time.time()):
            return None
        return Principal(row[2], row[3], Role(row[4]), kind, bytes(row[5]), row[6], bool(row[7]))

    async def valid_roles(self, hashes: set[bytes]) -> dict[bytes, Role]:
        """Of these token hashes, the ones still valid (present, unexpired), with their user's role now."""
        out: dict[bytes, Role] = {}
        now = time.time()
        pending = list(hashes)
        for i in range(0, len(pending), 500):
            chunk = pending[i : i + 500]
            rows = await self.db.fetchall(
                "SELECT t.hash, t.expires_at, u.role FROM tokens t JOIN users u ON u.id = t.user_id "
                f"WHERE t.spent_at IS NULL AND u.disabled = 0 AND t.hash IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for h, expires, role in rows:
                if expires is None or expires >= now:
                    out[bytes(h)] = Role(role)
        return out

    async def revoke(self, token: str) -> bool:
        return await self.db.execute("DELETE FROM tokens WHERE hash = ?", (token_hash(token),)) > 0

    async def purge_expired(self) -> int:
        return await self.db.execute(
            "DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at < ?", (time.time(),)
        )


_INSERT_TOKEN = "INSERT INTO tokens (hash, kind, user_id, name, expires_at, created_at, family) VALUES (?, ?, ?, ?, ?, ?, ?)"
_DUMMY_HASH = hash_password(secrets.token_hex(8))


class EnrollTokens:
    """Enrollment tokens: a TTL and a use count; each use yields a node its own credential."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, ttl: float, uses: int) -> str:
        if ttl <= 0 or uses < 1:
            raise ValueError("enrollment token needs ttl > 0 and uses >= 1")
        token = new_secret(ENROLL_PREFIX)
        now = time.time()
        await self.db.execute(
            "INSERT INTO enroll_tokens (hash, expires_at, uses_left, created_at) VALUES (?, ?, ?, ?)",
            (token_hash(token), now + ttl, uses, now),
        )
        return token

    async def usable(self, token: str) -> bool:
        """Whether the token would enroll a node now: known, not expired, not used up, not revoked
        (a revoked one is deleted). Checking spends nothing: the install script downloads with it first."""
        if not token.startswith(ENROLL_PREFIX):
            return False
        row = await self.db.fetchone(
            "SELECT 1 FROM enroll_tokens WHERE hash = ? AND uses_left > 0 AND expires_at > ?",
            (token_hash(token), time.time()),
        )
        return row is not None


class SlidingWindow:
    """At most `limit` events per key in any `window` seconds: login failures, commands per user."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[object, deque[float]] = defaultdict(deque)

    def _trim(self, key: object, now: float) -> deque[float]:
        q = self._events[key]
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            # Forget idle keys so the table cannot grow without bound.
            del self._events[key]
            q = self._events[key]
        return q

    def retry_after(self, key: object) -> float:
        """Seconds until another event is allowed; 0 when allowed now."""
        now = time.monotonic()
        q = self._trim(key, now)
        if len(q) < self.limit:
            return 0.0
        return max(0.0, q[0] + self.window - now)

    def add(self, key: object) -> None:
        now = time.monotonic()
        self._trim(key, now).append(now)

    def clear(self, key: object) -> None:
        self._events.pop(key, None)

    def release(self, key: object) -> None:
        """Take back the newest event of `key` (an attempt reserved, then found to be a success)."""
        q = self._events.get(key)
        if q:
            q.pop()
            if not q:
                del self._events[key]


class LoginThrottle:
    """Failed logins, counted before the password is even checked so concurrency cannot bypass it.

    A login from a device that once signed in as this user (it shows its device token) is counted
    per (user, device) and nothing else: failures from anywhere else never lock it out. Any other
    login is counted per (user, address) with `max_failures`, and per user across all addresses
    with ten times that, so spreading guesses over many addresses does not help either.
    """

    def __init__(self, max_failures: int, window: float) -> None:
        self.per_source = SlidingWindow(max_failures, window)
        self.per_user = SlidingWindow(max_failures * 10, window)

    def _keys(self, user: str, peer: str, device: str | None) -> list[tuple[SlidingWindow, object]]:
        if device is not None:
            return [(self.per_source, ("device", user, device))]
        return [(self.per_source, ("addr", user, peer)), (self.per_user, ("user", user))]

    def reserve(self, user: str, peer: str, device: str | None) -> float:
        """Count this attempt as a failure now; 0 if it may go on, else seconds to wait (nothing counted).

        No await between the check and the count: a hundred concurrent guesses see each other."""
        keys = self._keys(user, peer, device)
        wait = max(w.retry_after(k) for w, k in keys)
        if wait > 0:
            return wait
        for w, k in keys:
            w.add(k)
        return 0.0

    def release(self, user: str, peer: str, device: str | None) -> None:
        """The attempt could not be judged (the core failed): take its reservation back."""
        for w, k in self._keys(user, peer, device):
            w.release(k)

    def succeeded(self, user: str, peer: str, device: str | None) -> None:
        """The attempt was right: forget this source's failures, take back its reservation per user."""
        if device is not None:
            self.per_source.clear(("device", user, device))
            return
        self.per_source.clear(("addr", user, peer))
        self.per_user.release(("user", user))
