"""Redaction of channel URLs, scrubbing, and quiet hours at their edges."""

from __future__ import annotations

from datetime import datetime

import pytest

from servermanager.core.alerts.channels import ChannelConfig, quiet_until, redact_url, scrub, secrets_of


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
        ("https://user:pa55@example.com/x", "https://user:***@example.com/x"),
        (
            "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            "https://hooks.slack.com/services/***/***/***",
        ),
        (
            "https://h.example.com/api?token=abc&format=json",
            "https://h.example.com/api?token=***&format=json",
        ),
        ("smtp://alerts:pw@mail.example.com:587", "smtp://alerts:***@mail.example.com:587"),
        ("tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-1001234567", "tgram://***:***/***"),
        ("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js", "discord://***/***"),
        ("gotify://gotify.example.com/AbCdEf123456", "gotify://gotify.example.com/***"),
        ("pover://uQiRzpo4DXghDmr9QzzfQu27cmVRsG@azGDORePK8gMaC0QOYAMyEEuzJnyUi", "pover://***@***"),
        ("slack://TokenA/TokenB/TokenC/#ops", "slack://TokenA/TokenB/TokenC/#ops"),
        ("json://[::1]:8080/x", "json://[::1]:8080/x"),
        ("not a url", "***"),
    ],
)
def test_redaction(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_removes_every_secret_form() -> None:
    cfg = ChannelConfig(url="https://bob:p%40ss-word@h.example.com/k/ABCDEF1234567890", secret="sig-key-1")
    secrets = secrets_of(cfg)
    text = (
        "failed https://bob:p%40ss-word@h.example.com/k/ABCDEF1234567890 with p@ss-word, "
        "ABCDEF1234567890 and sig-key-1"
    )
    out = scrub(text, secrets)
    for s in ("p%40ss-word", "p@ss-word", "ABCDEF1234567890", "sig-key-1"):
        assert s not in out
    assert out.count("***") >= 4


def _ts(hh: int, mm: int, ss: int = 0, day: int = 10) -> float:
    return datetime(2026, 3, day, hh, mm, ss).timestamp()


@pytest.mark.parametrize(
    ("quiet", "now", "until"),
    [
        ("22:00-07:00", _ts(21, 59, 59), None),
        ("22:00-07:00", _ts(22, 0), _ts(7, 0, day=11)),
        ("22:00-07:00", _ts(23, 59, 59), _ts(7, 0, day=11)),
        ("22:00-07:00", _ts(0, 0), _ts(7, 0)),
        ("22:00-07:00", _ts(6, 59, 59), _ts(7, 0)),
        ("22:00-07:00", _ts(7, 0), None),
        ("12:00-13:30", _ts(11, 59), None),
        ("12:00-13:30", _ts(12, 0), _ts(13, 30)),
        ("12:00-13:30", _ts(13, 29, 59), _ts(13, 30)),
        ("12:00-13:30", _ts(13, 30), None),
        (None, _ts(12, 0), None),
    ],
)
def test_quiet_hours_edges(quiet: str | None, now: float, until: float | None) -> None:
    assert quiet_until(quiet, now) == until
