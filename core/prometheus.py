"""GET /metrics: the fleet's latest readings and the core's own counters in Prometheus text format."""

from __future__ import annotations

from aiohttp import web

from servermanager.common.metrics import SCALAR_FIELDS
from servermanager.core.api import ApiError, authenticate, error_response
from servermanager.core.auth import Role
from servermanager.core.context import CORE


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def metrics_handler(request: web.Request) -> web.Response:
    core = request.app[CORE]
    if core.settings.metrics_auth:
        try:
            await authenticate(core, request, Role.VIEWER)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message)
    lines = [
        "# HELP sm_node_up 1 if the node's agent is connected.",
        "# TYPE sm_node_up gauge",
    ]
    nodes = sorted(core.nodes.nodes.values(), key=lambda n: n.id)
    labels = {n.id: f'node_id="{n.id}",node="{_label(n.name)}",group="{_label(n.group)}"' for n in nodes}
    lines += [f"sm_node_up{{{labels[n.id]}}} {int(n.online)}" for n in nodes]
    for field in SCALAR_FIELDS:
        lines.append(f"# TYPE sm_node_{field} gauge")
        for n in nodes:
            if n.latest is None:
                continue
            value = getattr(n.latest.metrics, field)
            if value is not None:
                lines.append(f"sm_node_{field}{{{labels[n.id]}}} {value}")
    lines += [
        "# TYPE sm_core_samples_written_total counter",
        f"sm_core_samples_written_total {core.store.rows_written}",
        "# TYPE sm_core_commits_total counter",
        f"sm_core_commits_total {core.store.commits}",
        "# TYPE sm_core_clients gauge",
        f"sm_core_clients {core.bus.subscribers}",
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")
