"""How long settling named series' head into chunks takes: per point, and per write transaction.

Fills a fresh database's head (`series_raw`) with `--series` series of `--seconds` one-second
points each (random integers up to 250,000, like an interface's rate: the hardest to pack), then
times one SeriesStore.settle_tier pass over all of it. The transactions are SETTLE_ROWS head rows
each at most, and the pass is nothing but them, so their mean length is the pass's time divided by
their count: how long the writer (and the agents' acks behind it) waits at a time.

Reproduce: .venv/bin/python -m benchmarks.series_settle --series 100 --seconds 3600
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from servermanager.core.store import series
from servermanager.core.store.db import Database

START_MS = 1_800_000_000_000


async def measure(path: Path, count: int, seconds: int) -> None:
    db = Database(path)
    await db.open()
    await db.close()
    rng = random.Random(1)
    con = sqlite3.connect(path)
    try:
        con.execute("INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', x'00', 0)")
        for sid in range(1, count + 1):
            con.execute(
                "INSERT INTO series (id, node_id, name, labels) VALUES (?, 1, ?, '{}')", (sid, f"s{sid}")
            )
            con.executemany(
                "INSERT INTO series_raw (series_id, ts, value) VALUES (?, ?, ?)",
                ((sid, START_MS + 1000 * i, float(rng.randint(0, 250_000))) for i in range(seconds)),
            )
        con.commit()
    finally:
        con.close()
    db = Database(path)
    await db.open()
    try:
        store = series.SeriesStore(db)
        t = time.perf_counter()
        moved = await store.settle_tier(series.RAW, START_MS + 1000 * seconds + 2 * series.SETTLE_GRACE_MS)
        took = time.perf_counter() - t
    finally:
        await db.close()
    txns = -(-moved // series.SETTLE_ROWS)
    print(
        f"settled {moved} points in {took:.2f} s: {took / moved * 1e6:.2f} us a point; "
        f"{txns} transactions of at most {series.SETTLE_ROWS} rows, {took / txns * 1000:.0f} ms each on average"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=3600)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sm-bench-settle-") as d:
        asyncio.run(measure(Path(d) / "s.db", args.series, args.seconds))


if __name__ == "__main__":
    main()
