"""GET /metrics: the fleet's latest readings and the core's own counters in Prometheus text format."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, get_args

from aiohttp import web

from servermanager.common.alerts import Severity
from servermanager.common.metrics import FIELDS, Field, Kind, Metrics, Unit, scalar
from servermanager.core.auth import Role
from servermanager.core.context import CORE
from servermanager.core.http.routing import ApiError, authenticate, error_response

if TYPE_CHECKING:
    from servermanager.core.context import Core

# A rate row is already a per-second value the agent worked out between two readings, so to
# Prometheus it is a gauge as well; a Prometheus counter would be the raw total, which isn't sent.
PROMETHEUS_TYPE: dict[Kind, str] = {Kind.GAUGE: "gauge", Kind.RATE: "gauge"}

# Prometheus names end in their unit, spelt out and in base units (its naming guide, and what
# `promtool check metrics` lints). Percentages stay 0..100 as `_percent`, the unit the agent
# measures and alert rules use, so a threshold reads the same in the app and in PromQL.
UNIT_SUFFIX: dict[Unit, str] = {
    Unit.PERCENT: "_percent",
    Unit.BYTES: "_bytes",
    Unit.BYTES_PER_S: "_bytes_per_second",
    Unit.PER_S: "_per_second",
    Unit.SECONDS: "_seconds",
    Unit.COUNT: "",
    Unit.PLAIN: "",
}

# The short unit words that end some of the table's row names (which are also database columns
# and API fields, so they stay short there): dropped, or spelt out, before the unit suffix.
ABBREVIATIONS: dict[str, str] = {"_pct": "", "_bps": "", "_iops": "_ops"}

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def family_name(field: Field) -> str:
    """The Prometheus name of a row of the metric table: `sm_node_` + its name in base units."""
    stem = field.name
    for short, spelt in ABBREVIATIONS.items():
        if stem.endswith(short):
            stem = stem.removesuffix(short) + spelt
            break
    suffix = UNIT_SUFFIX[field.unit]
    if not stem.endswith(suffix):
        stem += suffix
    return f"sm_node_{stem}"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    # HELP text escapes only backslash and newline (quotes stay as they are, unlike label values).
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {_help(help_text)}", f"# TYPE {name} {kind}"]


def _unlabelled(name: str, kind: str, help_text: str, value: int) -> list[str]:
    return [*_family(name, kind, help_text), f"{name} {value}"]


# Nodes written between two turns of the event loop: at 5,000 nodes the node families are ~150,000
# lines, which took the loop 276 ms in one go, a stall every live push and ack waited behind at each
# scrape (found in the 5,000-agent load benchmark).
NODES_PER_TURN = 250


async def metrics_handler(request: web.Request) -> web.Response:
    core = request.app[CORE]
    if core.settings.metrics_auth:
        try:
            await authenticate(core, request, Role.VIEWER)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message)
    return web.Response(body=await exposition(core), headers={"Content-Type": CONTENT_TYPE})


async def exposition(core: Core) -> bytes:
    """The whole text; the node families are written a slice of nodes per turn of the event loop."""
    lines = _family("sm_node_up", "gauge", "1 if the node's agent is connected.")
    nodes = sorted(core.nodes.nodes.values(), key=lambda n: n.id)
    labels = {n.id: f'node_id="{n.id}",node="{_label(n.name)}",group="{_label(n.group)}"' for n in nodes}
    lines += [f"sm_node_up{{{labels[n.id]}}} {int(n.online)}" for n in nodes]
    # Each node's reading is taken once, so every family of one scrape reads the same sample.
    readings: list[tuple[str, Metrics]] = []
    for i, n in enumerate(nodes):
        if i and i % NODES_PER_TURN == 0:
            await asyncio.sleep(0)
        latest = n.latest  # on a core of a cluster, this decodes the sample another core sent
        if latest is not None:
            readings.append((labels[n.id], latest.metrics))
    # One family per row of the metric table, so a row added there is exported with no change here.
    for field in FIELDS:
        name = family_name(field)
        lines += _family(name, PROMETHEUS_TYPE[field.kind], field.help)
        for i in range(0, len(readings), NODES_PER_TURN):
            await asyncio.sleep(0)
            for label, metrics in readings[i : i + NODES_PER_TURN]:
                value = scalar(metrics, field.name)
                if value is not None:
                    lines.append(f"{name}{{{label}}} {value}")
    store = core.store
    lines += _unlabelled(
        "sm_core_samples_written_total",
        "counter",
        "Samples stored since the core started.",
        store.rows_written,
    )
    lines += _unlabelled(
        "sm_core_commits_total", "counter", "Sample commits since the core started.", store.commits
    )
    lines += _unlabelled(
        "sm_core_clients", "gauge", "Connected WebSocket clients (apps and scripts).", core.bus.subscribers
    )
    lines += _unlabelled(
        "sm_core_sockets_shed_total",
        "counter",
        "WebSockets closed with 1013 because max_unauthenticated were still silent.",
        core.handshakes.shed_total,
    )
    # Every severity has a line, 0 included, so a dashboard shows 0 rather than "no data".
    firing = dict.fromkeys(get_args(Severity), 0)
    for live in core.alerts.open.values():
        if live.m.state == "firing":
            firing[live.m.severity] += 1
    lines += _family("sm_core_alerts_firing", "gauge", "Alerts firing now (pending ones not counted).")
    lines += [f'sm_core_alerts_firing{{severity="{sev}"}} {count}' for sev, count in firing.items()]
    return "\n".join(lines).encode() + b"\n"
