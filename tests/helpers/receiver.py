"""A real HTTP receiver on loopback for webhook and Apprise tests: records every request it gets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


@dataclass
class Receiver:
    """aiohttp on 127.0.0.1 (port 0 unless given); answers `status` (200 by default) to every request."""

    port: int = 0
    status: int = 200
    got: list[Received] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set up, each answer waits for it (a slow receiver)
    arrived: int = 0  # requests received, answered or not
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrived += 1
        got = Received(request.path_qs, dict(request.headers), await request.read())
        if self.gate is not None:
            await self.gate.wait()  # recorded even if the sender is gone meanwhile (killed mid-send)
        self.got.append(got)
        return web.Response(status=self.status, text="ok" if self.status < 400 else "receiver is broken")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if not self.port:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()  # held answers go out, or the shutdown would wait for them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"
