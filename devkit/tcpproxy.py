"""A loopback TCP proxy for tests and benchmarks: cut and restore a link (Redis), or balance over backends (cores)."""

from __future__ import annotations

import asyncio
import contextlib

from devkit.ports import free_port


class TcpProxy:
    """Listens on 127.0.0.1:<port> and pipes each connection to the first backend that accepts it.

    With one backend it is a link that `cut()` breaks (open connections closed, new ones refused)
    and `restore()` mends; with several it is a load balancer that skips dead backends, as nginx or
    HAProxy would with health checks.
    """

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.port = free_port()
        self.open = True
        self.connections = 0  # accepted and piped to a backend
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    def cut(self) -> None:
        self.open = False
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.open = True

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        for host, port in self.backends:
            try:
                up_reader, up_writer = await asyncio.open_connection(host, port)
            except OSError:
                continue
            break
        else:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        done = asyncio.Event()
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, done))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await done.wait()
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, done: asyncio.Event) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        done.set()
