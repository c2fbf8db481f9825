"""REST for logs: a node's log sources, and a one-shot read relayed to its agent (operator role:
logs can carry secrets). Following goes over /ws/client (core.ws.client_gateway)."""

from __future__ import annotations

import msgspec

from servermanager.common import rest as m
from servermanager.common.protocol import LogQuery
from servermanager.core.auth import Role
from servermanager.core.http.routing import ApiError, Call, Route
from servermanager.core.logs import LogFailure

# How an agent's (or the relay's) refusal answers over HTTP.
STATUS = {
    "refused": 403,
    "forbidden": 403,
    "invalid": 400,
    "not_found": 404,
    "busy": 429,
    "offline": 409,
    "failed": 502,
    "timeout": 504,
}


def audit_detail(q: LogQuery, follow: bool) -> dict[str, object]:
    detail: dict[str, object] = {k: v for k, v in msgspec.to_builtins(q).items() if v is not None}
    detail["follow"] = follow
    return detail


async def log_sources(c: Call) -> m.LogSourcesResponse:
    nid = c.path_id("node")
    st = await c.core.nodes.find(nid)
    if st is None:
        raise ApiError(404, "not_found", "no such node")
    return m.LogSourcesResponse(nid, st.online, c.core.logs.sources.get(nid))


async def read_logs(c: Call) -> m.LogsResponse:
    nid = c.path_id("node")
    st = await c.core.nodes.find(nid)
    if st is None:
        raise ApiError(404, "not_found", "no such node")
    q: m.LogsQuery = c.query
    query = LogQuery(
        source=q.source,
        unit=q.unit,
        priority=q.priority,
        since=q.since,
        until=q.until,
        lines=q.lines,
        match=q.match,
    )
    detail = audit_detail(query, False)
    try:
        result = await c.core.logs.fetch(st, query)
    except LogFailure as exc:
        await c.core.audit.record(
            c.actor, "logs.read", f"node:{nid}", exc.code, {**detail, "error": exc.message}
        )
        raise ApiError(STATUS.get(exc.code, 502), exc.code, exc.message) from None
    detail["entries"] = len(result.entries)
    await c.core.audit.record(c.actor, "logs.read", f"node:{nid}", "ok", detail)
    return m.LogsResponse(
        nid, q.source, result.entries, result.truncated, "; ".join(result.notes) if result.notes else None
    )


V = "/api/v1"
LOG_ROUTES = [
    Route(
        "GET",
        f"{V}/nodes/{{id}}/logs",
        read_logs,
        summary="Recent lines of a node's journal or an allowlisted log file",
        role=Role.OPERATOR,
        query=m.LogsQuery,
        response=m.LogsResponse,
        errors=(404, 409, 429, 502, 504),
        tag="logs",
    ),
    Route(
        "GET",
        f"{V}/nodes/{{id}}/logs/sources",
        log_sources,
        summary="The log sources a node's agent offers",
        role=Role.OPERATOR,
        response=m.LogSourcesResponse,
        errors=(404,),
        tag="logs",
    ),
]
