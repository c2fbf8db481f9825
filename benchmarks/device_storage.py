"""Bytes per stored sample and per stored value (scalar columns and named series), from SQLite's dbstat.

Writes `--samples` one-second samples of `--nodes` simulated hosts (benchmarks.fleet's random walk:
2-16 per-core CPU values, one disk, two interfaces) through the core's own SampleStore into a fresh
database file, runs the core's maintenance pass as of the second after the last sample (the head
settled, 1m and 1h rollups, named series' finished windows into chunks), checkpoints the WAL, and
divides each table's pages (dbstat, indexes included) by the values they hold. A raw "value" is one
non-NULL scalar column of a raw row or one named-series point (in the head or in a chunk); a rollup
value is one non-NULL avg, min or max (three per row of a 1m chunk). The per-sample detail (per-core CPU, the lists) is not
counted as values, but its per-node table is counted as bytes, and so is the series dictionary.

The simulator's readings are first rounded as the agent rounds its own (agent/collectors.py: each
scalar to its metric-table row's decimals, a whole-unit row to an int, each interface's rates like
the totals'): the random walk carries more digits than any agent sends.

Reproduce: .venv/bin/python -m benchmarks.device_storage --nodes 20 --samples 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import msgspec

from benchmarks.fleet import Fleet, SimAgent
from servermanager.common.metrics import FIELD_DECIMALS, SCALAR_FIELDS, Metrics, Sample
from servermanager.core.store.db import Database
from servermanager.core.store.samples import SampleStore

# The tables whose pages count; INDEXES: their indexes', which count with them.
RAW_TABLES = ("samples_raw", "samples_head", "series_incoming", "series_raw", "series_chunks")
ROLLUP_TABLES = ("samples_1m", "samples_1h", "series_1m", "series_1m_chunks", "series_1h")
INDEXES = {"series_chunks": ("series_chunks_key",), "series_1m_chunks": ("series_1m_chunks_key",)}
PER_NODE_TABLES = ("node_latest", "series")


@dataclass
class _Shape:
    """What SimAgent reads of its fleet: no fleet runs here, only its readings are used."""

    interval: float = 1.0
    count: int = 1
    pool: int = 0


def _round(name: str, value: Any) -> Any:
    """As agent/collectors.py's MetricsCollector._round: the row's decimals, whole units as ints."""
    if not isinstance(value, float):
        return value
    decimals = FIELD_DECIMALS[name]
    return round(value) if decimals == 0 else round(value, decimals)


def as_agent_sends(m: Metrics) -> Metrics:
    """The simulator's reading with the digits a real agent would send."""
    return msgspec.structs.replace(
        m,
        cpu_per_core=[_round("cpu_pct", p) for p in m.cpu_per_core],
        nets=[
            msgspec.structs.replace(
                n, rx_bps=_round("net_rx_bps", n.rx_bps), tx_bps=_round("net_tx_bps", n.tx_bps)
            )
            for n in m.nets
        ],
        **{f: _round(f, getattr(m, f)) for f in SCALAR_FIELDS if f in Metrics.__struct_fields__},
    )


async def write(path: Path, nodes: int, samples: int, batch: int = 10) -> None:
    db = Database(path)
    await db.open()
    try:
        sims = []
        for i in range(nodes):
            await db.execute(
                "INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (?, ?, ?, 0)",
                (i + 1, f"n{i}", bytes([i])),
            )
            sims.append(SimAgent(cast(Fleet, _Shape(count=nodes)), i, f"n{i}", random.Random(i)))
        store = SampleStore(db, flush_every=0.001)
        runner = asyncio.create_task(store.run())
        try:
            t0 = 1_800_000_000.0
            for k in range(0, samples, batch):
                await asyncio.gather(
                    *(
                        store.store(
                            i + 1,
                            [
                                Sample(seq=j + 1, ts=t0 + j, metrics=as_agent_sends(sim.metrics()))
                                for j in range(k, min(k + batch, samples))
                            ],
                        )
                        for i, sim in enumerate(sims)
                    )
                )
            await store.drain()
        finally:
            runner.cancel()
        # The core's rollup job as of the second after the last sample (an older core without
        # chunks settles only the sample head there).
        await store.rollup(now=t0 + samples)
    finally:
        await db.close()


