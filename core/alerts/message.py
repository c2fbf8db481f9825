"""A notification in words, for channels that carry text (email, Apprise): a subject and a plain body."""

from __future__ import annotations

import time
from dataclasses import dataclass

from servermanager.common.alerts import WebhookAlert, WebhookBody


class DeliveryError(Exception):
    """A notification that did not go through, in plain words for the delivery log."""


@dataclass(frozen=True)
class Notification:
    """What a sender gets: the webhook body, plus each alert's metric and operator for the text."""

    body: WebhookBody
    # alert id -> (metric, op), from the alerts table; an alert missing there reads by its rule only.
    details: dict[int, tuple[str, str]]
    delivery_ids: tuple[int, ...] = ()
    test: bool = False


def _num(v: float | None) -> str:
    if v is None:
        return "?"
    return f"{v:.4g}"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "?"


def line(a: WebhookAlert, details: dict[int, tuple[str, str]], status: str) -> str:
    """'cpu_pct 97 > 90 on web-1 (rule cpu high, critical)', then '; top: postgres 71 %, nginx 12 %'
    when its incident snapshot came in time."""
    metric, op = details.get(a.id, ("", ""))
    if metric == "offline":
        what = f"offline: {a.node}"
    elif metric:
        what = f"{metric} {_num(a.value)} {op} {_num(a.threshold)} on {a.node}"
    else:
        what = f"{a.rule} on {a.node}"
    return f"{what} (rule {a.rule}, {a.severity})" + (f"; {a.snapshot}" if a.snapshot else "")


def subject(n: Notification) -> str:
    """One line, whatever the names hold (a mail header may not break)."""
    return " ".join(_subject(n).split())


def _subject(n: Notification) -> str:
    tag = "[TEST]" if n.test else f"[{n.body.status.upper()}]"
    alerts = n.body.alerts
    if len(alerts) == 1:
        return f"{tag} {line(alerts[0], n.details, n.body.status)}"
    nodes = sorted({a.node for a in alerts})
    shown = ", ".join(nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
    return f"{tag} {len(alerts)} alerts on {shown}"


def text(n: Notification) -> str:
    if n.test:
        return "A test notification from Server Manager: this channel works.\n"
    verb = "Firing" if n.body.status == "firing" else "Resolved"
    out = [f"{verb}: {len(n.body.alerts)} alert{'s' if len(n.body.alerts) != 1 else ''}", ""]
    for a in n.body.alerts:
        out.append(f"[{n.body.status.upper()}] {line(a, n.details, n.body.status)}")
        out.append(
            f"    started {_when(a.started_at)}"
            + (f", resolved {_when(a.resolved_at)}" if a.resolved_at else "")
        )
        out.append(f"    alert id {a.id}, node id {a.node_id}")
    out.append("")
    out.append("-- Server Manager")
    return "\n".join(out) + "\n"
