"""The /ws/client gateway: token auth, subscriptions, a snapshot, then live events from the bus."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from servermanager.common import protocol as p
from servermanager.core.auth import TokenKind, token_hash
from servermanager.core.bus import Subscription
from servermanager.core.clients import ClientLink
from servermanager.core.context import CORE, Core
from servermanager.core.ws.handshake import MAX_BAD_FRAMES, accept_first, refuse

log = logging.getLogger(__name__)

_auth = p.decoder(p.Auth)
_from_client = p.decoder(p.ClientToCore)


async def client_ws(request: web.Request) -> web.WebSocketResponse:
    core = request.app[CORE]
    peer = request.remote or "?"
    ws, auth = await accept_first(request, f"client {peer}", _auth, "auth", heartbeat=30.0)
    if auth is None:
        return ws
    who = await core.users.resolve(auth.token, (TokenKind.ACCESS, TokenKind.API))
    if who is None:
        return await refuse(ws, f"client {peer}", p.CloseCode.UNAUTHORIZED, "invalid or expired token")
    await ws.send_str(p.encode_str(p.AuthOk(protocol=p.PROTOCOL_VERSION, user=who.name, role=who.role.value)))
    log.info("client %s connected as %s", peer, who.name)

    sub = core.bus.subscribe(who.role)
    writer = asyncio.create_task(_pump(ws, sub))
    core.clients.add(ClientLink(ws, token_hash(auth.token), who.name, peer, sub))
    try:
        await _serve(core, ws, sub, peer)
    finally:
        core.clients.discard(ws)
        sub.close()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    return ws


async def _pump(ws: web.WebSocketResponse, sub: Subscription, max_batch: int = 500) -> None:
    """Copy bus events to the socket; a client that cannot keep up is closed, not buffered forever.

    Whatever queued up while the last send was under way goes out as one batch frame: at a few
    thousand events a second that is one send per loop turn instead of one per event.
    """
    queue = sub.queue
    try:
        while not ws.closed:
            first = (await queue.get())[1]
            if sub.lagging.is_set():
                await ws.close(code=p.CloseCode.GOING_AWAY, message=b"client too slow; reconnect")
                return
            if queue.empty():
                await ws.send_frame(first, WSMsgType.TEXT)
                continue
            frames = [first]
            while len(frames) < max_batch and not queue.empty():
                frames.append(queue.get_nowait()[1])
            await ws.send_frame(p.batch_bytes(frames), WSMsgType.TEXT)
    except ConnectionError:
        return


async def _serve(core: Core, ws: web.WebSocketResponse, sub: Subscription, peer: str) -> None:
    bad = 0
    while not ws.closed:
        msg = await ws.receive()
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            if msg.type == WSMsgType.ERROR:
                log.warning("client %s: %s", peer, msg.data)
            return
        try:
            frame = p.decode(_from_client, msg.data)
        except p.FrameError as exc:
            bad += 1
            log.warning("client %s sent a bad frame (%s): %s", peer, exc.code, exc)
            await ws.send_str(p.encode_str(p.Error(code=exc.code, message=str(exc))))
            if bad >= MAX_BAD_FRAMES:
                await refuse(ws, f"client {peer}", p.CloseCode.BAD_REQUEST, "too many bad frames")
                return
            continue
        if isinstance(frame, p.Subscribe):
            wanted = None if frame.all or frame.nodes is None else set(frame.nodes)
            nodes = [st.info() for st in core.nodes.nodes.values() if wanted is None or st.id in wanted]
            # Queue the snapshot before widening the filter, so no event can overtake it.
            sub.queue.put_nowait((None, p.encode(p.Snapshot(nodes=nodes))))
            sub.nodes = wanted
        elif isinstance(frame, p.Ping):
            await ws.send_str(p.encode_str(p.Pong(ts=frame.ts)))
        elif isinstance(frame, p.Auth):
            await ws.send_str(p.encode_str(p.Error(code="unexpected", message="already authenticated")))
