"""Jittered exponential backoff: bounds, growth and reset."""

from __future__ import annotations

import random

import pytest

from servermanager.common.backoff import Backoff, backoff_ceiling, backoff_delay


def test_backoff_stays_within_zero_and_cap() -> None:
    rng = random.Random(1234)
    for attempt in range(40):
        for _ in range(50):
            d = backoff_delay(attempt, 1.0, 60.0, rng)
            assert 0.0 <= d <= min(60.0, 2.0**attempt)
    assert backoff_delay(10_000, 1.0, 60.0, rng) <= 60.0  # no overflow after a long outage


def test_backoff_ceiling_grows_then_caps() -> None:
    ceilings = [backoff_ceiling(a, 1.0, 60.0) for a in range(8)]
    assert ceilings == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]


def test_backoff_delays_grow_on_average_and_reset() -> None:
    rng = random.Random(42)

    def mean(attempt: int) -> float:
        return sum(backoff_delay(attempt, 1.0, 60.0, rng) for _ in range(2000)) / 2000

    m0, m3, m6 = mean(0), mean(3), mean(6)
    assert m0 < m3 < m6
    assert m0 == pytest.approx(0.5, abs=0.05)  # full jitter: uniform over [0, 1]
    assert m6 == pytest.approx(30.0, abs=2.0)  # uniform over [0, 60]
    b = Backoff(1.0, 60.0, random.Random(7))
    for _ in range(10):
        b.next()
    assert b.attempt == 10
    b.reset()
    assert b.attempt == 0
    assert b.next() <= 1.0
