"""Alert rules: validating RuleCreate/RulePatch into a normalized rule, and keeping them in alert_rules."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import msgspec

from servermanager.common import rest as m
from servermanager.common.alerts import OFFLINE
from servermanager.common.itemmetrics import ITEM_PREFIXES, item_metric
from servermanager.common.metrics import SCALAR_FIELDS
from servermanager.common.series import SERIES_PREFIX, SelectorError, format_selector, parse_selector
from servermanager.common.settings import parse_duration
from servermanager.core.alerts.machine import Condition
from servermanager.core.store.db import Database


class RuleError(ValueError):
    """A rule that cannot be kept; the message is the 400's."""


class RuleConflict(RuleError):
    """Another rule has the name (409)."""


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A validated rule as the engine uses it."""

    id: int
    name: str
    metric: str
    cond: Condition
    targets: m.Targets
    channels: tuple[int, ...]
    enabled: bool
    created_at: float
    created_by: str

    @property
    def offline(self) -> bool:
        return self.metric == OFFLINE

    def api(self) -> m.Rule:
        c = self.cond
        return m.Rule(
            id=self.id,
            name=self.name,
            metric=self.metric,
            op=c.op,  # type: ignore[arg-type]
            threshold=c.threshold,
            clear_threshold=c.clear_threshold,
            critical_threshold=c.critical_threshold,
            for_=c.for_,
            keep_firing_for=c.keep_firing_for,
            severity=c.severity,
            targets=self.targets,
            channels=list(self.channels),
            enabled=self.enabled,
            created_at=self.created_at,
            created_by=self.created_by,
        )

    def spec_json(self) -> str:
        """What alert_rules.spec holds: the rule minus id, name, enabled and who/when."""
        c = self.cond
        return json.dumps(
            {
                "metric": self.metric,
                "op": c.op,
                "threshold": c.threshold,
                "clear_threshold": c.clear_threshold,
                "critical_threshold": c.critical_threshold,
                "for": c.for_,
                "keep_firing_for": c.keep_firing_for,
                "severity": c.severity,
                "targets": msgspec.to_builtins(self.targets),
                "channels": list(self.channels),
            }
        )


# A condition held longer than this is not an alert but a state; it also bounds what a rule keeps.
MAX_RULE_DURATION = 30 * 86400.0


def _duration(name: str, value: float | str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise RuleError(f"{name}: {exc}") from None
    if not 0 <= seconds <= MAX_RULE_DURATION:
        raise RuleError(f"{name} must be from 0 to 30d, got {value!r}")
    return seconds


def normalize(
    body: m.RuleCreate,
    *,
    rule_id: int,
    created_at: float,
    created_by: str,
    channels: Collection[int],
    nodes: Collection[int],
) -> RuleSpec:
    """Check a whole rule; `channels` and `nodes` are the ids that exist. Raises RuleError."""
    metric = body.metric
    if metric.startswith(SERIES_PREFIX):
        # A named series: kept in its canonical form (labels sorted), as the engine matches it.
        try:
            metric = SERIES_PREFIX + format_selector(*parse_selector(metric[len(SERIES_PREFIX) :]))
        except SelectorError as exc:
            raise RuleError(f"metric: {exc}") from None
    elif metric.startswith(ITEM_PREFIXES):
        # A device's, container's or GPU's value: its name checked, kept canonical like a series.
        try:
            im, labels = item_metric(metric)
        except SelectorError as exc:
            raise RuleError(f"metric: {exc}") from None
        metric = format_selector(im.name, labels)
    elif metric != OFFLINE and metric not in SCALAR_FIELDS:
        raise RuleError(
            f"unknown metric {metric!r}; use {OFFLINE!r} or one of: {', '.join(SCALAR_FIELDS)}; "
            f'or {SERIES_PREFIX}NAME{{label="value"}} for a named series; '
            f'or dev:, container: or gpu: NAME{{label="value"}} for a device, container or GPU'
        )
    for_ = _duration("for", body.for_)
    keep = _duration("keep_firing_for", body.keep_firing_for)
    op = body.op
    if body.metric == OFFLINE and (body.clear_threshold is not None or body.critical_threshold is not None):
        raise RuleError("an offline rule takes no clear_threshold or critical_threshold")
    if body.clear_threshold is not None:
        if op == ">" and body.clear_threshold > body.threshold:
            raise RuleError(
                f"clear_threshold {body.clear_threshold:g} must be at or below threshold "
                f"{body.threshold:g} for op '>'"
            )
        if op == "<" and body.clear_threshold < body.threshold:
            raise RuleError(
                f"clear_threshold {body.clear_threshold:g} must be at or above threshold "
                f"{body.threshold:g} for op '<'"
            )
    if body.critical_threshold is not None:
        if op == ">" and body.critical_threshold <= body.threshold:
            raise RuleError(
                f"critical_threshold {body.critical_threshold:g} must be above threshold "
                f"{body.threshold:g} for op '>'"
            )
        if op == "<" and body.critical_threshold >= body.threshold:
            raise RuleError(
                f"critical_threshold {body.critical_threshold:g} must be below threshold "
                f"{body.threshold:g} for op '<'"
            )
    t = body.targets
    if not (t.all or t.nodes or t.group is not None or t.tag is not None):
        raise RuleError("targets is empty: give nodes, group, tag or all")
    unknown_nodes = sorted(set(t.nodes or []) - set(nodes))
    if unknown_nodes:
        raise RuleError(f"unknown node(s) in targets: {unknown_nodes}")
    unknown = sorted(set(body.channels) - set(channels))
    if unknown:
        raise RuleError(f"unknown channel(s): {unknown}")
    return RuleSpec(
        id=rule_id,
        name=body.name,
        metric=metric,
        cond=Condition(
            op=op,
            threshold=body.threshold,
            clear_threshold=body.clear_threshold,
            critical_threshold=body.critical_threshold,
            for_=for_,
            keep_firing_for=keep,
            severity=body.severity,
        ),
        targets=t,
        channels=tuple(dict.fromkeys(body.channels)),
        enabled=body.enabled,
        created_at=created_at,
        created_by=created_by,
    )


def patched(rule: RuleSpec, patch: m.RulePatch) -> m.RuleCreate:
    """The rule's RuleCreate with the patch's given fields over it (to be normalized again)."""
    base: dict[str, Any] = msgspec.to_builtins(rule.api())
    for key in ("id", "created_at", "created_by"):
        base.pop(key)
    base.update(msgspec.to_builtins(patch))
    return msgspec.convert(base, m.RuleCreate)


class RuleStore:
    """alert_rules rows."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def channel_ids(self) -> set[int]:
        return {r[0] for r in await self.db.fetchall("SELECT id FROM channels")}

    async def load(self) -> list[RuleSpec]:
        rows = await self.db.fetchall(
            "SELECT id, name, spec, enabled, created_at, created_by FROM alert_rules ORDER BY id"
        )
        return [self._from_row(r) for r in rows]

    async def get(self, rule_id: int) -> RuleSpec | None:
        row = await self.db.fetchone(
            "SELECT id, name, spec, enabled, created_at, created_by FROM alert_rules WHERE id = ?", (rule_id,)
        )
        return self._from_row(row) if row is not None else None

    @staticmethod
    def _from_row(r: Any) -> RuleSpec:
        spec = json.loads(r[2])
        return RuleSpec(
            id=r[0],
            name=r[1],
            metric=spec["metric"],
            cond=Condition(
                op=spec["op"],
                threshold=spec["threshold"],
                clear_threshold=spec["clear_threshold"],
                critical_threshold=spec["critical_threshold"],
                for_=spec["for"],
                keep_firing_for=spec["keep_firing_for"],
                severity=spec["severity"],
            ),
            targets=msgspec.convert(spec["targets"], m.Targets),
            channels=tuple(spec["channels"]),
            enabled=bool(r[3]),
            created_at=r[4],
            created_by=r[5],
        )

    async def insert(self, rule: RuleSpec) -> int:
        try:
            return await self.db.insert(
                "INSERT INTO alert_rules (name, spec, enabled, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
                (rule.name, rule.spec_json(), int(rule.enabled), rule.created_at, rule.created_by),
            )
        except Exception as exc:
            if "UNIQUE" in str(exc):
                raise RuleConflict(f"a rule named {rule.name!r} exists already") from None
            raise

    async def update(self, rule: RuleSpec) -> None:
        try:
            await self.db.execute(
                "UPDATE alert_rules SET name = ?, spec = ?, enabled = ? WHERE id = ?",
                (rule.name, rule.spec_json(), int(rule.enabled), rule.id),
            )
        except Exception as exc:
            if "UNIQUE" in str(exc):
                raise RuleConflict(f"a rule named {rule.name!r} exists already") from None
            raise

    async def delete(self, rule_id: int) -> None:
        await self.db.execute("DELETE FROM alert_rules WHERE id = ?", (rule_id,))
