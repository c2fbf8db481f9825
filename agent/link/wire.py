"""One open WebSocket as the link uses it: whole frames out one at a time, frames in decoded."""

from __future__ import annotations

import asyncio
import logging
import time

from websockets.asyncio.client import ClientConnection

from servermanager.agent.stats import Stats
from servermanager.common.protocol import CoreToAgent, Error, FrameError, decode, decoder

log = logging.getLogger(__name__)


class Wire:
    """The socket of one connection attempt, shared by the handshake and then the stream.

    Sender, heartbeat and pong replies all send on it, so sends take a FIFO lock: one complete
    frame at a time, and a sample batch waits behind at most one command output chunk.
    """

    def __init__(self, ws: ClientConnection, stats: Stats) -> None:
        self._ws = ws
        self._stats = stats
        self._lock = asyncio.Lock()
        self._decoder = decoder(CoreToAgent)
        self.last_sent = 0.0  # monotonic time of the last frame sent, for idle-only pings

    async def send(self, data: bytes) -> None:
        async with self._lock:
            await self._ws.send(data, text=True)
            self.last_sent = time.monotonic()

    async def recv(self) -> CoreToAgent | None:
        """The next frame from the core to act on; None for one there is nothing to do about.

        An invalid frame is never fatal (a newer core may send frames this agent does not know
        yet), and an error frame is only ever reported: both are logged and counted here.
        """
        data = await self._ws.recv()
        try:
            frame = decode(self._decoder, data)
        except FrameError as exc:
            self._stats.invalid_frames += 1
            log.warning("ignoring invalid frame from core (%s): %.200s", exc.code, exc)
            return None
        if isinstance(frame, Error):
            self._stats.core_errors += 1
            log.warning("core reported error %s: %.500s", frame.code, frame.message)
            return None
        return frame