def _bytes(con: sqlite3.Connection, names: tuple[str, ...]) -> int:
    marks = ",".join("?" * len(names))
    row = con.execute(
        f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({marks})", names
    ).fetchone()
    return int(row[0])


def _nonnull(columns: list[str]) -> str:
    return " + ".join(f"({c} IS NOT NULL)" for c in columns) or "0"


def measure(path: Path) -> dict[str, Any]:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        have = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}

        def columns(table: str) -> list[str]:
            return [r[1] for r in con.execute(f"PRAGMA table_info({table})")]

        def count(sql: str) -> int:
            return int(con.execute(sql).fetchone()[0] or 0)

        values: dict[str, int] = {}
        for t in ("samples_raw", "samples_head"):
            values[t] = count(
                f"SELECT sum({_nonnull([f for f in SCALAR_FIELDS if f in columns(t)])}) FROM {t}"
            )
        values["series_raw"] = count("SELECT count(*) FROM series_raw")
        if "series_incoming" in have:
            values["series_incoming"] = count("SELECT count(*) FROM series_incoming")
        values["series_chunks"] = count("SELECT sum(n) FROM series_chunks") if "series_chunks" in have else 0
        for t in ROLLUP_TABLES:
            if t == "series_1m_chunks":
                values[t] = 3 * count("SELECT sum(n) FROM series_1m_chunks") if t in have else 0
                continue
            aggs = [c for c in columns(t) if c.endswith(("avg", "_min", "_max")) or c in ("min", "max")]
            values[t] = count(f"SELECT sum({_nonnull(aggs)}) FROM {t}")
        tables: dict[str, Any] = {}
        for t in (*RAW_TABLES, *ROLLUP_TABLES, *PER_NODE_TABLES):
            if t not in have:
                continue
            nbytes = _bytes(con, (t, *INDEXES.get(t, ())))
            tables[t] = {"rows": count(f"SELECT count(*) FROM {t}"), "bytes": nbytes}
            if t in values:
                tables[t]["values"] = values[t]
                tables[t]["bytes_per_value"] = round(nbytes / values[t], 2) if values[t] else None
        samples = count("SELECT count(*) FROM samples_raw") + count("SELECT count(*) FROM samples_head")
    finally:
        con.close()

    def total(names: tuple[str, ...]) -> tuple[int, int]:
        return (
            sum(tables[t]["bytes"] for t in names if t in tables),
            sum(values.get(t, 0) for t in names if t in tables),
        )

    per_node = sum(tables[t]["bytes"] for t in PER_NODE_TABLES if t in tables)
    scalar_b, scalar_v = total(("samples_raw", "samples_head"))
    series_b, series_v = total(("series_incoming", "series_raw", "series_chunks"))
    rollup_b, rollup_v = total(ROLLUP_TABLES)
    raw_b, raw_v = scalar_b + series_b + per_node, scalar_v + series_v
    return {
        "tables": tables,
        "samples": samples,
        "bytes_per_sample_raw_row": round(scalar_b / samples, 1),
        "scalar_values": scalar_v,
        "series_points": series_v,
        "series_points_in_head": values["series_raw"] + values.get("series_incoming", 0),
        "bytes_per_scalar_value": round(scalar_b / scalar_v, 2),
        "bytes_per_series_value": round(series_b / series_v, 2) if series_v else None,
        # The headline: raw tables (both tiers of each), the dictionary and node_latest over raw values.
        "bytes_per_value_raw": round(raw_b / raw_v, 2),
        "bytes_per_value_rollups": round(rollup_b / rollup_v, 2) if rollup_v else None,
        "bytes_per_value_all": round((raw_b + rollup_b) / (raw_v + rollup_v), 2),
        "bytes_per_sample_all": round((raw_b + rollup_b) / samples, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--samples", type=int, default=3000, help="per node, one a second")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sm-bench-devstore-") as d:
        path = Path(d) / "s.db"
        asyncio.run(write(path, args.nodes, args.samples))
        print(json.dumps(measure(path), indent=2))


if __name__ == "__main__":
    main()
