"""Bytes per stored sample and per stored value (scalar columns and named series), from SQLite's dbstat.

Writes `--samples` one-second samples of `--nodes` simulated hosts (benchmarks.fleet's random walk:
2-16 per-core CPU values, one disk, two interfaces) through the core's own SampleStore into a fresh
database file, settles the head, checkpoints the WAL, and divides each table's pages (dbstat) by its
rows and by the values they hold. A "value" is one non-NULL scalar column of a raw row or one
series_raw point; the per-sample detail (per-core CPU, the lists) is not counted as values.

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

from benchmarks.fleet import Fleet, SimAgent
from servermanager.common.metrics import SCALAR_FIELDS, Sample
from servermanager.core.store.db import Database
from servermanager.core.store.samples import SampleStore

TABLES = ("samples_raw", "samples_head", "series_raw", "node_latest", "series")


@dataclass
class _Shape:
    """What SimAgent reads of its fleet: no fleet runs here, only its readings are used."""

    interval: float = 1.0
    count: int = 1
    pool: int = 0


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
                                Sample(seq=j + 1, ts=t0 + j, metrics=sim.metrics())
                                for j in range(k, min(k + batch, samples))
                            ],
                        )
                        for i, sim in enumerate(sims)
                    )
                )
            await store.drain()
        finally:
            runner.cancel()
        await store.settle()
    finally:
        await db.close()


def measure(path: Path) -> dict[str, Any]:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        have = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        out: dict[str, Any] = {"tables": {}}
        for t in TABLES:
            if t not in have:
                continue
            rows = con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            size = con.execute("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = ?", (t,)).fetchone()[
                0
            ]
            out["tables"][t] = {"rows": rows, "bytes": size}
        raw = out["tables"]["samples_raw"]
        nonnull = " + ".join(f"({f} IS NOT NULL)" for f in SCALAR_FIELDS)
        scalar_values = con.execute(f"SELECT coalesce(sum({nonnull}), 0) FROM samples_raw").fetchone()[0]
        detail = con.execute("SELECT avg(length(detail)) FROM samples_raw").fetchone()[0]
    finally:
        con.close()
    points = out["tables"].get("series_raw", {"rows": 0, "bytes": 0})
    per_node = (
        out["tables"].get("node_latest", {"bytes": 0})["bytes"]
        + out["tables"].get("series", {"bytes": 0})["bytes"]
    )
    values = scalar_values + points["rows"]
    total = raw["bytes"] + points["bytes"] + per_node
    out.update(
        samples=raw["rows"],
        bytes_per_sample_raw_row=round(raw["bytes"] / raw["rows"], 1),
        detail_blob_bytes_mean=round(detail, 1) if detail else None,
        scalar_values=scalar_values,
        series_points=points["rows"],
        bytes_per_scalar_value=round(raw["bytes"] / scalar_values, 1),
        bytes_per_series_value=round(points["bytes"] / points["rows"], 1) if points["rows"] else None,
        bytes_per_value_all=round(total / values, 1),
        bytes_per_sample_all=round(total / raw["rows"], 1),
    )
    return out


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
