"""The alerting part of /api/v1: rules (with the history preview), alerts and acknowledgement, silences."""

from __future__ import annotations

import dataclasses
import time

import msgspec

from servermanager.common import rest as m
from servermanager.common.alerts import Alert
from servermanager.core.alerts.engine import AlertError, applies
from servermanager.core.alerts.preview import PreviewError, preview
from servermanager.core.alerts.rules import RuleConflict, RuleError, RuleSpec, normalize, patched
from servermanager.core.alerts.silences import SilenceError
from servermanager.core.auth import Role
from servermanager.core.http.routing import ApiError, Call, Route


def _rule(c: Call) -> RuleSpec:
    rule = c.core.alerts.rules.get(c.path_id("rule"))
    if rule is None:
        raise ApiError(404, "not_found", "no such rule")
    return rule


async def _normalized(
    c: Call, body: m.RuleCreate, rule_id: int, created_at: float, created_by: str
) -> RuleSpec:
    try:
        return normalize(
            body,
            rule_id=rule_id,
            created_at=created_at,
            created_by=created_by,
            channels=await c.core.alerts.store.channel_ids(),
            nodes=c.core.nodes.nodes.keys(),
        )
    except RuleError as exc:
        raise ApiError(400, "invalid_rule", str(exc)) from None


# ---------------------------------------------------------------- rules


async def list_rules(c: Call) -> m.RuleList:
    return m.RuleList([r.api() for r in sorted(c.core.alerts.rules.values(), key=lambda r: r.id)])


async def get_rule(c: Call) -> m.Rule:
    return _rule(c).api()


async def create_rule(c: Call) -> m.Rule:
    body: m.RuleCreate = c.body
    rule = await _normalized(c, body, 0, time.time(), c.actor)
    try:
        rid = await c.core.alerts.store.insert(rule)
    except RuleConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    rule = dataclasses.replace(rule, id=rid)
    c.core.alerts.rule_changed(rule, rid)
    await c.core.audit.record(c.actor, "rule.create", f"rule:{rid}", "ok", {"name": rule.name})
    return rule.api()


async def patch_rule(c: Call) -> m.Rule:
    old = _rule(c)
    try:
        merged = patched(old, c.body)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_rule", str(exc)) from None
    rule = await _normalized(c, merged, old.id, old.created_at, old.created_by)
    try:
        await c.core.alerts.store.update(rule)
    except RuleConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    c.core.alerts.rule_changed(rule, rule.id)
    await c.core.alerts.sync()
    await c.core.audit.record(c.actor, "rule.update", f"rule:{rule.id}", "ok", msgspec.to_builtins(c.body))
    return rule.api()


async def delete_rule(c: Call) -> None:
    rid = c.path_id("rule")
    if rid not in c.core.alerts.rules:
        await c.core.audit.record(c.actor, "rule.delete", f"rule:{rid}", "not_found")
        raise ApiError(404, "not_found", "no such rule")
    await c.core.alerts.store.delete(rid)
    c.core.alerts.rule_changed(None, rid)
    await c.core.alerts.sync()
    await c.core.audit.record(c.actor, "rule.delete", f"rule:{rid}", "ok")


async def preview_rule(c: Call) -> m.RulePreview:
    return await _preview(c, _rule(c))


async def preview_draft(c: Call) -> m.RulePreview:
    """The same for a rule being edited, saved or not: checked as a new rule, then replayed."""
    return await _preview(c, await _normalized(c, c.body, 0, time.time(), c.actor))


async def _preview(c: Call, rule: RuleSpec) -> m.RulePreview:
    q: m.RulePreviewQuery = c.query
    nodes = [st for st in sorted(c.core.nodes.nodes.values(), key=lambda n: n.id) if applies(rule, st)]
    try:
        return await preview(rule, nodes, c.core.store, c.core.settings, q.range)
    except PreviewError as exc:
        raise ApiError(400, "invalid_rule", str(exc)) from None


# ---------------------------------------------------------------- alerts


async def list_alerts(c: Call) -> m.AlertList:
    q: m.AlertQuery = c.query
    if q.from_ is not None and q.to is not None and q.from_ > q.to:
        raise ApiError(400, "invalid_query", "query parameter 'from' must not be after 'to'")
    return m.AlertList(await c.core.alerts.query(q))


async def get_alert(c: Call) -> m.AlertDetail:
    detail = await c.core.alerts.detail(c.path_id("alert"))
    if detail is None:
        raise ApiError(404, "not_found", "no such alert")
    snapshot, note = await c.core.incidents.for_alert(detail.alert)
    return msgspec.structs.replace(detail, snapshot=snapshot, snapshot_note=note)


