"""Silences: matchers (rule, node, group, tag; every one given must match) until an end time.

A silenced alert still changes state and is stored, but no notification is written for it. The
active silences are held in memory (they are few), so matching costs no read.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from servermanager.common import rest as m
from servermanager.common.settings import parse_duration
from servermanager.core.store.db import Database

# A silence longer than a year is a rule that should be disabled or deleted instead.
MAX_SILENCE = 365 * 86400.0


class SilenceError(ValueError):
    """A silence that cannot be made; the message is the 400's."""


_COLS = "id, rule_id, node_id, grp, tag, starts_at, ends_at, comment, created_by"


def _row(r: Any) -> m.Silence:
    return m.Silence(
        id=r[0],
        rule=r[1],
        node=r[2],
        group=r[3],
        tag=r[4],
        starts_at=r[5],
        ends_at=r[6],
        comment=r[7],
        created_by=r[8],
    )


def matches(s: m.Silence, rule_id: int, node_id: int, group: str, tags: Collection[str]) -> bool:
    return (
        (s.rule is None or s.rule == rule_id)
        and (s.node is None or s.node == node_id)
        and (s.group is None or s.group == group)
        and (s.tag is None or s.tag in tags)
    )


class Silences:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.active: dict[int, m.Silence] = {}

    async def load(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        rows = await self.db.fetchall(f"SELECT {_COLS} FROM silences WHERE ends_at > ?", (now,))
        self.active = {r[0]: _row(r) for r in rows}

    def matching(self, rule_id: int, node_id: int, group: str, tags: Collection[str], now: float) -> bool:
        return any(
            s.starts_at <= now < s.ends_at and matches(s, rule_id, node_id, group, tags)
            for s in self.active.values()
        )

    def expire_due(self, now: float) -> list[m.Silence]:
        """Forget the silences that ended by now; returns them."""
        gone = [s for s in self.active.values() if s.ends_at <= now]
        for s in gone:
            del self.active[s.id]
        return gone

    async def create(
        self, body: m.SilenceCreate, actor: str, rules: Collection[int], nodes: Collection[int]
    ) -> m.Silence:
        now = time.time()
        if body.rule is None and body.node is None and body.group is None and body.tag is None:
            raise SilenceError("a silence needs at least one matcher: rule, node, group or tag")
        if body.rule is not None and body.rule not in rules:
            raise SilenceError(f"unknown rule {body.rule}")
        if body.node is not None and body.node not in nodes:
            raise SilenceError(f"unknown node {body.node}")
        if (body.ends_at is None) == (body.duration is None):
            raise SilenceError("give exactly one of ends_at or duration")
        if body.duration is not None:
            try:
                seconds = parse_duration(body.duration)
            except ValueError as exc:
                raise SilenceError(f"duration: {exc}") from None
            if not 0 < seconds <= MAX_SILENCE:
                raise SilenceError(f"duration must be more than 0 and at most 365d, got {body.duration!r}")
            ends = now + seconds
        else:
            assert body.ends_at is not None
            if body.ends_at <= now:
                raise SilenceError("ends_at is in the past")
            if body.ends_at > now + MAX_SILENCE:
                raise SilenceError("ends_at is more than 365 days away")
            ends = body.ends_at
        if not body.comment.strip():
            raise SilenceError("comment must not be blank")
        sid = await self.db.insert(
            "INSERT INTO silences (rule_id, node_id, grp, tag, starts_at, ends_at, comment, created_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (body.rule, body.node, body.group, body.tag, now, ends, body.comment, actor),
        )
        s = m.Silence(
            id=sid,
            rule=body.rule,
            node=body.node,
            group=body.group,
            tag=body.tag,
            starts_at=now,
            ends_at=ends,
            comment=body.comment,
            created_by=actor,
        )
        self.active[sid] = s
        return s

    async def expire(self, silence_id: int) -> m.Silence | None:
        """End a silence now (it stays listed as expired); None if there is no such silence."""
        now = time.time()
        row = await self.db.fetchone(f"SELECT {_COLS} FROM silences WHERE id = ?", (silence_id,))
        if row is None:
            return None
        s = _row(row)
        if s.ends_at > now:
            await self.db.execute("UPDATE silences SET ends_at = ? WHERE id = ?", (now, silence_id))
            s.ends_at = now
        self.active.pop(silence_id, None)
        return s

    async def list(self, state: str, limit: int = 500) -> list[m.Silence]:
        now = time.time()
        if state == "active":
            where, order = "ends_at > ?", "ends_at"
        elif state == "expired":
            where, order = "ends_at <= ?", "ends_at DESC"
        else:
            where, order = "? IS NOT NULL", "id DESC"
        rows = await self.db.fetchall(
            f"SELECT {_COLS} FROM silences WHERE {where} ORDER BY {order} LIMIT ?", (now, limit)
        )
        return [_row(r) for r in rows]
