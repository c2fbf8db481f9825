"""The open /ws/client sockets and the token each was opened with: closed once that token stops being valid."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web

from servermanager.common.protocol import CloseCode
from servermanager.core.auth import Users
from servermanager.core.bus import Subscription

log = logging.getLogger(__name__)


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
