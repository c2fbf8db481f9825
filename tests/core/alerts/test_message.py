"""A notification in words: subjects and lines for the text channels."""

from __future__ import annotations

from servermanager.common.alerts import WebhookAlert, WebhookBody
from servermanager.core.alerts.message import Notification, subject, text


def _alert(i: int, node: str, rule: str = "cpu high") -> WebhookAlert:
    return WebhookAlert(i, rule, node, i, "warning", 97.25, 90.0, 1_700_000_000.0, None)


def test_one_alert_reads_as_its_condition() -> None:
    n = Notification(WebhookBody("firing", [_alert(1, "web-1")]), {1: ("cpu_pct", ">")})
    assert subject(n) == "[FIRING] cpu_pct 97.25 > 90 on web-1 (rule cpu high, warning)"
    assert "[FIRING] cpu_pct 97.25 > 90 on web-1 (rule cpu high, warning)" in text(n)


def test_offline_and_unknown_metrics() -> None:
    offline = WebhookAlert(2, "down", "db-1", 2, "critical", None, 0.0, 1_700_000_000.0, 1_700_000_100.0)
    n = Notification(WebhookBody("resolved", [offline]), {2: ("offline", ">")})
    assert subject(n) == "[RESOLVED] offline: db-1 (rule down, critical)"
    assert "resolved " in text(n)
    n = Notification(WebhookBody("firing", [_alert(3, "web-3")]), {})
    assert subject(n) == "[FIRING] cpu high on web-3 (rule cpu high, warning)"


def test_many_alerts_name_a_few_nodes() -> None:
    alerts = [_alert(i, f"web-{i}") for i in range(1, 6)]
    n = Notification(WebhookBody("firing", alerts), {})
    assert subject(n) == "[FIRING] 5 alerts on web-1, web-2, web-3 and 2 more"
    assert text(n).count("[FIRING]") == 5


def test_a_subject_is_one_line_whatever_the_names() -> None:
    n = Notification(WebhookBody("firing", [_alert(1, "web-1\r\nBcc: x@y.z", rule="a\nb")]), {})
    assert "\n" not in subject(n) and "\r" not in subject(n)
