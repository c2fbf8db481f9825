"""What an alert is on the wire: its states, severities and the Alert record that REST and /ws/client share."""

from __future__ import annotations

from typing import Literal

import msgspec

AlertState = Literal["pending", "firing", "resolved"]
Severity = Literal["warning", "critical"]
Op = Literal[">", "<"]
# A rule's metric: a scalar field of the metric table, or this, for a node whose agent went away.
OFFLINE = "offline"


class Alert(msgspec.Struct, kw_only=True):
    """One node x one rule, from pending to resolved: what the alert list shows and `alert` events carry."""

    id: int
    rule_id: int
    rule: str  # the rule's name when the alert started
    node_id: int
    node: str  # the node's name when the alert started
    metric: str
    op: Op
    threshold: float  # the threshold of its current severity
    state: AlertState
    severity: Severity
    value: float | None  # the latest value that moved it (None for offline)
    peak: float | None  # the worst value while it was pending or firing
    started_at: float  # when the condition first held (pending)
    fired_at: float | None = None
    resolved_at: float | None = None
    acked_by: str | None = None
    acked_at: float | None = None
    silenced: bool = False  # a silence matches it: it is kept, but nobody is notified


class AlertTransition(msgspec.Struct, kw_only=True):
    """One change of an alert: its new state (or severity), when, and the value that caused it."""

    ts: float
    state: AlertState
    severity: Severity
    value: float | None = None


class Delivery(msgspec.Struct, kw_only=True):
    """One notification of one alert transition on one channel, as the durable outbox tracks it."""

    id: int
    channel_id: int
    channel: str
    status: Literal["firing", "resolved"]  # which transition it announces
    state: Literal["pending", "sent", "retrying", "failed"]
    attempts: int
    created_at: float
    sent_at: float | None = None
    next_attempt_at: float | None = None
    last_error: str | None = None


class WebhookAlert(msgspec.Struct, omit_defaults=True):
    """An alert as a webhook receiver gets it (ARCHITECTURE.md: the documented body)."""

    id: int
    rule: str
    node: str
    node_id: int
    severity: Severity
    value: float | None
    threshold: float
    started_at: float
    resolved_at: float | None
    # What the node was doing when it fired ("top: postgres 71 %, nginx 12 %"), from its incident
    # snapshot; in firing notifications only, and left out when it had not arrived by the send.
    snapshot: str | None = None


class WebhookBody(msgspec.Struct):
    """The JSON a webhook channel POSTs: one notification, possibly several alerts grouped."""

    status: Literal["firing", "resolved"]
    alerts: list[WebhookAlert]
