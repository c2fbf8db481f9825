"""GET /metrics: the fleet's latest readings and the core's own counters in Prometheus text format."""

from __future__ import annotations

from aiohttp import web

from servermanager.common.metrics import FIELDS, Kind, scalar
from servermanager.core.auth import Role
from servermanager.core.context import CORE
from servermanager.core.http.routing import ApiError, authenticate, error_response

# A rate row is already a per-second value the agent worked out between two readings, so to
# Prometheus it is a gauge as well; a Prometheus counter would be the raw total, which isn't sent.
PROMETHEUS_TYPE: dict[Kind, str] = {Kind.GAUGE: "gauge", Kind.RATE: "gauge"}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    # HELP text escapes only backslash and newline (quotes stay as they are, unlike label values).
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {_help(help_text)}", f"# TYPE {name} {kind}"]


def _unlabelled(name: str, kind: str, help_text: str, value: int) -> list[str]:
    return [*_family(name, kind, help_text), f"{name} {value}"]


async def metrics_handler(request: web.Request) -> web.Response:
    core = request.app[CORE]
    if core.settings.metrics_auth:
        try:
            await authenticate(core, request, Role.VIEWER)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message)
    lines = _family("sm_node_up", "gauge", "1 if the node's agent is connected.")
    nodes = sorted(core.nodes.nodes.values(), key=lambda n: n.id)
    labels = {n.id: f'node_id="{n.id}",node="{_label(n.name)}",group="{_label(n.group)}"' for n in nodes}
    lines += [f"sm_node_up{{{labels[n.id]}}} {int(n.online)}" for n in nodes]
    # One family per row of the metric table, so a row added there is exported with no change here.
    for field in FIELDS:
        name = f"sm_node_{field.name}"
        lines += _family(name, PROMETHEUS_TYPE[field.kind], field.help)
        for n in nodes:
            if n.latest is None:
                continue
            value = scalar(n.latest.metrics, field.name)
            if value is not None:
                lines.append(f"{name}{{{labels[n.id]}}} {value}")
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
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")
