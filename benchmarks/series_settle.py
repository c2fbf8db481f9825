"""How long settling named series' head into chunks takes: per point, and per write transaction.

Fills a fresh database's head (`series_raw`) with `--series` series of `--seconds` one-second
points each (random integers up to 250,000, like an interface's rate: the hardest to pack), then
times one SeriesStore.settle_tier pass over all of it, in batches of SETTLE_ROWS head rows at most,
and how long it holds the write lock (the writer, and the agents' acks behind it, wait that long):
a batch is read and packed before the lock is taken, so that is only its writes.

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
from typing import Literal

from servermanager.core.store import series
from servermanager.core.store.db import Database

START_MS = 1_800_000_000_000


class TimedLock(asyncio.Lock):
    """The database's write lock, noting how long each hold lasts."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[float] = []
        self._since = 0.0

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self._since = time.perf_counter()
        return True

    def release(self) -> None:
        self.held.append(time.perf_counter() - self._since)
        super().release()


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
    lock = db._write_lock = TimedLock()
    try:
        store = series.SeriesStore(db)
        t = time.perf_counter()
        moved = await store.settle_tier(series.RAW, START_MS + 1000 * seconds + 2 * series.SETTLE_GRACE_MS)
        took = time.perf_counter() - t
    finally:
        await db.close()
    held = lock.held
    print(
        f"settled {moved} points in {took:.2f} s: {took / moved * 1e6:.2f} us a point; "
        f"{len(held)} transactions of at most {series.SETTLE_ROWS} rows held the write lock "
        f"{sum(held):.2f} s in all, {sum(held) / len(held) * 1000:.0f} ms each on average, "
        f"{max(held) * 1000:.0f} ms at most"
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
