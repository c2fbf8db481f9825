"""The durable outbox's dispatcher: due rows of `alert_deliveries`, grouped, sent, and marked.

The engine writes one `pending` row per alert transition and channel, in the transaction of the
transition, due after the group wait; then it may call `notify()` to wake the dispatcher early.
Each pass picks the due rows (pending or retrying, `next_attempt_at` reached), groups them by
(channel, status) into one notification with several alerts, and sends each group:

- sent: every row of the group is marked `sent` with `sent_at` right after the receiver said yes;
- failed attempt: `retrying`, `next_attempt_at` pushed by jittered exponential backoff
  (alert_retry_initial doubling up to alert_retry_max), `last_error` in plain words; past
  alert_delivery_max_age since the row was written, `failed` instead;
- the channel is in its quiet hours: `next_attempt_at` moves to the end of them, no attempt counted;
- the channel is disabled or deleted: `failed`, with that as the error.

Never twice: the core is one process with one dispatcher, and a row is claimed in memory
(`_inflight`) from the moment it is picked until it is marked, so overlapping passes skip it; a
channel with a send in flight gets nothing else until it ends, so firing and resolved keep their
order. Never lost: rows stay in the database until sent or failed, and the first pass after a
start sends what is due. A crash (kill -9) after the receiver took a notification but before the
row is marked sends that notification again on the next start: delivery is at least once, and
webhook receivers can drop repeats by the X-ServerManager-Deliveries header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import msgspec

from servermanager.common.alerts import WebhookAlert, WebhookBody
from servermanager.common.backoff import backoff_ceiling, backoff_delay
from servermanager.core.alerts import senders
from servermanager.core.alerts.channels import Channels, StoredChannel, quiet_until, redact_url
from servermanager.core.alerts.message import DeliveryError, Notification
from servermanager.core.settings import CoreSettings
from servermanager.core.store.db import Database

log = logging.getLogger(__name__)

TICK = 1.0  # the longest the dispatcher sleeps without a wake-up
BATCH = 500  # due rows read per pass
GROUP_MAX = 50  # alerts in one notification at most; a bigger group goes out in several
MAX_ERROR = 1000  # characters of an error kept in last_error


@dataclass(frozen=True)
class Row:
    id: int
    alert_id: int
    channel_id: int
    status: str
    payload: str
    attempts: int
    created_at: float
    metric: str | None
    op: str | None
    summary: str | None  # the alert's incident snapshot in a line, once it arrived


_alert = msgspec.json.Decoder(WebhookAlert)


class Outbox:
    def __init__(
        self, db: Database, channels: Channels, settings: CoreSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.channels = channels
        self.settings = settings
        self.clock = clock
        self._wake = asyncio.Event()
        self._inflight: set[int] = set()  # row ids picked and not yet marked
        self._busy_channels: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._pass_lock = asyncio.Lock()

    # ------------------------------------------------------------ the loop

    def notify(self) -> None:
        """New rows were committed: look at once (cheap; the engine may call it on every insert)."""
        self._wake.set()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def run(self) -> None:
        """Dispatch until cancelled: a pass, then sleep until the next row is due, a wake-up, or TICK."""
        try:
            while True:
                self._wake.clear()
                try:
                    delay = await self.dispatch()
                except Exception:
                    log.exception("alert outbox pass failed; will retry")
                    delay = TICK
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally when the
                # cancel arrives as the wake-up completes (a notify() just before the shutdown's
                # cancel, as the engine's last flush does), and the core's shutdown hung on this loop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        # Sends in flight get a moment to finish and be marked; one cut off is sent again next start.
        # If this is cancelled too (a second cancel), the sends are still cancelled and the session
        # closed: a session left open is a ResourceWarning, and a send could outlive the database.
        try:
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=2.0)
        finally:
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                if self._session is not None:
                    await self._session.close()
                    self._session = None

    async def idle(self) -> None:
        """Wait for every send in flight to be marked (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ------------------------------------------------------------ one pass

    async def dispatch(self) -> float:
        """Start sending every due group; returns how long to sleep before the next pass."""
        async with self._pass_lock:
            now = self.clock()
            rows = await self._due(now)
            groups: dict[tuple[int, str], list[Row]] = {}
            for r in rows:
                if r.id in self._inflight or r.channel_id in self._busy_channels:
                    continue
                groups.setdefault((r.channel_id, r.status), []).append(r)
            by_channel: dict[int, list[list[Row]]] = {}
            for (cid, _status), group in groups.items():
                by_channel.setdefault(cid, []).append(group)
            for cid, channel_groups in by_channel.items():
                for g in channel_groups:
                    self._inflight.update(r.id for r in g)
                self._busy_channels.add(cid)
                task = asyncio.create_task(self._channel(cid, channel_groups), name=f"alert-send-{cid}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            nxt = await self.db.fetchone(
                "SELECT MIN(next_attempt_at) FROM alert_deliveries "
                "WHERE state IN ('pending', 'retrying') AND next_attempt_at > ?",
                (now,),
            )
            if nxt is None or nxt[0] is None:
                return TICK
            return max(0.0, min(TICK, nxt[0] - self.clock()))

    async def _due(self, now: float) -> list[Row]:
        rows = await self.db.fetchall(
            "SELECT d.id, d.alert_id, d.channel_id, d.status, d.payload, d.attempts, d.created_at, "
            "a.metric, a.op, s.summary FROM alert_deliveries d LEFT JOIN alerts a ON a.id = d.alert_id "
            "LEFT JOIN alert_snapshots s ON s.alert_id = d.alert_id "
            "WHERE d.state IN ('pending', 'retrying') AND d.next_attempt_at <= ? "
            "ORDER BY d.next_attempt_at, d.id LIMIT ?",
            (now, BATCH),
        )
        return [Row(*r) for r in rows]

    async def _channel(self, cid: int, groups: list[list[Row]]) -> None:
        try:
            ch = await self.channels.get(cid)
            for group in groups:
                for i in range(0, len(group), GROUP_MAX):
                    await self._group(ch, cid, group[i : i + GROUP_MAX])
        except Exception:
            log.exception("alert outbox: channel %d failed", cid)
        finally:
            for g in groups:
                self._inflight.difference_update(r.id for r in g)
            self._busy_channels.discard(cid)
            self._wake.set()

    async def _group(self, ch: StoredChannel | None, cid: int, rows: list[Row]) -> None:
        now = self.clock()
        ids = [r.id for r in rows]
        if ch is None:
            await self._fail(ids, f"channel {cid} no longer exists")
            return
        if not ch.enabled:
            await self._fail(ids, f"channel {ch.name} is disabled")
            return
        until = quiet_until(ch.config.quiet_hours, now)
        if until is not None:
            await self._set("UPDATE alert_deliveries SET next_attempt_at = ? WHERE id IN ({})", ids, (until,))
            log.info(
                "alert outbox: %d notification(s) on %s held until its quiet hours end", len(ids), ch.name
            )
            return
        try:
            # The snapshot's summary is filled in now: it usually arrives after the row was written.
            alerts = [
                msgspec.structs.replace(_alert.decode(r.payload), snapshot=r.summary)
                if r.summary and r.status == "firing"
                else _alert.decode(r.payload)
                for r in rows
            ]
        except msgspec.DecodeError as exc:
            await self._fail(ids, f"bad payload in the outbox: {exc}")
            return
        n = Notification(
            body=WebhookBody(status=rows[0].status, alerts=alerts),  # type: ignore[arg-type]
            details={r.alert_id: (r.metric, r.op) for r in rows if r.metric and r.op},
            delivery_ids=tuple(ids),
        )
        try:
            await senders.send(self.session, ch, n, self.settings.alert_delivery_timeout)
        except DeliveryError as exc:
            await self._failed_attempt(ch, rows, str(exc)[:MAX_ERROR])
            return
        await self._set(
            # last_error stays: the delivery log tells why it took more than one attempt.
            "UPDATE alert_deliveries SET state = 'sent', sent_at = ?, attempts = attempts + 1 WHERE id IN ({})",
            ids,
            (self.clock(),),
        )
        log.info("alert outbox: sent %d %s alert(s) on %s", len(ids), rows[0].status, ch.name)

    async def _failed_attempt(self, ch: StoredChannel, rows: list[Row], error: str) -> None:
        s = self.settings
        now = self.clock()
        async with self.db.transaction() as con:
            for r in rows:
                attempt = r.attempts + 1
                if now - r.created_at >= s.alert_delivery_max_age:
                    await con.execute(
                        "UPDATE alert_deliveries SET state = 'failed', attempts = ?, last_error = ? WHERE id = ?",
                        (attempt, f"gave up after {attempt} attempts: {error}", r.id),
                    )
                    continue
                # Equal jitter: at least half the ceiling, so a retry is never immediate.
                ceiling = backoff_ceiling(attempt - 1, s.alert_retry_initial, s.alert_retry_max)
                delay = ceiling / 2 + backoff_delay(attempt - 1, s.alert_retry_initial, s.alert_retry_max) / 2
                await con.execute(
                    "UPDATE alert_deliveries SET state = 'retrying', attempts = ?, last_error = ?, "
                    "next_attempt_at = ? WHERE id = ?",
                    (attempt, error, now + delay, r.id),
                )
        log.warning(
            "alert outbox: %d notification(s) on %s (%s) not delivered: %s",
            len(rows),
            ch.name,
            redact_url(ch.config.url),
            error,
        )

    async def _fail(self, ids: list[int], error: str) -> None:
        await self._set(
            "UPDATE alert_deliveries SET state = 'failed', last_error = ? WHERE id IN ({})", ids, (error,)
        )
        log.warning("alert outbox: %d notification(s) failed: %s", len(ids), error)

    async def _set(self, sql: str, ids: list[int], params: tuple[object, ...]) -> None:
        await self.db.execute(sql.format(", ".join("?" * len(ids))), (*params, *ids))
