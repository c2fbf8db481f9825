"""Benchmark part d: history queries over days of one-minute rollups written straight into a core database."""

from __future__ import annotations

import random
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.harness import CoreProc, log, pcts_ms, to_ms
from servermanager.common import metrics as mt

P50_MS_TARGET = 100.0


def build_history_db(path: Path, days: int, seed: int = 7) -> tuple[int, int, int]:
    """One node with `days` x 1440 one-minute rollups (and the matching 1h rows); returns id, from, to (ms)."""
    from servermanager.core.store.schema import migrate_sync

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    migrate_sync(path)
    rng = random.Random(seed)
    end = int(time.time() // 60 * 60_000)
    start = end - days * 86_400_000
    con = sqlite3.connect(path)
    try:
        cur = con.execute(
            "INSERT INTO nodes (name, cred_hash, host, created_at) VALUES (?, ?, NULL, ?)",
            ("history-bench", secrets.token_bytes(32), start / 1000),
        )
        node_id = int(cur.lastrowid or 0)
        cols = ["node_id", "ts", "cnt"] + [
            f"{f}_{a}" for f in mt.SCALAR_FIELDS for a in ("avg", "min", "max")
        ]
        sql = f"INSERT INTO samples_1m ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        scale = {"mem_used": 4e9, "procs": 200, "uptime": 1e6, "disk_read_bps": 4e5, "disk_write_bps": 9e5,
                 "net_rx_bps": 2.5e5, "net_tx_bps": 1.2e5, "disk_read_iops": 20, "disk_write_iops": 60}  # fmt: skip
        level = {f: scale.get(f, 30.0) for f in mt.SCALAR_FIELDS}
        rows = []
        for i in range(days * 1440):
            ts = start + (i + 1) * 60_000
            vals: list[float] = []
            for f in mt.SCALAR_FIELDS:
                s = scale.get(f, 30.0)
                level[f] = min(max(level[f] + rng.gauss(0, s * 0.02), 0.0), s * 3)
                avg, d = level[f], mt.FIELD_DECIMALS[f]
                # Rounded as the core's rollup stores them.
                vals += [
                    round(avg, d),
                    round(avg * rng.uniform(0.7, 1.0), d),
                    round(avg * rng.uniform(1.0, 1.3), d),
                ]
            rows.append((node_id, ts, 60, *vals))
        con.executemany(sql, rows)
        # One hourly row per hour (values of the hour's last minute): enough for resolution=auto.
        hour = [
            (node_id, start + (h + 1) * 3_600_000, 3600, *rows[h * 60 + 59][3:]) for h in range(days * 24)
        ]
        con.executemany(sql.replace("samples_1m", "samples_1h"), hour)
        con.commit()
    finally:
        con.close()
    return node_id, start, end


async def bench_history(workdir: Path, *, days: int, reps: int) -> dict[str, Any]:
    data = workdir / "core"
    t = time.monotonic()
    node_id, start, end = build_history_db(data / "servermanager.db", days)
    out: dict[str, Any] = {"days": days, "rows_1m": days * 1440, "node_id": node_id}
    out["build_seconds"] = round(time.monotonic() - t, 1)
    out["storage_1m"] = _table_bytes(data / "servermanager.db", "samples_1m", days * 1440)
    frm, to = start / 1000, end / 1000
    week = to - 7 * 86400
    variants = {
        # One chart's series (avg, min and max of a field): first, so its first answer is a cold one.
        "1m_cpu_pct": f"resolution=1m&from={frm}&to={to}&fields=cpu_pct",
        "1m_all_fields": f"resolution=1m&from={frm}&to={to}",
        # What a chart asks for: 30 days of 1m rows merged into as many points as it has pixels.
        "1m_cpu_pct_2000_points": f"resolution=1m&from={frm}&to={to}&fields=cpu_pct&points=2000",
        "1m_all_fields_2000_points": f"resolution=1m&from={frm}&to={to}&points=2000",
        "auto_all_fields": f"resolution=auto&from={frm}&to={to}",
        # The longest range for which resolution=auto still picks 1m rollups.
        "7d_auto_all_fields": f"resolution=auto&from={week}&to={to}",
    }
    # Twice: with the history cache off (every answer read and written out by SQLite: what a
    # first look at a node costs) and on, as shipped (past days come ready from memory).
    for key, env in (("queries_no_cache", {"SM_CORE_HISTORY_CACHE_MB": "0"}), ("queries", {})):
        async with CoreProc(workdir, data, env) as core:
            out[key] = await _history_queries(core, node_id, variants, reps)
    out["sql_only"] = _sql_timing(data / "servermanager.db", node_id, start, end, reps)
    limit = P50_MS_TARGET
    out["targets"] = {
        "p50_lt_100ms_one_field": out["queries"]["1m_cpu_pct"]["p50"] < limit,
        "p50_lt_100ms_one_field_no_cache": out["queries_no_cache"]["1m_cpu_pct"]["p50"] < limit,
        "p50_lt_100ms_all_fields": out["queries"]["1m_all_fields"]["p50"] < limit,
    }
    return out


async def _history_queries(
    core: CoreProc, node_id: int, variants: dict[str, str], reps: int
) -> dict[str, Any]:
    assert core.http is not None
    headers = {"Authorization": f"Bearer {core.token}"}
    results: dict[str, Any] = {}
    for name, query in variants.items():
        url = f"{core.url}/api/v1/nodes/{node_id}/metrics?{query}"
        times: list[float] = []
        first = size = points = None
        resolution = None
        for i in range(reps + 1):
            t0 = time.perf_counter()
            async with core.http.get(url, headers=headers) as r:
                body = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"history query failed {r.status}: {body[:300]!r}")
            dt = time.perf_counter() - t0
            if i == 0:
                first = dt  # the first answer pays for cold caches: reported apart
                doc = msgspec.json.decode(body)
                size, points, resolution = len(body), len(doc["ts"]), doc["resolution"]
            else:
                times.append(dt)
        results[name] = {
            "resolution": resolution,
            "points": points,
            "response_bytes": size,
            "first_ms": to_ms(first),
            **pcts_ms(times, (50, 95)),
        }
        log(f"history {name}: p50 {results[name]['p50']} ms, p95 {results[name]['p95']} ms, {size} bytes")
    return results


def _table_bytes(db: Path, table: str, rows: int) -> dict[str, Any]:
    con = sqlite3.connect(db)
    try:
        pgsize, payload = con.execute(
            "SELECT sum(pgsize), sum(payload) FROM dbstat WHERE name = ?", (table,)
        ).fetchone()
    finally:
        con.close()
    return {"bytes_per_row_pages": round(pgsize / rows, 1), "bytes_per_row_payload": round(payload / rows, 1)}


def _sql_timing(db: Path, node_id: int, start: int, end: int, reps: int) -> dict[str, Any]:
    """The same SELECT the core runs, without HTTP or JSON: how much of the time is SQLite's."""
    out = {}
    con = sqlite3.connect(db)
    try:
        for name, fields in (("1m_all_fields", mt.SCALAR_FIELDS), ("1m_cpu_pct", ("cpu_pct",))):
            exprs = ", ".join(f"{f}_avg, {f}_min, {f}_max" for f in fields)
            sql = f"SELECT ts, {exprs} FROM samples_1m WHERE node_id = ? AND ts >= ? AND ts <= ? ORDER BY ts"
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                con.execute(sql, (node_id, start, end)).fetchall()
                times.append(time.perf_counter() - t0)
            out[name] = pcts_ms(times, (50, 95))
    finally:
        con.close()
    return out
