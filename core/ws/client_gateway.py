"""The /ws/client gateway: token auth, subscriptions, a snapshot, then live events from the bus."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from servermanager.common import protocol as p
from servermanager.core.auth import Principal, Role, TokenKind, token_hash
from servermanager.core.bus import Subscription
from servermanager.core.clients import ClientLink
from servermanager.core.context import CORE, Core
from servermanager.core.http.logs_api import audit_detail
from servermanager.core.logs import LogFailure
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
    writer = asyncio.create_task(_pump(ws, sub, core.settings.push_gather))
    core.clients.add(ClientLink(ws, token_hash(auth.token), who.name, peer, sub))
    try:
        await _serve(core, ws, sub, peer, who)
    finally:
        await core.logs.owner_gone(ws)  # its follows end, and their agents are told
        core.clients.discard(ws)
        sub.close()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    return ws


async def _pump(ws: web.WebSocketResponse, sub: Subscription, gather: float, max_batch: int = 500) -> None:
    """Copy bus events to the socket; a client that cannot keep up is closed, not buffered forever.

    Events that arrive within `gather` seconds of the first go out with it as one batch frame. A
    send per event costs the core more than the event itself (a write, and the client's wakeup,
    through the kernel): at 1,000 agents with one client subscribed to all, 10 ms took 4-7 points
    off the core's CPU (about a seventh) for 6 ms more push latency (docs/benchmarks.md).
    """
    queue = sub.queue
    try:
        while not ws.closed:
            first = (await queue.get())[1]
            if gather and queue.qsize() < max_batch - 1:
                await asyncio.sleep(gather)
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


async def _serve(core: Core, ws: web.WebSocketResponse, sub: Subscription, peer: str, who: Principal) -> None:
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
        elif isinstance(frame, p.LogsFollow):
            await _follow(core, ws, sub, who, frame)
        elif isinstance(frame, p.LogsStop):
            await core.logs.stop(ws, frame.request_id)
        elif isinstance(frame, p.Ping):
            await ws.send_str(p.encode_str(p.Pong(ts=frame.ts)))
        elif isinstance(frame, p.Auth):
            await ws.send_str(p.encode_str(p.Error(code="unexpected", message="already authenticated")))


async def _follow(
    core: Core, ws: web.WebSocketResponse, sub: Subscription, who: Principal, f: p.LogsFollow
) -> None:
    """Start a follow for this socket: the same role and audit as GET /nodes/{id}/logs; refusals
    come back as one `logs_chunk` with eof, error and code."""

    async def refuse(code: str, message: str) -> None:
        chunk = p.LogsChunk(request_id=f.request_id, eof=True, error=message, code=code, node_id=f.node_id)  # type: ignore[arg-type]
        await ws.send_str(p.encode_str(chunk))

    detail = audit_detail(f.query, True)
    target = f"node:{f.node_id}"
    # The role as it is now (the recheck lowers it when an admin does), not as it was at auth.
    if not sub.role.allows(Role.OPERATOR):
        await core.audit.record(who.name, "logs.follow", target, "forbidden", detail)
        await refuse("forbidden", f"reading logs needs the operator role; you are {sub.role.value}")
        return
    st = core.nodes.get(f.node_id)
    if st is None:
        await refuse("not_found", "no such node")
        return

    def deliver(chunk: p.LogsChunk) -> bool:
        if ws.closed or not sub.role.allows(Role.OPERATOR):
            return False
        try:
            sub.queue.put_nowait((f.node_id, p.encode(chunk)))
        except asyncio.QueueFull:
            sub.lagging.set()  # the pump closes a client this far behind
            return False
        return True

    try:
        await core.logs.follow(ws, f.request_id, st, f.query, deliver)
    except LogFailure as exc:
        await core.audit.record(who.name, "logs.follow", target, exc.code, {**detail, "error": exc.message})
        await refuse(exc.code, exc.message)
        return
    await core.audit.record(who.name, "logs.follow", target, "ok", detail)
