"""Incident snapshots on the core: asked of a node's agent once when an alert fires, kept with it.

The engine calls `alert_fired` from inside its evaluation (it must not wait), so the request is
sent and the answer stored by tasks of this service. One request per node at a time: alerts of a
node that fire together (cpu and load from one sample) share the answer, and an alert that fires
within REUSE seconds of a snapshot of its node gets that one; the agent would refuse a new one so
soon anyway. Requests are bounded (MAX_PENDING), time out after TIMEOUT, and an answer nobody is
waiting for (unknown, late, or from another node) is dropped with a log line.

Every alert that asked gets a row in `alert_snapshots`: the snapshot and its summary for the
notification, or the reason there is none (snapshots off in the agent's config, no answer, the
node offline, a sample from a backfill). The first row wins; the alert's retention removes it.
Once a row is stored the alert is announced again (an `alert` event), so a desktop showing that
alert's story reloads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec

from servermanager.common.alerts import OFFLINE, Alert
from servermanager.common.incidents import IncidentSnapshot, problems, summary
from servermanager.common.protocol import Incident, IncidentRequest
from servermanager.core.alerts.engine import AlertEngine
from servermanager.core.nodes import AgentLink, Nodes
from servermanager.core.store.db import Database

log = logging.getLogger(__name__)

TIMEOUT = 15.0  # seconds an agent has to answer (its measurement window, the journal, the trip)
REUSE = 10.0  # seconds a node's snapshot also serves its alerts that fire after it
MAX_PENDING = 1000  # requests waiting for an answer, all nodes together
STALE = 120.0  # an alert fired on a sample older than this (a backfill) gets no snapshot of now
LOOKBACK_MARGIN = 60.0  # the journal is asked for from this long before the alert started
AWAITED = "requested from the agent; no answer yet"

_snapshot = msgspec.json.Decoder(IncidentSnapshot)


@dataclass
class _Request:
    node_id: int
    deadline: float  # monotonic
    alerts: list[tuple[int, str]] = field(default_factory=list)  # (alert id, metric)


class Incidents:
    def __init__(
        self, db: Database, nodes: Nodes, engine: AlertEngine, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db = db
        self.nodes = nodes
        self.engine = engine
        self.clock = clock
        self.pending: dict[str, _Request] = {}  # by request id
        self._by_node: dict[int, str] = {}  # node id -> its pending request id
        self._recent: dict[int, tuple[float, IncidentSnapshot]] = {}  # node id -> (when, snapshot)
        # Alerts whose answer arrived and is being stored: still "awaited" for a reader until then.
        self._saving: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.requested = 0  # requests sent to agents
        self.dropped = 0  # answers nobody waited for

    # ------------------------------------------------------------ asking

    def alert_fired(self, alert: Alert, ts: float) -> None:
        """The engine's hook: `alert` just fired on the sample stamped `ts`. Never waits."""
        if alert.metric == OFFLINE:
            return  # the agent is away: there is nobody to ask
        aid, node_id = alert.id, alert.node_id
        age = time.time() - ts
        if age > STALE:
            self._store([(aid, alert.metric)], error=f"no snapshot: the alert fired on a sample from "
                        f"{age:.0f}s ago (sent late, after an outage), and the processes now would not "
                        "show that moment")  # fmt: skip
            return
        rid = self._by_node.get(node_id)
        if rid is not None:
            self.pending[rid].alerts.append((aid, alert.metric))
            return
        recent = self._recent.get(node_id)
        if recent is not None and self.clock() - recent[0] <= REUSE:
            self._store([(aid, alert.metric)], snapshot=recent[1])
            return
        st = self.nodes.get(node_id)
        link = st.link if st is not None else None
        if link is None:
            self._store([(aid, alert.metric)], error="no snapshot: the node was offline when the alert fired")
            return
        if len(self.pending) >= MAX_PENDING:
            log.warning("alert %d: no snapshot asked, %d requests already wait", aid, len(self.pending))
            self._store([(aid, alert.metric)], error="no snapshot: too many were being taken at once")
            return
        rid = secrets.token_hex(8)
        self.pending[rid] = _Request(node_id, self.clock() + TIMEOUT, [(aid, alert.metric)])
        self._by_node[node_id] = rid
        self.requested += 1
        lookback = max(0.0, time.time() - alert.started_at) + LOOKBACK_MARGIN
        self._spawn(self._send(link, IncidentRequest(request_id=rid, lookback=round(lookback, 1))), rid)

    async def _send(self, link: AgentLink, frame: IncidentRequest) -> None:
        try:
            await link.send(frame)
        except ConnectionError:
            req = self._take(frame.request_id)
            if req is not None:
                self._save(req.alerts, error="no snapshot: the node went offline before it was asked")

    # ------------------------------------------------------------ answers

    def on_incident(self, node_id: int, frame: Incident) -> None:
        """An `incident` frame from a node's agent (the gateway's call; never waits)."""
        req = self.pending.get(frame.request_id)
        if req is None or req.node_id != node_id:
            self.dropped += 1
            log.warning(
                "node %d answered snapshot request %.32r, which is unknown, timed out or another node's; dropped",
                node_id,
                frame.request_id,
            )
            return
        self._take(frame.request_id)
        snap, error = frame.snapshot, None
        if snap is None:
            error = f"no snapshot: {frame.error or 'the agent gave no reason'}"[:1000]
        elif (why := problems(snap)) is not None:
            log.warning("node %d sent a snapshot too big to keep: %s", node_id, why)
            snap, error = None, f"no snapshot kept: the agent's was too big ({why})"
        else:
            self._recent[node_id] = (self.clock(), snap)
        self._save(req.alerts, snap, error)

    async def sweep(self) -> None:
        """Give up on requests past their time; forget snapshots too old to reuse."""
        now = self.clock()
        for rid in [rid for rid, r in self.pending.items() if r.deadline <= now]:
            req = self._take(rid)
            if req is not None:
                log.info("node %d did not answer snapshot request %s in time", req.node_id, rid)
                self._save(req.alerts, error=f"no snapshot: the agent did not answer within {TIMEOUT:g}s")
        for nid in [nid for nid, (at, _) in self._recent.items() if now - at > REUSE]:
            del self._recent[nid]

    def _take(self, rid: str) -> _Request | None:
        req = self.pending.pop(rid, None)
        if req is not None and self._by_node.get(req.node_id) == rid:
            del self._by_node[req.node_id]
        return req

    # ------------------------------------------------------------ storing

    def _store(
        self,
        alerts: list[tuple[int, str]],
        snapshot: IncidentSnapshot | None = None,
        error: str | None = None,
    ) -> None:
        self._save(alerts, snapshot, error)

    def _save(
        self,
        alerts: list[tuple[int, str]],
        snapshot: IncidentSnapshot | None = None,
        error: str | None = None,
    ) -> None:
        """Queue the rows on the engine's writer, behind the alerts' own rows (which they refer
        to) and in their commit: a dozen snapshots a second must not each cost a transaction."""
        ids = {aid for aid, _ in alerts}
        self._saving |= ids
        body = msgspec.json.encode(snapshot).decode() if snapshot is not None else None
        ts = snapshot.ts if snapshot is not None else time.time()
        rows = [
            (
                "INSERT OR IGNORE INTO alert_snapshots (alert_id, ts, body, summary, error) "
                "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM alerts WHERE id = ?)",
                (aid, ts, body, summary(snapshot, metric) if snapshot is not None else None, error, aid),
            )
            for aid, metric in alerts
        ]
        self.engine.write(rows, then=lambda: self._saved(ids))

    def _saved(self, ids: set[int]) -> None:
        self._saving -= ids
        for aid in sorted(ids):
            self.engine.republish(aid)

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.create_task(self._guard(coro, what), name=f"incident-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guard(coro: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await coro
        except Exception:
            log.exception("incident snapshot %s failed", what)

    async def idle(self) -> None:
        """Wait until every send and store started so far is done (tests, shutdown)."""
        while self._tasks or self._saving:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await self.engine.sync()

    async def close(self) -> None:
        """Finish what is being stored; requests still unanswered are left without a snapshot."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self.idle()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------ reading

    async def for_alert(self, alert: Alert) -> tuple[IncidentSnapshot | None, str | None]:
        """An alert's snapshot, or why it has none (None when none was ever asked for)."""
        # In memory first: an answer being stored leaves `_saving` only after its row is committed,
        # so a reader finds it either here or in the table, never in neither.
        waiting = alert.id in self._saving or any(
            aid == alert.id for r in self.pending.values() for aid, _ in r.alerts
        )
        row = await self.db.fetchone(
            "SELECT body, error FROM alert_snapshots WHERE alert_id = ?", (alert.id,)
        )
        if row is not None:
            if row[0] is not None:
                return _snapshot.decode(row[0]), None
            return None, row[1]
        return (None, AWAITED) if waiting else (None, None)
