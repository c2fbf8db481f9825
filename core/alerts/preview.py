""" "What would this rule have done": the alert state machine replayed over stored history.

24 h is replayed on raw samples (1-minute averages when raw retention is shorter), 7 d on 1-minute
rollups (hourly when those are gone). The same `Machine` as live evaluation decides, so the preview
counts exactly what the rule would have fired on those points. An `offline` rule is replayed on the
gaps between stored points: a gap longer than the heartbeat timeout plus the grace fires. A `dev:`
rule is replayed on the device series it matches, the worst of them at each moment as live; rules
on containers and GPUs are not replayed (a precise 400).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

from servermanager.common import rest as m
from servermanager.common.itemmetrics import CONTAINER_PREFIX, GPU_PREFIX, item_metric
from servermanager.common.series import DEVICE_PREFIX, SERIES_PREFIX, parse_selector
from servermanager.core.alerts.machine import Machine
from servermanager.core.alerts.rules import RuleSpec
from servermanager.core.nodes import NodeState
from servermanager.core.settings import CoreSettings
from servermanager.core.store.samples import SampleStore

RANGES = {"24h": 86400.0, "7d": 7 * 86400.0}


class PreviewError(ValueError):
    """A rule that cannot be replayed; the message is the 400's."""


def replay(
    rule: RuleSpec, ts: Sequence[float], values: Sequence[float | None]
) -> list[tuple[float, float, float | None, float | None]]:
    """(started_at, fired_at, resolved_at, peak) of every alert that fired over the points."""
    out: list[tuple[float, float, float | None, float | None]] = []
    mach = Machine()
    for t, v in zip(ts, values, strict=True):
        if v is None:
            continue
        for change in mach.step(rule.cond, t, v):
            if change == "resolved":
                assert mach.fired_at is not None
                out.append((mach.started_at, mach.fired_at, mach.resolved_at, mach.peak))
    if mach.state == "firing" and mach.fired_at is not None:
        out.append((mach.started_at, mach.fired_at, None, mach.peak))
    return out


def replay_offline(
    rule: RuleSpec, ts: Sequence[float], end: float, timeout: float, online_now: bool
) -> list[tuple[float, float, float | None, float | None]]:
    out: list[tuple[float, float, float | None, float | None]] = []
    grace = rule.cond.for_
    for a, b in itertools.pairwise(ts):
        if b - a - timeout >= grace:
            out.append((a + timeout, a + timeout + grace, b, None))
    if ts and not online_now and end - ts[-1] - timeout >= grace:
        out.append((ts[-1] + timeout, ts[-1] + timeout + grace, None, None))
    return out


async def preview(
    rule: RuleSpec, nodes: list[NodeState], store: SampleStore, settings: CoreSettings, span: str
) -> m.RulePreview:
    end = time.time()
    start = end - RANGES[span]
    if span == "24h":
        resolution = "raw" if start >= end - settings.retention_raw else "1m"
    else:
        resolution = "1m" if start >= end - settings.retention_1m else "1h"
    step = {"raw": 0.0, "1m": 60.0, "1h": 3600.0}[resolution]
    field = "cpu_pct" if rule.offline else rule.metric
    if field.startswith((CONTAINER_PREFIX, GPU_PREFIX)):
        raise PreviewError(
            f"{field}: the preview does not replay container or GPU values (only scalars, named and "
            "device series); the rule itself is evaluated on every sample that carries them"
        )
    alerts: list[m.PreviewAlert] = []
    for st in nodes:
        data: dict[str, Any]
        if field.startswith(DEVICE_PREFIX):
            worst = await _device_history(store, st.id, field, rule.cond.op == ">", start, end, resolution)
            data = {"ts": list(worst), "avg": {field: list(worst.values())}}
        elif field.startswith(SERIES_PREFIX):
            # A named series: its own points, where the node has it at all.
            name, labels = parse_selector(field[len(SERIES_PREFIX) :])
            found_series = await store.series.find(st.id, name, labels)
            if found_series is None:
                continue
            got = await store.series.history(found_series[0], start, end, resolution)
            data = {"ts": got["ts"], "avg": {field: got["avg"]}}
        else:
            data = await store.history(st.id, start, end, resolution, [field])
        ts: list[float] = data["ts"]
        if rule.offline:
            interval = settings.agent_interval or st.interval or 1.0
            timeout = max(step, interval * settings.heartbeat_misses + 1.0)
            found = replay_offline(rule, ts, end, timeout, st.online)
        else:
            found = replay(rule, ts, data["avg"][field])
        alerts += [
            m.PreviewAlert(node_id=st.id, node=st.name, started_at=s, fired_at=f, resolved_at=r, peak=p)
            for s, f, r, p in found
        ]
    alerts.sort(key=lambda a: a.fired_at)
    return m.RulePreview(from_=start, to=end, fired=len(alerts), alerts=alerts)


async def _device_history(
    store: SampleStore, node_id: int, metric: str, above: bool, start: float, end: float, resolution: str
) -> dict[float, float]:
    """The worst of the device series a `dev:` selector matches at each stored moment, in time order."""
    im, labels = item_metric(metric)
    pick = max if above else min
    worst: dict[float, float] = {}
    for sid, name, have, _unit, _ts, _value in await store.series.list(node_id, devices=True):
        if name != im.name or any(have.get(k) != v for k, v in labels.items()):
            continue
        got = await store.series.history(sid, start, end, resolution)
        for t, v in zip(got["ts"], got["avg"], strict=True):
            if v is not None:
                worst[t] = v if t not in worst else pick(worst[t], v)
    return dict(sorted(worst.items()))
