"""The audit trail: one row per mutating action, who, what, target, when, result."""

from __future__ import annotations

import json
import time
from typing import Any

from servermanager.core.store.db import Database


class Audit:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(
        self, actor: str, action: str, target: str | None, result: str, detail: dict[str, Any] | None = None
    ) -> None:
        await self.db.execute(
            "INSERT INTO audit (ts, actor, action, target, detail, result) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), actor, action, target, json.dumps(detail) if detail else None, result),
        )

    async def query(
        self,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[object] = []
        for col, val in (("actor", actor), ("action", action), ("target", target)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if until is not None:
            where.append("ts <= ?")
            params.append(until)
        sql = "SELECT id, ts, actor, action, target, detail, result FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = await self.db.fetchall(sql, params)
        return [
            {
                "id": r[0],
                "ts": r[1],
                "actor": r[2],
                "action": r[3],
                "target": r[4],
                "detail": json.loads(r[5]) if r[5] else None,
                "result": r[6],
            }
            for r in rows
        ]
