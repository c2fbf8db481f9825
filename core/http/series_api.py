"""REST for named series (custom metrics, scrapes, service checks): a node's list and one series' history."""

from __future__ import annotations

import json
import time

from servermanager.common import rest as m
from servermanager.common.history import choose_resolution
from servermanager.common.series import (
    LABEL_RE,
    MAX_LABELS,
    NAME_RE,
    SelectorError,
    format_selector,
    parse_selector,
)
from servermanager.core.auth import Role
from servermanager.core.http.routing import ApiError, Call, Route


async def node_series(c: Call) -> m.SeriesList:
    nid = c.path_id("node")
    st = await c.core.nodes.find(nid)
    if st is None:
        raise ApiError(404, "not_found", "no such node")
    q: m.SeriesListQuery = c.query
    rows = await c.core.store.series.list(nid, devices=q.kind == "device")
    out = [
        m.SeriesInfo(
            name=name,
            labels=labels,
            selector=format_selector(name, labels),
            unit=unit,
            last_ts=last_ts,
            last_value=last_value,
        )
        for _, name, labels, unit, last_ts, last_value in rows
    ]
    plugins = st.plugins
    if not st.here and c.core.cluster is not None:
        plugins = await c.core.cluster.plugins(nid)  # known to the core holding its agent
    return m.SeriesList(node_id=nid, series=out, plugins=list(plugins))


def _wanted(q: m.SeriesHistoryQuery) -> tuple[str, dict[str, str]]:
    if q.series is not None:
        if q.name is not None or q.labels is not None:
            raise ApiError(400, "invalid_query", "give either 'series' or 'name' (and 'labels'), not both")
        try:
            return parse_selector(q.series)
        except SelectorError as exc:
            raise ApiError(400, "invalid_query", str(exc)) from None
    if q.name is None:
        raise ApiError(400, "invalid_query", "query parameter 'series' or 'name' is required")
    if not NAME_RE.match(q.name):
        raise ApiError(400, "invalid_query", f"{q.name!r} is not a series name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    labels: dict[str, str] = {}
    if q.labels:
        try:
            raw = json.loads(q.labels)
        except ValueError:
            raise ApiError(
                400, "invalid_query", 'labels must be a JSON object such as {"check": "web"}'
            ) from None
        if (
            not isinstance(raw, dict)
            or len(raw) > MAX_LABELS
            or not all(
                isinstance(k, str) and LABEL_RE.match(k) and isinstance(v, str) for k, v in raw.items()
            )
        ):
            raise ApiError(
                400, "invalid_query", f"labels must be a JSON object of up to {MAX_LABELS} string labels"
            )
        labels = raw
    return q.name, labels


async def series_history(c: Call) -> m.History:
    """The shape of the metrics history, with the series' selector as its one field."""
    nid = c.path_id("node")
    if await c.core.nodes.find(nid) is None:
        raise ApiError(404, "not_found", "no such node")
    q: m.SeriesHistoryQuery = c.query
    name, labels = _wanted(q)
    now = time.time()
    end = q.to if q.to is not None else now
    start = q.from_ if q.from_ is not None else end - 3600
    if start >= end:
        raise ApiError(400, "invalid_query", "query parameter 'from' must be before 'to'")
    selector = format_selector(name, labels)
    found = await c.core.store.series.find(nid, name, labels)
    if found is None:
        raise ApiError(404, "not_found", f"node {nid} has no series {selector}")
    res = (
        q.resolution
        if q.resolution != "auto"
        else choose_resolution(start, end, now, c.core.settings.retention_raw, c.core.settings.retention_1m)
    )
    data = await c.core.store.series.history(found[0], start, end, res)
    return m.History(
        node_id=nid,
        resolution=res,
        from_=start,
        to=end,
        fields=[selector],
        ts=data["ts"],
        avg={selector: data["avg"]},
        min={selector: data["min"]} if "min" in data else None,
        max={selector: data["max"]} if "max" in data else None,
    )


V = "/api/v1"
SERIES_ROUTES = [
    Route(
        "GET",
        f"{V}/nodes/{{id}}/series",
        node_series,
        summary="A node's named series (custom metrics, scrapes, checks; or with kind=device its "
        "per-disk, per-interface and per-sensor series) with last values, and its plugins' status",
        role=Role.VIEWER,
        query=m.SeriesListQuery,
        response=m.SeriesList,
        errors=(400, 404),
        tag="nodes",
    ),
    Route(
        "GET",
        f"{V}/nodes/{{id}}/series/history",
        series_history,
        summary="One named series over time, in the shape of the metrics history",
        role=Role.VIEWER,
        query=m.SeriesHistoryQuery,
        response=m.History,
        errors=(400, 404),
        tag="nodes",
    ),
]
