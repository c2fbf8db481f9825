"""Container output (`container:<name>` sources) through the engine's logs endpoint: Docker's
multiplexed stream decoded into lines, bounded like the other readers, one-shot or followed."""

from __future__ import annotations

import asyncio
import collections
import re
import struct
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from servermanager.agent.logread.config import LogRefused, LogsSettings
from servermanager.agent.logread.limits import FLUSH_EVERY, Bucket, EngineFailed, Send
from servermanager.common.protocol import CONTAINER_PREFIX, MAX_LOG_MESSAGE, LogEntry, LogsRequest

if TYPE_CHECKING:
    from servermanager.agent.containers import ContainerWatcher, Engine


class Emit(Protocol):
    """LogService._emit: entries in chunks as the frame size allows, flags with the last."""

    async def __call__(
        self,
        send: Send,
        rid: str,
        entries: list[LogEntry],
        *,
        eof: bool = False,
        truncated: bool = False,
        note: str | None = None,
        error: str | None = None,
        code: str | None = None,
    ) -> None: ...


# Docker's container names (and ids): never a path, a query or an option.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}
_HEADER = struct.Struct(">BxxxL")


class Demux:
    """Docker's log stream as lines: with no TTY, frames of an 8-byte header (stream: 1 stdout,
    2 stderr; 3 zero bytes; payload size, big-endian) and the payload; with a TTY, raw bytes.
    Which one is told by the first header, as the Docker CLI's stdcopy does."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.raw: bool | None = None
        self.partial: dict[str, bytes] = {}

    def feed(self, data: bytes) -> Iterator[tuple[str, str]]:
        """(stream, line) for each complete line in what has arrived so far."""
        self.buf += data
        if self.raw is None and len(self.buf) >= 8:
            self.raw = not (self.buf[0] in _STREAMS and self.buf[1:4] == b"\0\0\0")
        if self.raw is None:
            return
        if self.raw:
            chunk, self.buf = bytes(self.buf), bytearray()
            yield from self._lines("stdout", chunk)
            return
        while len(self.buf) >= 8:
            kind, size = _HEADER.unpack_from(self.buf)
            if len(self.buf) < 8 + size:
                break
            payload = bytes(self.buf[8 : 8 + size])
            del self.buf[: 8 + size]
            yield from self._lines(_STREAMS.get(kind, "stdout"), payload)

    def _lines(self, stream: str, payload: bytes) -> Iterator[tuple[str, str]]:
        data = self.partial.pop(stream, b"") + payload
        *lines, rest = data.split(b"\n")
        if rest:
            if len(rest) > 4 * MAX_LOG_MESSAGE:  # a line with no end in sight is cut, not hoarded
                lines.append(rest)
            else:
                self.partial[stream] = rest
        for line in lines:
            yield stream, line.decode("utf-8", "replace").rstrip("\r")

    def flush(self) -> Iterator[tuple[str, str]]:
        """What is left when the stream ends: a last line without its newline."""
        for stream, rest in list(self.partial.items()):
            yield stream, rest.decode("utf-8", "replace")
        self.partial.clear()


def entry(stream: str, line: str) -> LogEntry:
    """One line as asked with timestamps=1: "2024-05-01T10:00:00.123456789Z message"."""
    ts = None
    stamp, sep, message = line.partition(" ")
    if sep and stamp[:2].isdigit() and stamp.endswith("Z"):
        head, dot, frac = stamp[:-1].partition(".")
        try:
            ts = datetime.fromisoformat(f"{head}.{frac[:6].ljust(6, '0')}+00:00" if dot else f"{head}+00:00")
        except ValueError:
            ts = None
    if ts is None:
        message = line
    if len(message) > MAX_LOG_MESSAGE:
        message = message[: MAX_LOG_MESSAGE - 1] + "…"
    return LogEntry(ts.timestamp() if ts else None, None, stream, message)


def container_name(source: str) -> str:
    name = source[len(CONTAINER_PREFIX) :]
    if not _NAME.fullmatch(name):
        raise LogRefused(f"invalid container name {name[:100]!r}", "invalid")
    return name


async def read_container(
    s: LogsSettings, watcher: ContainerWatcher, emit: Emit, req: LogsRequest, send: Send
) -> None:
    from servermanager.agent.containers import EngineError

    q = req.query
    name = container_name(q.source)
    if q.unit is not None or q.priority is not None:
        raise LogRefused("unit and priority filter the journal only", "invalid")
    engine = watcher._find()
    if engine is None:
        raise EngineFailed(f"no container engine socket at {' or '.join(watcher.settings.sockets())}")
    lines = min(q.lines, s.max_lines_per_request)
    params = {"stdout": "1", "stderr": "1", "timestamps": "1", "tail": str(lines)}
    if q.since is not None:
        params["since"] = str(int(q.since))
    if q.until is not None:
        params["until"] = str(int(q.until))
    try:
        if req.follow:
            params["follow"] = "1"
            await _follow(s, emit, req, send, engine, params)
        else:
            await _once(s, emit, req, send, engine, params, lines)
    except EngineError as exc:
        code = "not_found" if exc.status == 404 else "failed"
        raise EngineFailed(f"container {name}: {exc}", code) from None


async def _once(
    s: LogsSettings,
    emit: Emit,
    req: LogsRequest,
    send: Send,
    engine: Engine,
    params: dict[str, str],
    lines: int,
) -> None:
    q = req.query
    demux = Demux()
    kept: collections.deque[LogEntry] = collections.deque(maxlen=max(1, lines))
    used = 0
    truncated = False

    def keep(stream: str, line: str) -> None:
        if q.match is None or q.match in line:
            kept.append(entry(stream, line))

    async with engine.stream(f"/containers/{container_name(q.source)}/logs", params) as body:
        async with asyncio.timeout(engine.timeout * 4):
            while True:
                data = await body.readany()
                if not data:
                    break
                used += len(data)
                for stream, line in demux.feed(data):
                    keep(stream, line)
                if used > s.max_bytes_per_request:
                    truncated = True  # the engine sends oldest first: what is read so far is kept
                    break
    for stream, line in demux.flush():
        keep(stream, line)
    note = f"cut at max_bytes_per_request = {s.max_bytes_per_request}" if truncated else None
    await emit(send, req.request_id, list(kept) if lines else [], eof=True, truncated=truncated, note=note)


async def _follow(
    s: LogsSettings, emit: Emit, req: LogsRequest, send: Send, engine: Engine, params: dict[str, str]
) -> None:
    q = req.query
    demux = Demux()
    pending: list[LogEntry] = []
    skipped = 0
    bucket = Bucket(s.max_bytes_per_second)
    ended = asyncio.Event()

    async with engine.stream(f"/containers/{container_name(q.source)}/logs", params) as body:

        async def read() -> None:
            nonlocal skipped
            try:
                while True:
                    data = await body.readany()
                    if not data:
                        return
                    for stream, line in demux.feed(data):
                        if q.match is not None and q.match not in line:
                            continue
                        if bucket.take(len(line) + 40):
                            pending.append(entry(stream, line))
                        else:
                            skipped += 1
            finally:
                ended.set()

        reader = asyncio.create_task(read(), name=f"container-logs-{req.request_id[:16]}")
        try:
            async with asyncio.timeout(s.follow_timeout):
                while True:
                    # Chunks a quarter second apart, as for the journal: not a frame per line.
                    await asyncio.sleep(FLUSH_EVERY)
                    batch, pending[:] = list(pending), []
                    cut, skipped = skipped, 0
                    if batch or cut:
                        note = f"{cut} lines skipped: over max_bytes_per_second = {s.max_bytes_per_second}"
                        await emit(
                            send, req.request_id, batch, truncated=bool(cut), note=note if cut else None
                        )
                    if ended.is_set():
                        break
            reader.result()
            await emit(send, req.request_id, [], eof=True, note="the container's output ended (it stopped)")
        except TimeoutError:
            await emit(
                send,
                req.request_id,
                [],
                eof=True,
                note=f"follow ended after {s.follow_timeout:g}s ([logs] follow_timeout)",
            )
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
