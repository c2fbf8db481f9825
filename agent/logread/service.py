"""Answers the core's `logs_request` frames: one-shot reads and follows, bounded and refused clearly.

Only what [logs] allows is read, whatever [exec] says: journalctl (if `journal` is on), the
allowlisted files, and on Windows the Event Log channels of `eventlogs`. File and Event Log reads
run in a thread; journalctl is an asyncio subprocess. Each follow is
rate-limited to max_bytes_per_second (a flood is skipped and the next chunk says so), ends after
follow_timeout, on `logs_cancel`, or when the socket ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from servermanager.agent.logread.config import Allowlist, LogRefused, LogsSettings, journal_note, sources
from servermanager.agent.logread.limits import FLUSH_EVERY, Bucket, EngineFailed, Send
from servermanager.common.protocol import (
    CONTAINER_PREFIX,
    DEFAULT_MAX_FRAME_BYTES,
    EVENTLOG_PREFIX,
    JOURNAL,
    MAX_LOG_ENTRIES_PER_CHUNK,
    LogEntry,
    LogQuery,
    LogsCancel,
    LogsChunk,
    LogSources,
    LogsRequest,
)

if TYPE_CHECKING:
    from servermanager.agent.containers import ContainerWatcher
    from servermanager.agent.logread.eventlog import EvtLogApi, Formatter

log = logging.getLogger(__name__)

# What one poll of a follow read: its entries, notes for the user, and whether any were cut.
Polled = tuple[list[LogEntry], list[str], bool]

ONE_SHOT_TIMEOUT = 20.0  # seconds journalctl may take for one read
EVENTLOG_POLL_LIMIT = 10_000  # Event Log records one follow poll turns into entries; more are skipped
_entry_size = msgspec.json.Encoder().encode


def _size(e: LogEntry) -> int:
    return len(e.message.encode()) + 40


class LogService:
    """The agent's log reader: `handle(frame, send)` for each logs frame, `close()` when the socket ends."""

    def __init__(
        self,
        settings: LogsSettings,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        poll_every: float = 0.5,
        journalctl: str | None = None,
        containers: ContainerWatcher | None = None,
        eventlog: tuple[EvtLogApi, Formatter] | None = None,
    ) -> None:
        self.settings = settings
        self.containers = containers  # the [containers] engine, for container:<name> sources
        self.allow = Allowlist(settings.files)
        self.max_frame_bytes = max_frame_bytes
        self.poll_every = poll_every
        self._journalctl = journalctl  # tests may point it elsewhere; None: looked up on PATH
        # win32evtlog and its message formatter; tests hand a fake; None: pywin32's, on Windows.
        self.eventlog = eventlog
        self._follows: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.served = 0
        self.refused = 0

    def sources(self) -> LogSources:
        out = sources(self.settings, self.allow)
        if self.settings.containers and self.containers is not None:
            out = msgspec.structs.replace(out, containers=True)
        if self.settings.eventlogs and self._eventlog_api() is not None:
            out = msgspec.structs.replace(out, eventlogs=list(self.settings.eventlogs))
        return out

    def _eventlog_api(self) -> tuple[EvtLogApi, Formatter] | None:
        if self.eventlog is None and sys.platform == "win32":
            from servermanager.agent.logread.eventlog import load_api

            self.eventlog = load_api()
        return self.eventlog

    @property
    def following(self) -> int:
        return len(self._follows)

    # ------------------------------------------------------------ frames

    def handle(self, frame: LogsRequest | LogsCancel, send: Send) -> None:
        if isinstance(frame, LogsCancel):
            task = self._follows.pop(frame.request_id, None)
            if task is not None:
                task.cancel()
            return
        # Counted here, not in the task: two requests in one read must not both find a free slot.
        busy = frame.follow and len(self._follows) >= self.settings.max_follows
        task = asyncio.create_task(self._serve(frame, send, busy), name=f"logs-{frame.request_id[:16]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if frame.follow and not busy:
            self._follows[frame.request_id] = task
            task.add_done_callback(functools.partial(self._forget, frame.request_id))

    def _forget(self, rid: str, task: asyncio.Task[None]) -> None:
        if self._follows.get(rid) is task:
            del self._follows[rid]

    async def close(self) -> None:
        """Stop everything being read (the socket they were for is gone)."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, req: LogsRequest, send: Send, busy: bool = False) -> None:
        q = req.query
        what = f"logs {req.request_id} ({'follow ' if req.follow else ''}{q.source})"
        try:
            if busy:
                raise LogRefused(
                    f"this agent follows at most {self.settings.max_follows} log(s) at once ([logs] max_follows)",
                    "busy",
                )
            if q.source == JOURNAL:
                await self._journal(req, send)
            elif q.source.startswith(CONTAINER_PREFIX):
                await self._container(req, send)
            elif q.source.startswith(EVENTLOG_PREFIX):
                await self._event_log(req, send)
            else:
                await self._file(req, send)
            self.served += 1
        except LogRefused as exc:
            self.refused += 1
            log.info("%s refused: %s", what, exc)
            await self._emit(send, req.request_id, [], eof=True, error=str(exc), code=exc.code)
        except EngineFailed as exc:
            log.info("%s: %s", what, exc)
            await self._emit(send, req.request_id, [], eof=True, error=str(exc)[:2000], code=exc.code)
        except TimeoutError:
            log.info("%s: journalctl took too long", what)
            await self._emit(
                send, req.request_id, [], eof=True, error="journalctl took too long", code="timeout"
            )
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            return  # the socket went away: nobody to tell
        except Exception as exc:
            log.exception("%s failed", what)
            await self._emit(
                send, req.request_id, [], eof=True, error=f"reading failed: {exc!r}"[:500], code="failed"
            )

    async def _emit(
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
    ) -> None:
        """Entries in as many chunks as the frame size needs; flags and words go with the last."""
        budget = self.max_frame_bytes // 2
        batch: list[LogEntry] = []
        size = 0
        for e in entries:
            n = len(_entry_size(e))
            if batch and (size + n > budget or len(batch) >= MAX_LOG_ENTRIES_PER_CHUNK):
                await send(LogsChunk(request_id=rid, entries=batch))
                batch, size = [], 0
            batch.append(e)
            size += n
        with contextlib.suppress(ConnectionError):
            await send(
                LogsChunk(
                    request_id=rid,
                    entries=batch,
                    eof=eof,
                    truncated=truncated,
                    note=note[:2000] if note else None,
                    error=error[:2000] if error else None,
                    code=code,  # type: ignore[arg-type]
                )
            )

    async def _poll_follow(
        self, req: LogsRequest, send: Send, poll: Callable[[Bucket], Awaitable[Polled | None]]
    ) -> None:
        """A follow by polling (files, the Event Log): every poll_every, what `poll` read within
        max_bytes_per_second goes out as one chunk with its notes, until follow_timeout (said in a
        last chunk). `poll` returns None when there is nothing to read yet (a file mid-rotation)."""
        bucket = Bucket(self.settings.max_bytes_per_second)
        try:
            async with asyncio.timeout(self.settings.follow_timeout):
                while True:
                    await asyncio.sleep(self.poll_every)
                    got = await poll(bucket)
                    if got is None:
                        continue
                    entries, notes, cut = got
                    if entries or notes:
                        await self._emit(
                            send, req.request_id, entries, truncated=cut, note="; ".join(notes) or None
                        )
        except TimeoutError:
            await self._follow_ended(req, send)

    async def _follow_ended(self, req: LogsRequest, send: Send) -> None:
        note = f"follow ended after {self.settings.follow_timeout:g}s ([logs] follow_timeout)"
        await self._emit(send, req.request_id, [], eof=True, note=note)

    # ------------------------------------------------------------ files

    def _file_query(self, q: LogQuery) -> str:
        if q.unit is not None or q.priority is not None or q.since is not None or q.until is not None:
            raise LogRefused(
                "unit, priority, since and until filter the journal only; a file takes lines and match",
                "invalid",
            )
        return self.allow.resolve(q.source)

    async def _file(self, req: LogsRequest, send: Send) -> None:
        from servermanager.agent.logread.files import Follower, tail

        q, s = req.query, self.settings
        real = self._file_query(q)
        lines = min(q.lines, s.max_lines_per_request)
        if not req.follow:
            got = await asyncio.to_thread(tail, real, lines, s.max_bytes_per_request, q.match)
            await self._emit(
                send,
                req.request_id,
                self._lines(got.lines, None),
                eof=True,
                truncated=got.truncated,
                note=got.note,
            )
            return
        follower = await asyncio.to_thread(Follower, q.source, real, self.allow.resolve)
        try:
            got = await asyncio.to_thread(
                tail, real, lines, s.max_bytes_per_request, q.match, follower.offset
            )
            await self._emit(
                send, req.request_id, self._lines(got.lines, None), truncated=got.truncated, note=got.note
            )

            async def poll(bucket: Bucket) -> Polled | None:
                try:
                    polled = await asyncio.to_thread(follower.poll, max(1, bucket.available()))
                except LogRefused as exc:  # rotated into something the allowlist refuses
                    raise LogRefused(f"stopped following: {exc}", exc.code) from None
                except FileNotFoundError:
                    return None
                bucket.take(sum(len(x) + 1 for x in polled.lines))
                notes = list(polled.notes)
                if polled.skipped:
                    notes.append(
                        f"{polled.skipped} bytes skipped: more than max_bytes_per_second = "
                        f"{s.max_bytes_per_second} arrived"
                    )
                lines_now = [x for x in polled.lines if q.match is None or q.match in x]
                return self._lines(lines_now, time.time()), notes, bool(polled.skipped)

            await self._poll_follow(req, send, poll)
        finally:
            follower.close()

    @staticmethod
    def _lines(lines: list[str], ts: float | None) -> list[LogEntry]:
        return [LogEntry(ts, None, None, x) for x in lines]

    # ------------------------------------------------------------ containers

    async def _container(self, req: LogsRequest, send: Send) -> None:
        from servermanager.agent.logread.containers import read_container

        if not self.settings.containers:
            raise LogRefused("container logs are off in this agent's config ([logs] containers = false)")
        if self.containers is None:
            raise LogRefused("container logs need [containers] enabled in this agent's config")
        await read_container(self.settings, self.containers, self._emit, req, send)

    # ------------------------------------------------------------ Windows Event Log

    async def _event_log(self, req: LogsRequest, send: Send) -> None:
        from servermanager.agent.logread.eventlog import Follower, entry_size, passes, read_recent

        q, s = req.query, self.settings
        channel = q.source[len(EVENTLOG_PREFIX) :]
        if channel not in s.eventlogs:
            raise LogRefused(f"the {channel[:100]!r} event log is not in this agent's [logs] eventlogs")
        got = self._eventlog_api()
        if got is None:
            raise LogRefused(
                "the Windows Event Log can be read only where the agent runs on Windows (with pywin32)"
            )
        api, fmt = got
        lines = min(q.lines, s.max_lines_per_request)
        if not req.follow:
            recent = await asyncio.to_thread(
                read_recent, api, channel, q, lines, s.max_bytes_per_request, fmt
            )
            await self._emit(
                send, req.request_id, recent.entries, eof=True, truncated=recent.truncated, note=recent.note
            )
            return
        # The follower first: the first read stops at its record number, the polls go on from it.
        follower = await asyncio.to_thread(Follower, api, channel, fmt)
        try:
            recent = await asyncio.to_thread(
                read_recent, api, channel, q, lines, s.max_bytes_per_request, fmt, follower.last
            )
            await self._emit(
                send, req.request_id, recent.entries, truncated=recent.truncated, note=recent.note
            )

            async def poll(bucket: Bucket) -> Polled:
                polled, skipped = await asyncio.to_thread(follower.poll, EVENTLOG_POLL_LIMIT)
                batch = []
                for e in polled:
                    if not passes(e, q):
                        continue
                    if bucket.take(entry_size(e)):
                        batch.append(e)
                    else:
                        skipped += 1
                notes = follower.take_notes()
                if skipped:
                    notes.append(
                        f"{skipped} entries skipped: over max_bytes_per_second = {s.max_bytes_per_second}"
                    )
                return batch, notes, bool(skipped)

            await self._poll_follow(req, send, poll)
        finally:
            await asyncio.to_thread(follower.close)

    # ------------------------------------------------------------ journal

    async def _journal(self, req: LogsRequest, send: Send) -> None:
        from servermanager.agent.logread.journal import entries, journal_argv

        q, s = req.query, self.settings
        exe = self._journalctl
        if exe is None:
            note = journal_note(s)
            if note is not None:
                raise LogRefused(f"the journal cannot be read: {note}")
            exe = shutil.which("journalctl") or "journalctl"
        elif not s.journal:
            raise LogRefused(f"the journal cannot be read: {journal_note(s)}")
        lines = min(q.lines, s.max_lines_per_request)
        argv = journal_argv(exe, q, lines, follow=req.follow, directory=s.journal_directory)
        if not req.follow:
            kept: collections.deque[LogEntry] = collections.deque()
            used = 0
            dropped = 0
            async for e in entries(argv, timeout=ONE_SHOT_TIMEOUT):
                if q.match is not None and q.match not in e.message:
                    continue
                kept.append(e)
                used += _size(e)
                while used > s.max_bytes_per_request and kept:
                    used -= _size(kept.popleft())  # the newest entries are the ones to keep
                    dropped += 1
            note = (
                f"{dropped} older entries left out: over max_bytes_per_request = {s.max_bytes_per_request}"
                if dropped
                else None
            )
            await self._emit(send, req.request_id, list(kept), eof=True, truncated=bool(dropped), note=note)
            return
        await self._journal_follow(req, send, argv)

    async def _journal_follow(self, req: LogsRequest, send: Send, argv: list[str]) -> None:
        from servermanager.agent.logread.journal import entries

        q, s = req.query, self.settings
        pending: list[LogEntry] = []
        skipped = 0
        bucket = Bucket(s.max_bytes_per_second)

        async def read() -> None:
            nonlocal skipped
            async for e in entries(argv, timeout=None):
                if q.match is not None and q.match not in e.message:
                    continue
                if bucket.take(_size(e)):
                    pending.append(e)
                else:
                    skipped += 1

        reader = asyncio.create_task(read(), name=f"journal-{req.request_id[:16]}")
        try:
            async with asyncio.timeout(s.follow_timeout):
                while True:
                    # Sent in chunks a quarter second apart: one frame per entry would cost the
                    # core a send per line of a busy journal.
                    await asyncio.sleep(FLUSH_EVERY)
                    batch, pending[:] = list(pending), []
                    cut, skipped = skipped, 0
                    if batch or cut:
                        note = f"{cut} entries skipped: over max_bytes_per_second = {s.max_bytes_per_second}"
                        await self._emit(
                            send, req.request_id, batch, truncated=bool(cut), note=note if cut else None
                        )
                    if reader.done():
                        break
            reader.result()  # journalctl ended (it should not while following): say why
            await self._emit(send, req.request_id, [], eof=True, note="journalctl ended")
        except TimeoutError:
            await self._follow_ended(req, send)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
