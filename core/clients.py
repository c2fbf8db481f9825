"""Sockets before and after authentication: a cap on the ones still silent, and the open /ws/client sockets with the token each was opened with."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiohttp import web

from servermanager.common.protocol import CloseCode
from servermanager.core.auth import Users
from servermanager.core.bus import Subscription

log = logging.getLogger(__name__)


class Handshakes:
    """Sockets that have not yet sent their hello or auth, capped: each costs a file descriptor and
    proves nothing, so past the cap new ones are shed (close 1013, try again later) and one log
    line every 10 s says how many, while authenticated sockets and REST go on being served."""

    LOG_EVERY = 10.0

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.shed = 0  # since the last log line
        self.shed_total = 0
        self._logged_at = 0.0

    def enter(self) -> bool:
        if self.open >= self.limit:
            self.shed += 1
            self.shed_total += 1
            now = time.monotonic()
            if now - self._logged_at >= self.LOG_EVERY:
                log.warning(
                    "shedding new sockets: %d not yet authenticated (limit max_unauthenticated = %d); "
                    "%d closed with 1013 since the last report",
                    self.open,
                    self.limit,
                    self.shed,
                )
                self._logged_at, self.shed = now, 0
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1


@dataclass(eq=False)
class ClientLink:
    ws: web.WebSocketResponse
    token_hash: bytes
    user: str
    peer: str
    sub: Subscription


class Clients:
    """Every authenticated client socket. `recheck` runs every second: a token revoked (logout, an
    admin, the CLI on the same database), expired, or whose user is gone closes its sockets with
    4401, and a changed role applies to the live events at once."""

    def __init__(self) -> None:
        self._links: dict[web.WebSocketResponse, ClientLink] = {}

    def __len__(self) -> int:
        return len(self._links)

    def add(self, link: ClientLink) -> None:
        self._links[link.ws] = link

    def discard(self, ws: web.WebSocketResponse) -> None:
        self._links.pop(ws, None)

    async def recheck(self, users: Users) -> int:
        """Close the sockets whose token no longer holds; returns how many were closed."""
        links = [lk for lk in self._links.values() if not lk.ws.closed]
        if not links:
            return 0
        roles = await users.valid_roles({lk.token_hash for lk in links})
        gone = []
        for lk in links:
            role = roles.get(lk.token_hash)
            if role is None:
                gone.append(lk)
            elif role != lk.sub.role:
                log.info("client %s (%s): role is now %s", lk.peer, lk.user, role.value)
                lk.sub.role = role
        for lk in gone:
            log.warning("client %s (%s): token revoked or expired; closing its socket", lk.peer, lk.user)
            self.discard(lk.ws)
        await asyncio.gather(
            *(lk.ws.close(code=CloseCode.UNAUTHORIZED, message=b"token revoked or expired") for lk in gone),
            return_exceptions=True,
        )
        return len(gone)

    async def close_all(self, code: int, reason: str) -> None:
        await asyncio.gather(
            *(ws.close(code=code, message=reason.encode()) for ws in list(self._links)),
            return_exceptions=True,
        )
