"""Alert and outbox rows written with SQL, as the alert engine writes them (schema migration 5)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from servermanager.common.alerts import WebhookAlert
from servermanager.core.store.db import Database


@dataclass
class Queued:
    alert_id: int
    delivery_id: int


@dataclass
class Spec:
    """One alert and its delivery on one channel."""

    channel_id: int
    status: str = "firing"
    node: str = "web-1"
    node_id: int = 1
    rule: str = "cpu high"
    metric: str = "cpu_pct"
    value: float = 97.0
    threshold: float = 90.0
    severity: str = "critical"
    due_in: float = 0.0  # the engine's group wait


_ALERT = (
    "INSERT INTO alerts (rule_id, rule, node_id, node, metric, op, threshold, state, severity, value, "
    "peak, started_at, fired_at, resolved_at) VALUES (1, ?, ?, ?, ?, '>', ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELIVERY = (
    "INSERT INTO alert_deliveries (alert_id, channel_id, status, payload, state, attempts, created_at, "
    "next_attempt_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?)"
)


def _params(s: Spec, now: float) -> tuple[tuple[Any, ...], Any]:
    resolved_at = now if s.status == "resolved" else None
    alert = (
        s.rule,
        s.node_id,
        s.node,
        s.metric,
        s.threshold,
        "resolved" if resolved_at else "firing",
        s.severity,
        s.value,
        s.value,
        now - 60,
        now - 30,
        resolved_at,
    )
    return alert, resolved_at


def _payload(alert_id: int, s: Spec, now: float, resolved_at: float | None) -> str:
    return msgspec.json.encode(
        WebhookAlert(
            id=alert_id,
            rule=s.rule,
            node=s.node,
            node_id=s.node_id,
            severity=s.severity,  # type: ignore[arg-type]
            value=s.value,
            threshold=s.threshold,
            started_at=now - 60,
            resolved_at=resolved_at,
        )
    ).decode()


async def queue(db: Database, *specs: Spec) -> list[Queued]:
    """Alerts and their pending deliveries, in one transaction as the engine commits a transition."""
    now = time.time()
    out = []
    async with db.transaction() as con:
        for s in specs:
            alert, resolved_at = _params(s, now)
            cur = await con.execute(_ALERT, alert)
            aid = cur.lastrowid
            assert aid is not None
            cur = await con.execute(
                _DELIVERY,
                (aid, s.channel_id, s.status, _payload(aid, s, now, resolved_at), now, now + s.due_in),
            )
            assert cur.lastrowid is not None
            out.append(Queued(aid, cur.lastrowid))
    return out


def queue_offline(path: Path, *specs: Spec) -> list[Queued]:
    """The same, written into the database file of a core that is not running."""
    now = time.time()
    out = []
    con = sqlite3.connect(path)
    try:
        with con:
            for s in specs:
                alert, resolved_at = _params(s, now)
                aid = con.execute(_ALERT, alert).lastrowid
                assert aid is not None
                did = con.execute(
                    _DELIVERY,
                    (aid, s.channel_id, s.status, _payload(aid, s, now, resolved_at), now, now + s.due_in),
                ).lastrowid
                assert did is not None
                out.append(Queued(aid, did))
    finally:
        con.close()
    return out


async def delivery(db: Database, did: int) -> dict[str, Any]:
    row = await db.fetchone(
        "SELECT state, attempts, sent_at, next_attempt_at, last_error FROM alert_deliveries WHERE id = ?",
        (did,),
    )
    assert row is not None, f"no delivery {did}"
    return dict(zip(("state", "attempts", "sent_at", "next_attempt_at", "last_error"), row, strict=True))
