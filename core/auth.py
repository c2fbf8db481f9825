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


# Prefixes make a leaked token recognisable (secret scanners) and tell kinds apart at a glance.
PREFIX = {TokenKind.ACCESS: "sma_", TokenKind.REFRESH: "smr_", TokenKind.API: "smt_"}
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


class AuthError(Exception):
    pass


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
        row = await self.db.fetchone("SELECT id, role, pw_hash FROM users WHERE name = ?", (name,))
        if row is None:
            # Burn the same time as a real check so user names cannot be probed by timing.
            await asyncio.to_thread(verify_password, password, _DUMMY_HASH)
            return None
        if not await asyncio.to_thread(verify_password, password, row[2]):
            return None
        return Principal(row[0], name, Role(row[1]), TokenKind.ACCESS)

    async def issue(self, user_id: int, kind: TokenKind, name: str | None = None) -> tuple[str, float | None]:
        token = new_secret(PREFIX[kind])
        now = time.time()
        ttl = {TokenKind.ACCESS: self.access_ttl, TokenKind.REFRESH: self.refresh_ttl}.get(kind)
        expires = now + ttl if ttl is not None else None
        await self.db.execute(
            "INSERT INTO tokens (hash, kind, user_id, name, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (token_hash(token), kind.value, user_id, name, expires, now),
        )
        return token, expires

    async def resolve(self, token: str, kinds: tuple[TokenKind, ...]) -> Principal | None:
        row = await self.db.fetchone(
            "SELECT t.kind, t.expires_at, u.id, u.name, u.role FROM tokens t JOIN users u ON u.id = t.user_id"
            " WHERE t.hash = ?",
            (token_hash(token),),
        )
        if row is None:
            return None
        kind = TokenKind(row[0])
        if kind not in kinds or (row[1] is not None and row[1] < time.time()):
            return None
        return Principal(row[2], row[3], Role(row[4]), kind)

    async def valid_roles(self, hashes: set[bytes]) -> dict[bytes, Role]:
        """Of these token hashes, the ones still valid (present, unexpired), with their user's role now."""
        out: dict[bytes, Role] = {}
        now = time.time()
        pending = list(hashes)
        for i in range(0, len(pending), 500):
            chunk = pending[i : i + 500]
            rows = await self.db.fetchall(
                "SELECT t.hash, t.expires_at, u.role FROM tokens t JOIN users u ON u.id = t.user_id "
                f"WHERE t.hash IN ({', '.join('?' * len(chunk))})",
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


class LoginThrottle(SlidingWindow):
    """Counts failed logins per (user, address); refuses past the limit."""

    def __init__(self, max_failures: int, window: float) -> None:
        super().__init__(max_failures, window)