async def ack_alert(c: Call) -> Alert:
    aid = c.path_id("alert")
    try:
        alert = await c.core.alerts.ack(aid, c.actor)
    except AlertError as exc:
        await c.core.audit.record(c.actor, "alert.ack", f"alert:{aid}", exc.code)
        raise ApiError(exc.status, exc.code, exc.message) from None
    await c.core.audit.record(
        c.actor, "alert.ack", f"alert:{aid}", "ok", {"rule": alert.rule, "node": alert.node}
    )
    return alert


# ---------------------------------------------------------------- silences


async def list_silences(c: Call) -> m.SilenceList:
    q: m.SilenceQuery = c.query
    return m.SilenceList(await c.core.alerts.silences.list(q.state, q.limit))


async def create_silence(c: Call) -> m.Silence:
    body: m.SilenceCreate = c.body
    alerts = c.core.alerts
    try:
        s = await alerts.silences.create(body, c.actor, alerts.rules.keys(), c.core.nodes.nodes.keys())
    except SilenceError as exc:
        raise ApiError(400, "invalid_silence", str(exc)) from None
    alerts.silences_changed()
    await alerts.sync()
    await c.core.audit.record(c.actor, "silence.create", f"silence:{s.id}", "ok", msgspec.to_builtins(body))
    return s


async def delete_silence(c: Call) -> None:
    sid = c.path_id("silence")
    s = await c.core.alerts.silences.expire(sid)
    await c.core.audit.record(c.actor, "silence.delete", f"silence:{sid}", "ok" if s else "not_found")
    if s is None:
        raise ApiError(404, "not_found", "no such silence")
    c.core.alerts.silences_changed()
    await c.core.alerts.sync()


V = "/api/v1"
ALERT_ROUTES: list[Route] = [
    Route(
        "GET",
        f"{V}/alert-rules",
        list_rules,
        summary="Alert rules",
        role=Role.VIEWER,
        response=m.RuleList,
        tag="alerts",
    ),
    Route(
        "POST",
        f"{V}/alert-rules",
        create_rule,
        summary="Create an alert rule",
        role=Role.OPERATOR,
        body=m.RuleCreate,
        response=m.Rule,
        status=201,
        tag="alerts",
    ),
    Route(
        "GET",
        f"{V}/alert-rules/{{id}}",
        get_rule,
        summary="One alert rule",
        role=Role.VIEWER,
        response=m.Rule,
        tag="alerts",
    ),
    Route(
        "PATCH",
        f"{V}/alert-rules/{{id}}",
        patch_rule,
        summary="Edit an alert rule",
        role=Role.OPERATOR,
        body=m.RulePatch,
        response=m.Rule,
        tag="alerts",
    ),
    Route(
        "DELETE",
        f"{V}/alert-rules/{{id}}",
        delete_rule,
        summary="Delete an alert rule; its open alerts resolve",
        role=Role.OPERATOR,
        status=204,
        tag="alerts",
    ),
    Route(
        "GET",
        f"{V}/alert-rules/{{id}}/preview",
        preview_rule,
        summary="What the rule would have fired over the stored history of its targets",
        role=Role.VIEWER,
        query=m.RulePreviewQuery,
        response=m.RulePreview,
        errors=(400,),
        tag="alerts",
    ),
    Route(
        "POST",
        f"{V}/alert-rules/preview",
        preview_draft,
        summary="What a rule being edited (saved or not) would have fired over stored history",
        role=Role.VIEWER,
        body=m.RuleCreate,
        query=m.RulePreviewQuery,
        response=m.RulePreview,
        tag="alerts",
    ),
    Route(
        "GET",
        f"{V}/alerts",
        list_alerts,
        summary="Alerts, newest first, with filters",
        role=Role.VIEWER,
        query=m.AlertQuery,
        response=m.AlertList,
        tag="alerts",
    ),
    Route(
        "GET",
        f"{V}/alerts/{{id}}",
        get_alert,
        summary="An alert with its transitions, delivery log and incident snapshot",
        role=Role.VIEWER,
        response=m.AlertDetail,
        tag="alerts",
    ),
    Route(
        "POST",
        f"{V}/alerts/{{id}}/ack",
        ack_alert,
        summary="Acknowledge an alert (stops repeats)",
        role=Role.OPERATOR,
        response=Alert,
        tag="alerts",
    ),
    Route(
        "GET",
        f"{V}/silences",
        list_silences,
        summary="Silences, active or expired",
        role=Role.VIEWER,
        query=m.SilenceQuery,
        response=m.SilenceList,
        tag="alerts",
    ),
    Route(
        "POST",
        f"{V}/silences",
        create_silence,
        summary="Silence matching alerts for a while",
        role=Role.OPERATOR,
        body=m.SilenceCreate,
        response=m.Silence,
        status=201,
        tag="alerts",
    ),
    Route(
        "DELETE",
        f"{V}/silences/{{id}}",
        delete_silence,
        summary="End a silence now",
        role=Role.OPERATOR,
        status=204,
        tag="alerts",
    ),
]
