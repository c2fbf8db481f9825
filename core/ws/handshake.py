"""WebSocket plumbing shared by the agent and client gateways: the first frame, and refusals."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from servermanager.common import protocol as p
from servermanager.core.context import CORE

log = logging.getLogger(__name__)

# Bad frames a socket may send before it is closed with 4400: enough for a client bug to be seen in
# the error frames, few enough that garbage costs the core nothing.
MAX_BAD_FRAMES = 20


async def refuse(ws: web.WebSocketResponse, who: str, code: int, reason: str) -> web.WebSocketResponse:
    """Close with a 4xxx code and a reason the peer can show; one log line says why."""
    log.warning("%s refused: %s (close %d)", who, reason, code)
    await ws.close(code=code, message=reason.encode()[:120])
    return ws


async def accept_first(
    request: web.Request, who: str, dec: msgspec.json.Decoder[Any], what: str, **ws_options: Any
) -> tuple[web.WebSocketResponse, Any | None]:
    """Upgrade, then read the one frame that must come first (hello or auth) within hello_timeout.

    Returns the socket and the decoded frame, or None once the socket has been refused or has ended.
    """
    s = request.app[CORE].settings
    ws = web.WebSocketResponse(max_msg_size=s.max_frame_bytes, autoping=True, **ws_options)
    await ws.prepare(request)
    try:
        msg = await ws.receive(timeout=s.hello_timeout)
    except TimeoutError:
        return await refuse(ws, who, p.CloseCode.UNAUTHORIZED, f"no {what} within {s.hello_timeout:g}s"), None
    if msg.type == WSMsgType.ERROR:
        log.warning("%s: %s", who, msg.data)  # aiohttp has already closed it (1009 when oversized)
        return ws, None
    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return ws, None
    try:
        return ws, p.decode(dec, msg.data)
    except p.FrameError as exc:
        return await refuse(ws, who, p.CloseCode.UNAUTHORIZED, f"expected {what}: {exc}"), None
