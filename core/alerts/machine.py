"""The state machine of one alert (one rule x one node), shared by live evaluation and the preview.

Pure: no clock, no database. `step` is fed a value at a time and says what changed.

- pending: the condition holds (value past `threshold` for the op).
- firing: the condition has held for `for` seconds.
- resolved: the clear condition holds (past `clear_threshold` on the other side, or simply the
  condition no longer holding when there is no clear threshold) and has held for `keep_firing_for`.
- A pending alert whose condition stops before `for` is dropped (as Prometheus does): it never
  fired, so it is not history.
- Severity: with a `critical_threshold` the alert is warning past `threshold` and escalates to
  critical past `critical_threshold`; it never goes back down during its life (no severity flapping).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from servermanager.common.alerts import Severity

Change = Literal["pending", "firing", "resolved", "dropped", "escalated"]


@dataclass(frozen=True, slots=True)
class Condition:
    """What of a rule the machine needs."""

    op: str
    threshold: float
    clear_threshold: float | None
    critical_threshold: float | None
    for_: float
    keep_firing_for: float
    severity: Severity

    def breaches(self, v: float) -> bool:
        return v > self.threshold if self.op == ">" else v < self.threshold

    def clears(self, v: float) -> bool:
        if self.clear_threshold is None:
            return not self.breaches(v)
        return v < self.clear_threshold if self.op == ">" else v > self.clear_threshold

    def severity_of(self, v: float | None) -> Severity:
        if self.critical_threshold is None or v is None:
            return self.severity
        critical = v > self.critical_threshold if self.op == ">" else v < self.critical_threshold
        return "critical" if critical else "warning"

    def worse(self, a: float | None, b: float | None) -> float | None:
        if a is None:
            return b
        if b is None:
            return a
        return max(a, b) if self.op == ">" else min(a, b)

    def threshold_for(self, severity: Severity) -> float:
        if severity == "critical" and self.critical_threshold is not None:
            return self.critical_threshold
        return self.threshold


@dataclass(slots=True)
class Machine:
    """One alert's state; `state` None means no alert (idle)."""

    state: Literal["pending", "firing"] | None = None
    severity: Severity = "warning"
    started_at: float = 0.0
    fired_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None
    peak: float | None = None
    clear_since: float | None = None

    def step(self, cond: Condition, ts: float, v: float) -> list[Change]:
        """Feed one value at time ts; returns the changes in order (often none)."""
        out: list[Change] = []
        if self.state is None:
            if not cond.breaches(v):
                return out
            self.state = "pending"
            self.started_at = ts
            self.fired_at = self.resolved_at = self.clear_since = None
            self.severity = cond.severity_of(v)
            self.value = self.peak = v
            out.append("pending")
        else:
            self.peak = cond.worse(self.peak, v)
        if self.state == "pending":
            if not cond.breaches(v):
                self.state = None
                self.value = v
                out.append("dropped")
                return out
            if cond.severity_of(v) == "critical" and self.severity == "warning":
                self.severity = "critical"
            if ts - self.started_at >= cond.for_:
                self.state = "firing"
                self.fired_at = ts
                self.value = v
                out.append("firing")
            return out
        # firing
        if cond.clears(v):
            if self.clear_since is None:
                self.clear_since = ts
            if ts - self.clear_since >= cond.keep_firing_for:
                self.state = None
                self.resolved_at = ts
                self.value = v
                out.append("resolved")
            return out
        self.clear_since = None
        if cond.severity_of(v) == "critical" and self.severity == "warning":
            self.severity = "critical"
            self.value = v
            out.append("escalated")
        return out
