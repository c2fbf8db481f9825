"""History query times of one device series over the node view's ranges (6 h raw, 24 h and 7 d of 1m).

Fills a fresh database with `--days` of one-second points of one `dev:` series (a random walk in
bytes, as a mount's used space) straight into the head table, lets the core's own maintenance pass
roll them up (and, where the core has them, settle the raw points into chunks) as of the last
point, prunes raw past the default 48 h, then times SeriesStore.history at the resolution the
history policy (common/history.py) picks for each range, ending at the last point: the median and
the slowest of `--runs` runs each. Only public SampleStore calls are used, so the same script
measures an older core (`PYTHONPATH=<its checkout>`).

Reproduce: .venv/bin/python -m benchmarks.series_history --days 7 --runs 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from servermanager.common.history import RETENTION_1H, RETENTION_1M, RETENTION_RAW, choose_resolution
from servermanager.core.store.db import Database
from servermanager.core.store.samples import SampleStore

RANGES = {"6 h": 6 * 3600, "24 h": 86400, "7 d": 7 * 86400}
NAME, LABELS = "dev:disk_used_bytes", '{"mount":"/"}'


def fill(path: Path, start_ms: int, seconds: int) -> None:
    """One node, one series, a point a second, every minute marked for the rollup job."""
    rng = random.Random(1)
    con = sqlite3.connect(path)
    try:
        con.execute("INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', x'00', 0)")
        con.execute(
            "INSERT INTO series (id, node_id, name, labels, unit) VALUES (1, 1, ?, ?, 'B')", (NAME, LABELS)
        )
        used = 80e9

        def points() -> Any:
            nonlocal used
            for i in range(seconds):
                used += rng.uniform(0, 20_000)
                yield (1, start_ms + 1000 * i, float(int(used)))

        con.executemany("INSERT INTO series_raw (series_id, ts, value) VALUES (?, ?, ?)", points())
        con.executemany(
            "INSERT INTO rollup_dirty (res, node_id, ts) VALUES ('1m', 1, ?)",
            ((start_ms + 60_000 * m,) for m in range(seconds // 60)),
        )
        con.commit()
    finally:
        con.close()


async def measure(path: Path, end: float, runs: int) -> dict[str, Any]:
    db = Database(path)
    await db.open()
    try:
        store = SampleStore(db)
        t = time.perf_counter()
        await store.rollup(now=end + 120)
        upkeep = time.perf_counter() - t
        await store.prune({"raw": RETENTION_RAW, "1m": RETENTION_1M, "1h": RETENTION_1H}, now=end)
        found = await store.series.find(1, NAME, json.loads(LABELS))
        assert found is not None
        out: dict[str, Any] = {"maintenance_pass_s": round(upkeep, 2)}
        for label, span in RANGES.items():
            res = choose_resolution(end - span, end, end)
            times, points = [], 0
            for _ in range(runs):
                t = time.perf_counter()
                got = await store.series.history(found[0], end - span, end, res)
                times.append(time.perf_counter() - t)
                points = len(got["ts"])
            out[label] = {
                "resolution": res,
                "points": points,
                "median_ms": round(statistics.median(times) * 1000, 2),
                "max_ms": round(max(times) * 1000, 2),
            }
        return out
    finally:
        await db.close()


async def migrate(path: Path) -> None:
    db = Database(path)
    await db.open()
    await db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    seconds = int(args.days * 86400)
    start_ms = 1_800_000_000_000
    with tempfile.TemporaryDirectory(prefix="sm-bench-serieshist-") as d:
        path = Path(d) / "s.db"
        asyncio.run(migrate(path))  # the schema, then the points straight in
        fill(path, start_ms, seconds)
        end = start_ms / 1000 + seconds - 1
        print(json.dumps(asyncio.run(measure(path, end, args.runs)), indent=2))


if __name__ == "__main__":
    main()
