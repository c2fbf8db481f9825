"""Logs relayed between an agent and whoever asked: one-shot reads for REST, follows for one client socket.

The core stores no log line: it asks the node's agent (`logs_request`), passes the agent's
`logs_chunk` frames on to the one requester, and forgets the request at its end, when the agent
goes away, or when the client does (then the agent gets `logs_cancel`). Request ids on the agent
socket are the core's own, so clients cannot collide with or guess each other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from servermanager.common.protocol import (
    MAX_LOG_LINES,
    LogEntry,
    LogQuery,
    LogsCancel,
    LogsChunk,
    LogSources,
    LogsRequest,
)
from servermanager.core.nodes import Nodes, NodeState

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 30.0  # seconds a one-shot read may take, agent and journalctl included
MAX_FOLLOWS_PER_CLIENT = 4
OFFLINE = "the node went offline"

# What a follow's owner gets: a chunk for it (request_id already the owner's); False stops the follow.
Deliver = Callable[[LogsChunk], bool]


class LogFailure(Exception):
    """A read that got no lines: refused by the agent, offline, timed out. `code` is LogErrorCode."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Request:
    node_id: int
    queue: asyncio.Queue[LogsChunk] | None = None  # a one-shot read's chunks
    deliver: Deliver | None = None  # a follow's owner
    owner: object = None  # the client socket a follow belongs to
    owner_rid: str = ""


@dataclass
class Result:
    entries: list[LogEntry] = field(default_factory=list)
    truncated: bool = False
    notes: list[str] = field(default_factory=list)


class LogRelay:
    def __init__(self, nodes: Nodes) -> None:
        self.nodes = nodes
        self._tasks: set[asyncio.Task[None]] = set()
        self.sources: dict[int, LogSources] = {}  # by node id, as each agent's hello said
        self._pending: dict[str, _Request] = {}  # by the core's request id
        self.dropped = 0  # chunks nobody waited for

    def set_sources(self, node_id: int, sources: LogSources | None) -> None:
        if sources is None:
            self.sources.pop(node_id, None)
        else:
            self.sources[node_id] = sources

    def follows(self, owner: object) -> list[str]:
        return [r.owner_rid for r in self._pending.values() if r.owner is owner and r.deliver is not None]

    # ------------------------------------------------------------ one-shot

    async def fetch(self, node: NodeState, query: LogQuery, timeout: float = FETCH_TIMEOUT) -> Result:
        link = node.link
        if link is None:
            raise LogFailure("offline", f"node {node.name} is offline")
        rid = secrets.token_hex(8)
        queue: asyncio.Queue[LogsChunk] = asyncio.Queue()
        self._pending[rid] = _Request(node.id, queue=queue)
        out = Result()
        try:
            await link.send(LogsRequest(request_id=rid, query=query))
            async with asyncio.timeout(timeout):
                while True:
                    chunk = await queue.get()
                    if chunk.error is not None:
                        raise LogFailure(chunk.code or "failed", chunk.error)
                    room = MAX_LOG_LINES - len(out.entries)
                    if len(chunk.entries) > room:
                        out.truncated = True  # the agent sent more than any request may ask for
                    out.entries.extend(chunk.entries[: max(0, room)])
                    out.truncated |= chunk.truncated
                    if chunk.note:
                        out.notes.append(chunk.note)
                    if chunk.eof:
                        return out
        except TimeoutError:
            raise LogFailure("timeout", f"node {node.name} did not answer within {timeout:g}s") from None
        except ConnectionError:
            raise LogFailure("offline", f"node {node.name} went offline") from None
        finally:
            self._pending.pop(rid, None)

    # ------------------------------------------------------------ follows

    async def follow(
        self, owner: object, owner_rid: str, node: NodeState, query: LogQuery, deliver: Deliver
    ) -> None:
        """Start following for `owner`; LogFailure if it cannot start (the agent may refuse later,
        which arrives as a chunk with an error)."""
        mine = self.follows(owner)
        if owner_rid in mine:
            raise LogFailure("invalid", f"request id {owner_rid!r} is already following")
        if len(mine) >= MAX_FOLLOWS_PER_CLIENT:
            raise LogFailure(
                "busy", f"at most {MAX_FOLLOWS_PER_CLIENT} follows per connection; stop one first"
            )
        link = node.link
        if link is None:
            raise LogFailure("offline", f"node {node.name} is offline")
        rid = secrets.token_hex(8)
        self._pending[rid] = _Request(node.id, deliver=deliver, owner=owner, owner_rid=owner_rid)
        try:
            await link.send(LogsRequest(request_id=rid, query=query, follow=True))
        except ConnectionError:
            self._pending.pop(rid, None)
            raise LogFailure("offline", f"node {node.name} went offline") from None

    async def stop(self, owner: object, owner_rid: str) -> bool:
        for rid, r in list(self._pending.items()):
            if r.owner is owner and r.owner_rid == owner_rid:
                del self._pending[rid]
                await self._cancel(rid, r.node_id)
                return True
        return False

    async def owner_gone(self, owner: object) -> None:
        for rid, r in list(self._pending.items()):
            if r.owner is owner:
                del self._pending[rid]
                await self._cancel(rid, r.node_id)

    async def _cancel(self, rid: str, node_id: int) -> None:
        st = self.nodes.get(node_id)
        if st is not None and st.link is not None:
            # A failed send is fine: the agent stops its follows when its socket ends anyway.
            with contextlib.suppress(ConnectionError):
                await st.link.send(LogsCancel(request_id=rid))

    # ------------------------------------------------------------ from agents

    def on_chunk(self, node_id: int, chunk: LogsChunk) -> None:
        """A `logs_chunk` from a node's agent (the gateway's call; never waits)."""
        r = self._pending.get(chunk.request_id)
        if r is None or r.node_id != node_id:
            self.dropped += 1
            log.debug(
                "node %d sent logs for request %.32r, which is unknown or ended; dropped",
                node_id,
                chunk.request_id,
            )
            return
        if r.queue is not None:
            r.queue.put_nowait(chunk)
            return
        assert r.deliver is not None
        if chunk.eof:
            del self._pending[chunk.request_id]
        out = LogsChunk(
            request_id=r.owner_rid,
            entries=chunk.entries,
            truncated=chunk.truncated,
            eof=chunk.eof,
            error=chunk.error,
            code=chunk.code,
            note=chunk.note,
            node_id=node_id,
        )
        if not r.deliver(out) and not chunk.eof:
            # The owner may no longer read logs (its role changed) or cannot keep up: end it.
            self._pending.pop(chunk.request_id, None)
            task = asyncio.create_task(self._cancel(chunk.request_id, node_id), name="logs-cancel")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def node_gone(self, node_id: int) -> None:
        """The node's agent socket ended: every request to it ends, and its owners hear why."""
        for rid, r in list(self._pending.items()):
            if r.node_id != node_id:
                continue
            end = LogsChunk(request_id=rid, eof=True, error=OFFLINE, code="offline")
            if r.queue is not None:
                r.queue.put_nowait(end)
                continue
            del self._pending[rid]
            assert r.deliver is not None
            r.deliver(
                LogsChunk(request_id=r.owner_rid, eof=True, error=OFFLINE, code="offline", node_id=node_id)
            )
