"""Alert evaluation as samples arrive, the offline rule from the heartbeat handling, and the outbox.

Cheap per sample: a node's applicable rules (by node id, group, tag and all) are worked out once
and cached until the rules change or the node's group or tags do, so a rule reaches a node that
joins its group or tag later without being edited. The rules are grouped by metric, so each value
is read once; a node with no applicable rule costs one dict lookup. Nothing is read from the
database per sample.

State lives in memory (the open alerts, loaded at startup so a restart continues them); every
change is written by one task, batched into transactions in the order it happened. A transition
and the `alert_deliveries` rows announcing it go in the same transaction. Events go on the bus
once committed. Each alert that fires (but `offline`) is handed to `on_fire`, where the incident
snapshots (core.alerts.incidents) ask its agent what the node is doing.

Several cores on one database (a cluster): ids come from blocks each core reserves in the shared
counter, so the batched writes stay as they are; a node's open alerts are held by the core holding
its agent (`adopt` when it arrives, `hand_off` when it leaves) and the offline rule's by the leader
(`lead`), each read from the database when taken over, so an alert is never opened twice.

Noise control here (grouping, quiet hours and retries belong to the dispatcher):
- silenced (a matching silence), suppressed (a non-offline alert of a node that is offline) and
  flapping alerts write no notifications; an alert still firing once that ends is notified then.
- A firing notification is repeated at `alert_repeat_interval`, doubling each time up to
  `alert_repeat_max`, until the alert resolves or is acknowledged.
- A resolved notification goes only where a firing one went (and not if silenced or suppressed).
- Flapping: a rule x node whose alerts fired or resolved more than `alert_flap_max` times within
  `alert_flap_window` is flapping; its firing notifications wait until that many flips are no
  longer in the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from servermanager.common import rest as m
from servermanager.common.alerts import Alert, AlertTransition, Delivery, WebhookAlert
from servermanager.common.itemmetrics import ITEM_PREFIXES, item_reader
from servermanager.common.metrics import Sample, scalar_getter
from servermanager.common.protocol import AlertEvent
from servermanager.common.series import SERIES_PREFIX, series_reader
from servermanager.core.alerts.machine import Change, Condition, Machine
from servermanager.core.alerts.rules import RuleSpec, RuleStore
from servermanager.core.alerts.silences import Silences, matches
from servermanager.core.bus import Bus
from servermanager.core.nodes import Nodes, NodeState
from servermanager.core.settings import CoreSettings
from servermanager.core.store.db import Database
from servermanager.core.store.values import execute_all

log = logging.getLogger(__name__)

TICK = 0.25  # seconds between sweeps for offline grace, repeats and silence ends
WRITE_GATHER = 0.1  # seconds: the writer's shortest time between two commits
ID_BLOCK = 10_000  # alert ids a core of a cluster reserves at a time in the shared database
_PEAK_EVERY = 5.0  # seconds between writes of peaks that moved without a transition


class AlertError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(slots=True, eq=False)
class Live:
    """An open (pending or firing) alert."""

    id: int
    rule: RuleSpec
    node_id: int
    rule_name: str
    node_name: str
    m: Machine
    acked_by: str | None = None
    acked_at: float | None = None
    notified: bool = False  # a firing notification was written
    repeat_every: float = 0.0
    next_repeat: float = 0.0
    saved_peak: float | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.rule.id, self.node_id)


# One rule as the per-sample loop needs it: the rule, its id, whether it fires above (`>`) and its
# threshold; so an idle rule x node (nearly all of them) costs one comparison, no call.
_Check = tuple[RuleSpec, int, bool, float]


@dataclass(slots=True)
class _Applicable:
    version: int
    group: str
    tags: list[str]
    ids: frozenset[int]
    metrics: list[tuple[Callable[[Any], float | None], list[_Check]]]  # each metric's reader, its rules
    offline: list[RuleSpec]


@dataclass
class _Pending:
    stmts: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    events: list[Alert] = field(default_factory=list)
    after: list[Callable[[], None]] = field(default_factory=list)  # run once the batch is written
    deliveries: bool = False
    written: bool = False  # committed (or failed) and published: what sync() waits for


def _reader(metric: str, above: bool) -> Callable[[Any], float | None]:
    """A rule's metric read from a reading: a scalar field, a named series ("series:..."), or a
    device's, container's or GPU's value ("dev:...", the worst of the items it matches for `above`)."""
    if metric.startswith(SERIES_PREFIX):
        return series_reader(metric[len(SERIES_PREFIX) :])
    if metric.startswith(ITEM_PREFIXES):
        return item_reader(metric, above)
    return scalar_getter(metric)


def applies(rule: RuleSpec, st: NodeState) -> bool:
    t = rule.targets
    return bool(
        t.all
        or (t.nodes and st.id in t.nodes)
        or (t.group is not None and st.group == t.group)
        or (t.tag is not None and t.tag in st.tags)
    )


_ALERT_COLS = (
    "id, rule_id, rule, node_id, node, metric, op, threshold, state, severity, value, peak, "
    "started_at, fired_at, resolved_at, acked_by, acked_at"
)


