"""The alert state machine alone, and the preview's replay of it: the '<' side and offline gaps."""

from __future__ import annotations

from servermanager.common import rest as m
from servermanager.core.alerts.machine import Condition, Machine
from servermanager.core.alerts.preview import replay, replay_offline
from servermanager.core.alerts.rules import RuleSpec

LOW_DISK = Condition(
    op="<",
    threshold=10,
    clear_threshold=15,
    critical_threshold=5,
    for_=2,
    keep_firing_for=0,
    severity="warning",
)


def _rule(cond: Condition, metric: str = "mem_pct") -> RuleSpec:
    return RuleSpec(1, "r", metric, cond, m.Targets(all=True), (), True, 0.0, "t")


def test_below_threshold_with_hysteresis_and_severity() -> None:
    mach = Machine()
    assert mach.step(LOW_DISK, 0, 10) == []  # at the threshold: '<' does not hold
    assert mach.step(LOW_DISK, 1, 9) == ["pending"]
    assert mach.step(LOW_DISK, 2, 8) == []
    assert mach.step(LOW_DISK, 3, 4) == ["firing"]  # 2 s after the start; critical by then
    assert (mach.severity, mach.peak) == ("critical", 4)
    assert mach.step(LOW_DISK, 4, 15) == []  # 15 is not > 15
    assert mach.step(LOW_DISK, 5, 12) == []
    assert mach.step(LOW_DISK, 6, 15.5) == ["resolved"]
    assert (mach.state, mach.resolved_at, mach.peak) == (None, 6, 4)


def test_firing_escalates_once() -> None:
    mach = Machine()
    cond = Condition(">", 80, None, 95, 0, 0, "warning")
    assert mach.step(cond, 0, 85) == ["pending", "firing"]
    assert mach.severity == "warning"
    assert mach.step(cond, 1, 96) == ["escalated"]
    assert mach.step(cond, 2, 99) == []
    assert mach.step(cond, 3, 85) == []
    assert mach.severity == "critical"
    assert mach.step(cond, 4, 80) == ["resolved"]  # no clear threshold: the condition stopping clears


def test_replay_counts_only_alerts_that_fired() -> None:
    rule = _rule(Condition(">", 90, None, None, 3, 0, "warning"))
    ts = list(range(20))
    values: list[float | None] = [
        50,
        95,
        95,
        None,
        50,
        95,
        95,
        95,
        95,
        96,
        50,
        50,
        95,
        95,
        95,
        95,
        95,
        95,
        95,
        95,
    ]
    # 1-2: shorter than `for` (a gap does not extend it); 5-9 fires at 8, resolves at 10; 12.. still firing.
    assert replay(rule, ts, values) == [(5, 8, 10, 96), (12, 15, None, 95)]


def test_replay_offline_finds_gaps_longer_than_timeout_and_grace() -> None:
    rule = _rule(Condition(">", 0, None, None, 30, 0, "critical"), metric="offline")
    ts = [0.0, 1.0, 2.0, 20.0, 21.0, 80.0, 81.0]
    # 2 -> 20: 18 s gap, minus a 3 s timeout, is under the grace; 21 -> 80 is not.
    assert replay_offline(rule, ts, end=90.0, timeout=3.0, online_now=True) == [(24.0, 54.0, 80.0, None)]
    # Offline at the end of the range: an alert still open.
    assert replay_offline(rule, ts, end=200.0, timeout=3.0, online_now=False)[-1] == (84.0, 114.0, None, None)
