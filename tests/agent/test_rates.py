"""The shared counter-to-rate helper."""

from __future__ import annotations

import pytest

from servermanager.agent.rates import RateTracker


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_first_reading_has_no_rate() -> None:
    tracker = RateTracker(FakeClock())
    assert tracker.rate("rx", 500) is None
    assert "rx" in tracker


def test_rate_uses_injected_clock() -> None:
    clock = FakeClock()
    tracker = RateTracker(clock)
    tracker.rate("rx", 1_000)
    clock.t += 2.0
    assert tracker.rate("rx", 5_000) == pytest.approx(2_000.0)
    clock.t += 0.5
    assert tracker.rate("rx", 5_100) == pytest.approx(200.0)


def test_counter_reset_gives_none_then_rebases() -> None:
    clock = FakeClock()
    tracker = RateTracker(clock)
    tracker.rate("rx", 10_000)
    clock.t += 1.0
    assert tracker.rate("rx", 300) is None  # went backwards: reboot or wrap
    clock.t += 1.0
    assert tracker.rate("rx", 800) == pytest.approx(500.0)  # diffed against the new baseline


def test_no_elapsed_time_gives_none() -> None:
    tracker = RateTracker(FakeClock())
    tracker.rate("rx", 1)
    assert tracker.rate("rx", 2) is None


def test_explicit_now_and_independent_keys() -> None:
    tracker = RateTracker(FakeClock())
    tracker.rate("a", 0, now=10.0)
    tracker.rate("b", 0, now=10.0)
    assert tracker.rate("a", 30, now=13.0) == pytest.approx(10.0)
    assert tracker.rate("b", 3, now=13.0) == pytest.approx(1.0)


def test_retain_forgets_vanished_keys() -> None:
    clock = FakeClock()
    tracker = RateTracker(clock)
    tracker.rate("eth0", 1)
    tracker.rate("veth1", 1)
    tracker.retain(["eth0"])
    assert len(tracker) == 1
    assert "veth1" not in tracker
    clock.t += 1
    assert tracker.rate("veth1", 5) is None  # a returning name starts over


def test_rates_are_exact_the_collector_rounds_them_by_the_table() -> None:
    # Rounding happens once, in MetricsCollector (test_collectors checks 333 and 333.33 there).
    clock = FakeClock()
    tracker = RateTracker(clock)
    tracker.rate("rx", 0)
    clock.t += 3.0
    assert tracker.rate("rx", 1_000) == 1_000 / 3


def test_several_counters_under_one_key() -> None:
    clock = FakeClock()
    tracker = RateTracker(clock)
    assert tracker.rates(("pid", 1.0), (10.0, 100, None), clock.t) is None  # first reading
    clock.t += 2.0
    # Each like rate(): per second; None where a counter was not read, or went back.
    assert tracker.rates(("pid", 1.0), (14.0, 50, 7), clock.t) == (2.0, None, None)
    clock.t += 1.0
    assert tracker.rates(("pid", 1.0), (15.0, 60, 9), clock.t) == (1.0, 10.0, 2.0)
    # Counters that changed in number have no common baseline.
    assert tracker.rates(("pid", 1.0), (16.0,), clock.t + 1) is None
    assert tracker.rates(("pid", 1.0), (17.0,), clock.t) is None  # no time passed
    tracker.retain({("pid", 2.0)})
    assert len(tracker) == 0