def alert_from_row(r: Any, silenced: bool = False) -> Alert:
    return Alert(
        id=r[0],
        rule_id=r[1],
        rule=r[2],
        node_id=r[3],
        node=r[4],
        metric=r[5],
        op=r[6],
        threshold=r[7],
        state=r[8],
        severity=r[9],
        value=r[10],
        peak=r[11],
        started_at=r[12],
        fired_at=r[13],
        resolved_at=r[14],
        acked_by=r[15],
        acked_at=r[16],
        silenced=silenced,
    )


class AlertEngine:
    def __init__(self, db: Database, nodes: Nodes, bus: Bus, settings: CoreSettings) -> None:
        self.db = db
        self.nodes = nodes
        self.bus = bus
        self.settings = settings
        self.store = RuleStore(db)
        self.silences = Silences(db)
        self.rules: dict[int, RuleSpec] = {}
        self.open: dict[tuple[int, int], Live] = {}
        self.by_id: dict[int, Live] = {}
        self.by_node: dict[int, dict[int, Live]] = {}
        self.offline_since: dict[int, float] = {}
        self._flips: dict[tuple[int, int], deque[float]] = {}
        self._next_id = 1
        # Ids below this are this core's to hand out. One core alone owns every id above the stored
        # maximum; a core of a cluster owns only the blocks it reserved in the shared counter, so
        # two cores never give one id to two alerts while each still writes its changes batched.
        self._id_end = 0.0 if settings.clustered else float("inf")
        self._blocks: deque[tuple[int, int]] = deque()
        self._refill: asyncio.Task[None] | None = None
        self._version = 0
        self._by_node_rules: dict[int, list[RuleSpec]] = {}
        self._by_group: dict[str, list[RuleSpec]] = {}
        self._by_tag: dict[str, list[RuleSpec]] = {}
        self._all: list[RuleSpec] = []
        self._cache: dict[int, _Applicable] = {}
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._announcing: set[asyncio.Task[None]] = set()
        self._groups: dict[tuple[int, str], float] = {}  # (channel, status) -> its open group's due time
        self._last_peaks = 0.0
        self._last_write = 0.0  # monotonic time the writer last began a commit
        self.shutting_down = False
        # Set, and on_outbox called (the dispatcher's wake-up), after a commit that wrote outbox rows.
        self.outbox_written = asyncio.Event()
        self.on_outbox: Callable[[], None] | None = None
        # Called with an alert that just fired (not `offline`) and the ts of the sample that made it
        # fire: the incident snapshots' hook (core.alerts.incidents). It must not wait.
        self.on_fire: Callable[[Alert, float], None] | None = None
        # Whether this core runs the offline rule: with several cores, only the leader does, so an
        # offline alert opens once (samples' rules run on the core that receives the samples).
        self.leads: Callable[[], bool] = lambda: True
        self._taken_over = not settings.clustered  # the leader's open offline alerts are read in
        self._taking: asyncio.Task[None] | None = None
        # Told of every rule (kind "rule", its id) or silence ("silences", 0) changed here, so the
        # other cores of a cluster reload it from the database they share.
        self.on_change: Callable[[str, int], None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        """Rules, active silences and open alerts from the database, before any agent connects."""
        now = time.time()
        for rule in await self.store.load():
            self.rules[rule.id] = rule
        self._reindex()
        await self.silences.load(now)
        # Above every id ever given (the counter), not just the ones still stored: a receiver that
        # drops repeats by id must never see an old id on a new alert.
        if self.settings.clustered:
            await self._reserve_ids()
            # A cluster's open alerts are held where they are judged: a node's by the core holding its
            # agent (adopt), the offline rule's by the leader (lead); none at start.
            rows = []
        else:
            row = await self.db.fetchone(
                "SELECT max(coalesce((SELECT max(id) FROM alerts), 0), "
                "coalesce((SELECT value FROM counters WHERE name = 'alerts'), 0))"
            )
            self._next_id = (row[0] or 0) + 1
            rows = await self.db.fetchall(f"SELECT {_ALERT_COLS} FROM alerts WHERE state != 'resolved'")
        await self._take_in(rows, now)
        # Every node is offline until its agent reconnects: give them a heartbeat timeout first.
        grace = (self.settings.agent_interval or 5.0) * self.settings.heartbeat_misses + 1.0
        for st in self.nodes.nodes.values():
            if not st.online:
                self.offline_since.setdefault(st.id, now + grace)
        await self._flush()
        log.info(
            "alerting: %d rules, %d open alerts, %d silences",
            len(self.rules),
            len(self.open),
            len(self.silences.active),
        )

    async def _take_in(self, rows: list[Any], now: float) -> None:
        """Open alerts read from the database become this core's to judge (those it holds already stay)."""
        rows = [r for r in rows if r[0] not in self.by_id and (r[1], r[3]) not in self.open]
        if not rows:
            return
        ids = ", ".join(str(int(r[0])) for r in rows)
        notified = {
            r[0]
            for r in await self.db.fetchall(
                f"SELECT DISTINCT alert_id FROM alert_deliveries WHERE status = 'firing' AND alert_id IN ({ids})"
            )
        }
        for r in rows:
            a = alert_from_row(r)
            if a.id in self.by_id or (a.rule_id, a.node_id) in self.open:
                continue  # opened or taken in meanwhile
            known = self.rules.get(a.rule_id)
            mach = Machine(
                state=a.state,  # type: ignore[arg-type]
                severity=a.severity,
                started_at=a.started_at,
                fired_at=a.fired_at,
                value=a.value,
                peak=a.peak,
            )
            lv = Live(a.id, known or _gone_rule(a), a.node_id, a.rule, a.node, mach, a.acked_by, a.acked_at)
            lv.saved_peak = a.peak
            lv.notified = a.id in notified
            lv.repeat_every = self.settings.alert_repeat_interval
            lv.next_repeat = now + lv.repeat_every
            self._register(lv)
            if known is None or not known.enabled:
                self._close(lv, now)
            elif known.offline:
                since = self.offline_since.get(a.node_id)
                self.offline_since[a.node_id] = a.started_at if since is None else min(since, a.started_at)

    # ------------------------------------------------------------ several cores on one database

    async def _reserve_ids(self) -> None:
        """One more block of alert ids from the shared counter, taken in one committed statement."""
        async with self.db.transaction() as con:
            cur = await con.execute(
                "UPDATE counters SET value = value + ? WHERE name = 'alerts' RETURNING value", (ID_BLOCK,)
            )
            row = await cur.fetchone()
        if row is None:
            raise RuntimeError("the alerts counter is missing from the database")
        end = int(row[0]) + 1
        if self._next_id >= self._id_end:
            self._next_id, self._id_end = end - ID_BLOCK, end
        else:
            self._blocks.append((end - ID_BLOCK, end))  # once what is left of this one is used

    def _new_id(self) -> int | None:
        """The id of an alert about to open; None while a core of a cluster waits for its next block
        (the condition is judged again on the next sample or tick, so the alert opens a moment later)."""
        if self._next_id >= self._id_end and self._blocks:
            self._next_id, self._id_end = self._blocks.popleft()
        if self._id_end - self._next_id < ID_BLOCK // 2 and not self._blocks and self._refill is None:
            self._refill = asyncio.create_task(self._refill_ids(), name="alert-ids")
        if self._next_id >= self._id_end:
            return None
        nid = self._next_id
        self._next_id += 1
        return nid

    async def _refill_ids(self) -> None:
        try:
            await self._reserve_ids()
        except Exception as exc:
            log.error("could not reserve alert ids: %s", exc)
        finally:
            self._refill = None

    async def adopt(self, st: NodeState) -> None:
        """A node's agent is now held by this core of a cluster: its open alerts (but the offline
        rule's, the leader's) are judged here from now on, continued from the database rather than
        opened again; the core that held it before let go of them (hand_off)."""
        if not self.settings.clustered:
            return
        rows = await self.db.fetchall(
            f"SELECT {_ALERT_COLS} FROM alerts WHERE node_id = ? AND state != 'resolved'", (st.id,)
        )
        await self._take_in([r for r in rows if not self._offline_rule(r[1])], time.time())

    def hand_off(self, st: NodeState) -> None:
        """The node's agent left this core of a cluster: forget its open alerts (their last changes
        written first), so whichever core holds it next continues them without a second voice."""
        if not self.settings.clustered:
            return
        for lv in list(self.by_node.get(st.id, {}).values()):
            if lv.rule.offline:
                continue
            if lv.m.peak != lv.saved_peak:
                self._sql("UPDATE alerts SET peak = ? WHERE id = ?", lv.m.peak, lv.id)
            self._unregister(lv)

    async def lead(self, leads: bool) -> None:
        """This core became (True) or stopped being the cluster's leader: the offline rule's open
        alerts are taken in from the database, or forgotten here (the next leader continues them)."""
        self._taken_over = False
        if not leads:
            for lv in [lv for lv in self.open.values() if lv.rule.offline]:
                self._unregister(lv)
            return
        await self.sync()
        now = time.time()
        rows = await self.db.fetchall(f"SELECT {_ALERT_COLS} FROM alerts WHERE state != 'resolved'")
        await self._take_in([r for r in rows if self._offline_rule(r[1])], now)
        # Only now: an offline rule judged before the open alerts were read would open them again.
        self._taken_over = True
        for st in list(self.nodes.nodes.values()):
            if st.online:
                self.node_online(st)  # came back while no core led

    async def _take_over(self) -> None:
        try:
            await self.lead(True)
        except Exception as exc:
            log.error("could not read the open offline alerts as the new leader: %s", exc)
        finally:
            self._taking = None

    def _offline_rule(self, rule_id: int) -> bool:
        rule = self.rules.get(rule_id)
        return rule is not None and rule.offline

    async def acked_elsewhere(self, alert_id: int) -> None:
        """Another core acknowledged an alert this core holds: take the acknowledgement in."""
        lv = self.by_id.get(alert_id)
        if lv is None:
            return
        row = await self.db.fetchone("SELECT acked_by, acked_at FROM alerts WHERE id = ?", (alert_id,))
        if row is not None and row[1] is not None and lv.acked_at is None:
            lv.acked_by, lv.acked_at = row[0], row[1]

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._writer(), name="alert-writer"),
            asyncio.create_task(self._ticker(), name="alert-tick"),
        ]

    async def stop(self) -> None:
        for job in (self._refill, self._taking):
            if job is not None:
                job.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._save_peaks(force=True)
        await self._flush()
        if self._announcing:
            await asyncio.gather(*list(self._announcing), return_exceptions=True)

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            # At most one commit per WRITE_GATHER: under churn (a hundred changes a second at 5,000
            # agents) a commit per change cost SQLite more CPU than evaluating every rule. A change
            # after a quiet spell is written at once; sync() (the API) never waits for this.
            wait = self._last_write + WRITE_GATHER - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._wake.clear()
            self._last_write = time.monotonic()
            try:
                # Shielded: a batch taken off the queue is written whole even when the core stops.
                await asyncio.shield(self._flush(self._pending))
            except Exception:
                log.exception("could not write alert changes")

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.tick()
            except Exception:
                log.exception("alert tick failed")

    async def _flush(self, upto: _Pending | None = None) -> None:
        """Write whatever changed, in order, then tell the clients; with `upto`, only until that batch
        is written. Under steady churn the queue is seldom empty, so "until empty" could hold a caller
        (and the lock) for as long as changes kept coming: an API call waited minutes at 5,000 agents."""
        async with self._flush_lock:
            while not (upto is not None and upto.written) and (self._pending.stmts or self._pending.events):
                batch, self._pending = self._pending, _Pending()
                try:
                    if batch.stmts:
                        async with self.db.transaction() as con:
                            await execute_all(con, batch.stmts)
                    if batch.deliveries:
                        self.outbox_written.set()
                        if self.on_outbox is not None:
                            self.on_outbox()
                    for alert in batch.events:
                        self.bus.publish(alert.node_id, AlertEvent(alert=alert))
                finally:
                    batch.written = True
                    for then in batch.after:
                        try:
                            then()
                        except Exception:
                            log.exception("a step after an alert write failed")

    async def sync(self) -> None:
        """Returns once every change so far is committed (for the API's answers); a caller that is
        cancelled meanwhile does not cut the batch short."""
        await asyncio.shield(self._flush(self._pending))

    def _sql(self, sql: str, *params: Any) -> None:
        self._pending.stmts.append((sql, params))
        self._wake.set()

    def write(self, stmts: Iterable[tuple[str, tuple[Any, ...]]], then: Callable[[], None]) -> None:
        """Queue statements behind every alert change made so far, to commit with them; `then` is
        called once they are written, or failed (logged). For rows that refer to an alert (its
        incident snapshot): one ordered stream, and no commit of their own."""
        self._pending.stmts.extend(stmts)
        self._pending.after.append(then)
        self._wake.set()

    def republish(self, alert_id: int) -> None:
        """Tell the clients about an alert again after something shown with it was committed.
        An open alert is sent as it is now; one already closed is read back first."""
        lv = self.by_id.get(alert_id)
        if lv is not None:
            self.bus.publish(lv.node_id, AlertEvent(alert=self.alert(lv)))
            return
        task = asyncio.create_task(self.announce(alert_id), name=f"alert-announce-{alert_id}")
        self._announcing.add(task)
        task.add_done_callback(self._announced)

    def _announced(self, task: asyncio.Task[None]) -> None:
        self._announcing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not announce an alert again: %s", task.exception())

    def _event(self, lv: Live) -> None:
        self._pending.events.append(self.alert(lv))
        self._wake.set()

    # ------------------------------------------------------------ rules and their index

    def _reindex(self) -> None:
        self._by_node_rules, self._by_group, self._by_tag, self._all = {}, {}, {}, []
        for rule in self.rules.values():
            if not rule.enabled:
                continue
            t = rule.targets
            if t.all:
                self._all.append(rule)
                continue
            for nid in t.nodes or ():
                self._by_node_rules.setdefault(nid, []).append(rule)
            if t.group is not None:
                self._by_group.setdefault(t.group, []).append(rule)
            if t.tag is not None:
                self._by_tag.setdefault(t.tag, []).append(rule)
        self._version += 1

    def _applicable(self, st: NodeState) -> _Applicable:
        a = self._cache.get(st.id)
        if a is not None and a.version == self._version and a.group == st.group and a.tags is st.tags:
            return a
        chosen: dict[int, RuleSpec] = {}
        for rule in self._by_node_rules.get(st.id, ()):
            chosen[rule.id] = rule
        for rule in self._by_group.get(st.group, ()):
            chosen[rule.id] = rule
        for tag in st.tags:
            for rule in self._by_tag.get(tag, ()):
                chosen[rule.id] = rule
        for rule in self._all:
            chosen[rule.id] = rule
        # Keyed by direction too: a per-item metric reads the worst item, which depends on it.
        metrics: dict[tuple[str, bool], list[_Check]] = {}
        offline: list[RuleSpec] = []
        for rule in chosen.values():
            if rule.offline:
                offline.append(rule)
            else:
                above = rule.cond.op == ">"
                check = (rule, rule.id, above, rule.cond.threshold)
                metrics.setdefault((rule.metric, above), []).append(check)
        readers = [(_reader(name, above), checks) for (name, above), checks in metrics.items()]
        a = _Applicable(self._version, st.group, st.tags, frozenset(chosen), readers, offline)
        self._cache[st.id] = a
        return a

    def rule_changed(self, rule: RuleSpec | None, rule_id: int, announce: bool = True) -> None:
        """After a rule was created, edited or deleted (None): reindex; close what no longer holds.
        `announce` False: the change came from another core, which told the cluster already."""
        if announce and self.on_change is not None:
            self.on_change("rule", rule_id)
        old = self.rules.get(rule_id)
        if rule is None:
            self.rules.pop(rule_id, None)
            for key in [k for k in self._flips if k[0] == rule_id]:
                del self._flips[key]
        else:
            self.rules[rule_id] = rule
        self._reindex()
        now = time.time()
        for lv in [lv for lv in self.open.values() if lv.rule.id == rule_id]:
            if (
                rule is None
                or not rule.enabled
                or old is None
                or old.metric != rule.metric
                or old.cond.op != rule.cond.op
            ):
                self._close(lv, now)
                continue
            lv.rule = rule
            st = self.nodes.get(lv.node_id)
            if st is None or not applies(rule, st):
                self._close(lv, now)

    # ------------------------------------------------------------ evaluation

    def on_sample(self, st: NodeState, sample: Sample) -> None:
        """A node's newest sample: evaluate the rules that apply to it (called for every one)."""
        try:
            self._evaluate(st, sample)
        except Exception:  # a fault here must never cost the agent its link or its samples
            log.exception("alert evaluation failed for node %d", st.id)

    def _evaluate(self, st: NodeState, sample: Sample) -> None:
        a = self._applicable(st)
        opened = self.by_node.get(st.id)
        if opened:
            stale = [lv for rid, lv in opened.items() if rid not in a.ids]
            for lv in stale:
                self._close(lv, sample.ts)
        ts = sample.ts
        metrics = sample.metrics
        # The hot loop (every sample x every applicable rule): kept to plain comparisons.
        for read, checks in a.metrics:
            v = read(metrics)
            if v is None:
                continue
            for rule, rid, above, threshold in checks:
                live = opened.get(rid) if opened else None
                if live is None:
                    if (v <= threshold) if above else (v >= threshold):
                        continue  # idle and not breached: nothing to do (Condition.breaches, inlined)
                    mach = Machine()
                else:
                    mach = live.m
                changes = mach.step(rule.cond, ts, v)
                if changes:
                    self._apply(rule, st, live, mach, changes, ts)

    def _apply(
        self,
        rule: RuleSpec,
        st: NodeState,
        lv: Live | None,
        mach: Machine,
        changes: Iterable[Change],
        ts: float,
    ) -> None:
        now = time.time()
        for change in changes:
            if change == "pending":
                nid = self._new_id()
                if nid is None:
                    return  # no id yet: the next sample opens it
                lv = Live(nid, rule, st.id, rule.name, st.name, mach)
                self._register(lv)
                self._insert(lv)
                self._transition(lv, ts, "pending")
                continue
            assert lv is not None
            if change == "firing":
                self._fire(lv, ts, now)
            elif change == "escalated":
                self._update(lv)
                self._transition(lv, ts, "firing")
                if lv.notified and self._notifiable(lv, now):
                    self._deliver(lv, "firing", now)
            elif change == "resolved":
                self._resolve(lv, ts, now)
            elif change == "dropped":
                self._drop(lv)
        if lv is not None:
            self._event(lv)

    def _fire(self, lv: Live, ts: float, now: float) -> None:
        self._update(lv)
        self._transition(lv, ts, "firing")
        self._flip(lv.key, now)
        lv.repeat_every = self.settings.alert_repeat_interval
        lv.next_repeat = now + lv.repeat_every
        if self._notifiable(lv, now):
            self._deliver(lv, "firing", now)
            lv.notified = True
        if self.on_fire is not None and not lv.rule.offline:
            try:
                self.on_fire(self.alert(lv), ts)
            except Exception:  # a snapshot is a nice-to-have; the alert itself must go on
                log.exception("could not ask for a snapshot of alert %d", lv.id)

    def _resolve(self, lv: Live, ts: float, now: float) -> None:
        lv.m.state = None
        lv.m.resolved_at = ts
        self._sql(
            "UPDATE alerts SET state = 'resolved', resolved_at = ?, value = ?, peak = ? WHERE id = ?",
            ts,
            lv.m.value,
            lv.m.peak,
            lv.id,
        )
        self._transition(lv, ts, "resolved")
        self._flip(lv.key, now)
        if lv.notified and not self._silenced(lv, now) and not self._suppressed(lv):
            self._deliver(lv, "resolved", now)
        self._unregister(lv)

    def _drop(self, lv: Live) -> None:
        """A pending alert whose condition stopped before `for`: it never fired, so it is forgotten."""
        lv.m.state = None
        self._sql("DELETE FROM alerts WHERE id = ?", lv.id)
        self._unregister(lv)

    def _close(self, lv: Live, ts: float) -> None:
        """End an alert whose condition can no longer be judged (rule edited or gone, node left)."""
        if lv.m.state == "pending":
            self._drop(lv)
        elif lv.m.state == "firing":
            self._resolve(lv, ts, time.time())
        self._event(lv)

    # ------------------------------------------------------------ offline

    def node_online(self, st: NodeState) -> None:
        self.offline_since.pop(st.id, None)
        now = time.time()
        for lv in list(self.by_node.get(st.id, {}).values()):
            if lv.rule.offline:
                if lv.m.state == "pending":
                    self._drop(lv)
                else:
                    self._resolve(lv, now, now)
                self._event(lv)

    def node_offline(self, st: NodeState) -> None:
        if self.shutting_down or self.nodes.get(st.id) is not st or st.online:
            return
        now = time.time()
        self.offline_since[st.id] = now
        self._check_offline(st, now)

    def _check_offline(self, st: NodeState, now: float) -> None:
        since = self.offline_since.get(st.id)
        if since is None or now < since or not self.leads() or not self._taken_over:
            return
        for rule in self._applicable(st).offline:
            lv = self.open.get((rule.id, st.id))
            if lv is None:
                nid = self._new_id()
                if nid is None:
                    return  # no id yet: the next tick opens it
                mach = Machine(state="pending", severity=rule.cond.severity, started_at=since)
                lv = Live(nid, rule, st.id, rule.name, st.name, mach)
                self._register(lv)
                self._insert(lv)
                self._transition(lv, since, "pending")
                self._event(lv)
            if lv.m.state == "pending" and now - lv.m.started_at >= rule.cond.for_:
                lv.m.state = "firing"
                lv.m.fired_at = now
                self._fire(lv, now, now)
                self._event(lv)

    # ------------------------------------------------------------ the sweep

    def tick(self, now: float | None = None) -> None:
        """Offline grace, nodes gone, silences ended, held and repeated notifications, peaks."""
        now = time.time() if now is None else now
        if not self._taken_over and self._taking is None and self.leads():
            # Leading, but the open offline alerts are not read in yet (the take-over failed, the
            # database away): try again rather than never judge the offline rule.
            self._taking = asyncio.create_task(self._take_over(), name="alert-take-over")
        for nid in list(self.offline_since):
            st = self.nodes.get(nid)
            if st is None:
                self.offline_since.pop(nid, None)
            elif not st.online:
                self._check_offline(st, now)
        for nid in [nid for nid in self.by_node if self.nodes.get(nid) is None]:
            for lv in list(self.by_node.get(nid, {}).values()):
                self._close(lv, now)
        for s in self.silences.expire_due(now):
            for lv in self.open.values():
                st = self.nodes.get(lv.node_id)
                if st is not None and _silence_matches(s, lv, st):
                    self._event(lv)
        for lv in list(self.open.values()):
            if lv.m.state != "firing" or lv.acked_at is not None:
                continue
            if not lv.notified:
                if self._notifiable(lv, now):
                    self._deliver(lv, "firing", now)
                    lv.notified = True
                    lv.repeat_every = self.settings.alert_repeat_interval
                    lv.next_repeat = now + lv.repeat_every
            elif now >= lv.next_repeat:
                if self._notifiable(lv, now):
                    self._deliver(lv, "firing", now)
                lv.repeat_every = min(
                    lv.repeat_every * 2, max(self.settings.alert_repeat_max, lv.repeat_every)
                )
                lv.next_repeat = now + lv.repeat_every
        self._save_peaks(now=now)

    def _save_peaks(self, force: bool = False, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if not force and now - self._last_peaks < _PEAK_EVERY:
            return
        self._last_peaks = now
        for lv in self.open.values():
            if lv.m.peak != lv.saved_peak:
                lv.saved_peak = lv.m.peak
                self._sql("UPDATE alerts SET peak = ? WHERE id = ?", lv.m.peak, lv.id)

    # ------------------------------------------------------------ noise control

    def _silenced(self, lv: Live, now: float) -> bool:
        if not self.silences.active:
            return False
        st = self.nodes.get(lv.node_id)
        group, tags = (st.group, st.tags) if st is not None else ("", [])
        return self.silences.matching(lv.rule.id, lv.node_id, group, tags, now)

    def _suppressed(self, lv: Live) -> bool:
        st = self.nodes.get(lv.node_id)
        return not lv.rule.offline and st is not None and not st.online

    def _flip(self, key: tuple[int, int], now: float) -> None:
        flips = self._flips.setdefault(key, deque())
        flips.append(now)

    def flapping(self, key: tuple[int, int], now: float) -> bool:
        flips = self._flips.get(key)
        if not flips:
            return False
        while flips and flips[0] < now - self.settings.alert_flap_window:
            flips.popleft()
        if not flips:
            del self._flips[key]
            return False
        return len(flips) > self.settings.alert_flap_max

    def _notifiable(self, lv: Live, now: float) -> bool:
        return not self._silenced(lv, now) and not self._suppressed(lv) and not self.flapping(lv.key, now)

    # ------------------------------------------------------------ writes

    def _register(self, lv: Live) -> None:
        self.open[lv.key] = lv
        self.by_id[lv.id] = lv
        self.by_node.setdefault(lv.node_id, {})[lv.rule.id] = lv

    def _unregister(self, lv: Live) -> None:
        self.open.pop(lv.key, None)
        self.by_id.pop(lv.id, None)
        mine = self.by_node.get(lv.node_id)
        if mine is not None:
            mine.pop(lv.rule.id, None)
            if not mine:
                del self.by_node[lv.node_id]

    def _insert(self, lv: Live) -> None:
        a = self.alert(lv)
        self._sql(
            f"INSERT INTO alerts ({_ALERT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            a.id,
            a.rule_id,
            a.rule,
            a.node_id,
            a.node,
            a.metric,
            a.op,
            a.threshold,
            a.state,
            a.severity,
            a.value,
            a.peak,
            a.started_at,
            a.fired_at,
            a.resolved_at,
            a.acked_by,
            a.acked_at,
        )
        if not self.settings.clustered:  # a cluster's counter is past every block reserved already
            self._sql("UPDATE counters SET value = max(value, ?) WHERE name = 'alerts'", a.id)
        lv.saved_peak = a.peak

    def _update(self, lv: Live) -> None:
        mach = lv.m
        self._sql(
            "UPDATE alerts SET state = ?, severity = ?, threshold = ?, value = ?, peak = ?, fired_at = ? "
            "WHERE id = ?",
            mach.state,
            mach.severity,
            lv.rule.cond.threshold_for(mach.severity),
            mach.value,
            mach.peak,
            mach.fired_at,
            lv.id,
        )
        lv.saved_peak = mach.peak

    def _transition(self, lv: Live, ts: float, state: str) -> None:
        self._sql(
            "INSERT INTO alert_transitions (alert_id, ts, state, severity, value) VALUES (?, ?, ?, ?, ?)",
            lv.id,
            ts,
            state,
            lv.m.severity,
            lv.m.value,
        )

    def _deliver(self, lv: Live, status: str, now: float) -> None:
        """One outbox row per channel of the rule that still exists; the dispatcher sends them."""
        channels = lv.rule.channels
        if not channels:
            return
        a = self.alert(lv)
        payload = msgspec.json.encode(
            WebhookAlert(
                id=a.id,
                rule=a.rule,
                node=a.node,
                node_id=a.node_id,
                severity=a.severity,
                value=a.value,
                threshold=a.threshold,
                started_at=a.started_at,
                resolved_at=a.resolved_at,
            )
        ).decode()
        self._pending.deliveries = True
        for cid in channels:
            self._sql(
                "INSERT INTO alert_deliveries (alert_id, channel_id, status, payload, state, attempts, "
                "created_at, next_attempt_at) SELECT ?, id, ?, ?, 'pending', 0, ?, ? FROM channels WHERE id = ?",
                lv.id,
                status,
                payload,
                now,
                self._group_due(cid, status, now),
                cid,
            )

    def _group_due(self, channel_id: int, status: str, now: float) -> float:
        """When a new notification on a channel goes out: with the group that channel has open for
        this status, else in a new group due `alert_group_wait` from now (Alertmanager's group_wait).
        So a steady stream of changes makes one notification per channel and status per wait, not
        one per alert a moment apart."""
        key = (channel_id, status)
        due = self._groups.get(key)
        if due is None or due <= now:
            due = now + self.settings.alert_group_wait
            self._groups[key] = due
        return due

    # ------------------------------------------------------------ what the API asks

    def alert(self, lv: Live) -> Alert:
        mach = lv.m
        return Alert(
            id=lv.id,
            rule_id=lv.rule.id,
            rule=lv.rule_name,
            node_id=lv.node_id,
            node=lv.node_name,
            metric=lv.rule.metric,
            op=lv.rule.cond.op,  # type: ignore[arg-type]
            threshold=lv.rule.cond.threshold_for(mach.severity),
            state=mach.state or "resolved",
            severity=mach.severity,
            value=mach.value,
            peak=mach.peak,
            started_at=mach.started_at,
            fired_at=mach.fired_at,
            resolved_at=mach.resolved_at if mach.state is None else None,
            acked_by=lv.acked_by,
            acked_at=lv.acked_at,
            silenced=self._silenced(lv, time.time()),
        )

    async def ack(self, alert_id: int, who: str) -> Alert:
        lv = self.by_id.get(alert_id)
        if lv is None:
            row = await self.db.fetchone("SELECT state FROM alerts WHERE id = ?", (alert_id,))
            if row is None:
                raise AlertError(404, "not_found", "no such alert")
            if row[0] != "resolved" and self.settings.clustered:
                return await self._ack_held_elsewhere(alert_id, who)
            raise AlertError(409, "conflict", "the alert is resolved; there is nothing to acknowledge")
        if lv.acked_at is None:
            lv.acked_by, lv.acked_at = who, time.time()
            self._sql("UPDATE alerts SET acked_by = ?, acked_at = ? WHERE id = ?", who, lv.acked_at, lv.id)
            self._event(lv)
        await self.sync()
        return self.alert(lv)

    async def _ack_held_elsewhere(self, alert_id: int, who: str) -> Alert:
        """An open alert another core of the cluster holds: acknowledged in the database, and that
        core told (it stops repeating the notification)."""
        await self.db.execute(
            "UPDATE alerts SET acked_by = ?, acked_at = ? WHERE id = ? AND acked_at IS NULL",
            (who, time.time(), alert_id),
        )
        if self.on_change is not None:
            self.on_change("ack", alert_id)
        row = await self.db.fetchone(f"SELECT {_ALERT_COLS} FROM alerts WHERE id = ?", (alert_id,))
        alert = alert_from_row(row)
        self.bus.publish(alert.node_id, AlertEvent(alert=alert))
        return alert

    async def announce(self, alert_id: int) -> None:
        """Tell the clients about an alert again, as it is now: something shown with it changed
        (its incident snapshot arrived). A pruned alert is not announced."""
        lv = self.by_id.get(alert_id)
        if lv is not None:
            self._event(lv)
            await self.sync()
            return
        row = await self.db.fetchone(f"SELECT {_ALERT_COLS} FROM alerts WHERE id = ?", (alert_id,))
        if row is not None:
            alert = alert_from_row(row)
            self.bus.publish(alert.node_id, AlertEvent(alert=alert))

    def silences_changed(self, announce: bool = True) -> None:
        """A silence was made or ended: tell clients about the open alerts whose `silenced` changed."""
        if announce and self.on_change is not None:
            self.on_change("silences", 0)
        for lv in self.open.values():
            self._event(lv)

    async def query(self, q: m.AlertQuery) -> list[Alert]:
        where: list[str] = []
        params: list[Any] = []
        if q.state is not None:
            where.append("state = ?")
            params.append(q.state)
        if q.node is not None:
            where.append("node_id = ?")
            params.append(q.node)
        if q.rule is not None:
            where.append("rule_id = ?")
            params.append(q.rule)
        if q.from_ is not None:
            where.append("(resolved_at IS NULL OR resolved_at >= ?)")
            params.append(q.from_)
        if q.to is not None:
            where.append("started_at <= ?")
            params.append(q.to)
        sql = f"SELECT {_ALERT_COLS} FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        params.append(q.limit)
        await self.sync()
        out = []
        for r in await self.db.fetchall(sql, params):
            lv = self.by_id.get(r[0])
            out.append(self.alert(lv) if lv is not None else alert_from_row(r))
        return out

    async def detail(self, alert_id: int) -> m.AlertDetail | None:
        await self.sync()
        row = await self.db.fetchone(f"SELECT {_ALERT_COLS} FROM alerts WHERE id = ?", (alert_id,))
        if row is None:
            return None
        lv = self.by_id.get(alert_id)
        alert = self.alert(lv) if lv is not None else alert_from_row(row)
        transitions = [
            AlertTransition(ts=r[0], state=r[1], severity=r[2], value=r[3])
            for r in await self.db.fetchall(
                "SELECT ts, state, severity, value FROM alert_transitions WHERE alert_id = ? ORDER BY rowid",
                (alert_id,),
            )
        ]
        deliveries = [
            Delivery(
                id=r[0],
                channel_id=r[1],
                channel=r[2] or "",
                status=r[3],
                state=r[4],
                attempts=r[5],
                created_at=r[6],
                sent_at=r[7],
                next_attempt_at=r[8],
                last_error=r[9],
            )
            for r in await self.db.fetchall(
                "SELECT d.id, d.channel_id, c.name, d.status, d.state, d.attempts, d.created_at, d.sent_at, "
                "d.next_attempt_at, d.last_error FROM alert_deliveries d LEFT JOIN channels c "
                "ON c.id = d.channel_id WHERE d.alert_id = ? ORDER BY d.id",
                (alert_id,),
            )
        ]
        return m.AlertDetail(alert=alert, transitions=transitions, deliveries=deliveries)

    async def prune(self, now: float | None = None, chunk: int = 5000) -> int:
        """Forget resolved alerts (with their transitions, deliveries and snapshots) past `alert_retention`."""
        now = time.time() if now is None else now
        cutoff = now - self.settings.alert_retention
        removed = 0
        while True:
            n = await self.db.execute(
                "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts WHERE state = 'resolved' "
                "AND resolved_at < ? LIMIT ?)",
                (cutoff, chunk),
            )
            removed += n
            if n < chunk:
                return removed


def _silence_matches(s: m.Silence, lv: Live, st: NodeState) -> bool:
    return matches(s, lv.rule.id, lv.node_id, st.group, st.tags)


def _gone_rule(a: Alert) -> RuleSpec:
    """A stand-in for the rule of an open alert whose rule was deleted while the core was down."""
    return RuleSpec(
        id=a.rule_id,
        name=a.rule,
        metric=a.metric,
        cond=Condition(a.op, a.threshold, None, None, 0.0, 0.0, a.severity),
        targets=m.Targets(),
        channels=(),
        enabled=False,
        created_at=0.0,
        created_by="",
    )
