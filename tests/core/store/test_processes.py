"""proc_samples: the top processes stored with their sample, read by moment, pruned by their own retention."""

from __future__ import annotations

import asyncio
import time

import msgspec

from servermanager.common.metrics import ProcInfo, Sample
from servermanager.core.store.samples import SampleStore
from tests.helpers.core import metrics


def procs(tag: str, n: int = 3) -> list[ProcInfo]:
    return [
        ProcInfo(
            pid=100 + i,
            name=f"{tag}{i}",
            cpu_pct=10.0 * i,
            rss=1 << 20,
            user="www-data",
            cmd=f"/usr/bin/{tag}",
        )
        for i in range(n)
    ]


def sample(seq: int, ts: float, top: list[ProcInfo]) -> Sample:
    return Sample(seq=seq, ts=ts, metrics=metrics(procs_top=top))


async def test_snapshot_at_or_before_a_moment(store: SampleStore) -> None:
    runner = asyncio.create_task(store.run())
    try:
        t0 = time.time() - 100
        await store.store(
            1, [sample(1, t0, procs("a")), sample(2, t0 + 10, procs("b")), sample(3, t0 + 20, [])]
        )
        assert await store.procs.at(1, t0 - 1) is None  # nothing before the first
        assert await store.procs.at(1, t0) == (round(t0 * 1000) / 1000, procs("a"))
        at = await store.procs.at(1, t0 + 15)
        assert at is not None and at[1] == procs("b") and abs(at[0] - (t0 + 10)) < 1e-3
        # A sample without a list stores no row: the latest list is the one before it.
        latest = await store.procs.at(1)
        assert latest is not None and latest[1] == procs("b")
        assert await store.procs.at(2) is None  # another node's are its own
        # The metrics' detail blob does not carry them a second time.
        back = await store.latest(1)
        assert back is not None and back.seq == 3 and back.metrics.procs_top == []
        # A replay (an agent resending after a lost ack) is ignored like its sample.
        await store.store(1, [sample(2, t0 + 10, procs("c"))])
        again = await store.procs.at(1, t0 + 15)
        assert again is not None and again[1] == procs("b")
    finally:
        runner.cancel()


async def test_retention_prunes_old_snapshots_only(store: SampleStore) -> None:
    runner = asyncio.create_task(store.run())
    try:
        now = time.time()
        await store.store(1, [sample(1, now - 8 * 86400, procs("old")), sample(2, now - 3600, procs("new"))])
        keep = {"raw": 30 * 86400.0, "1m": 60 * 86400.0, "1h": 365 * 86400.0, "processes": 7 * 86400.0}
        assert await store.prune(keep, now=now) == 1
        assert await store.procs.at(1, now - 8 * 86400 + 1) is None
        kept = await store.procs.at(1)
        assert kept is not None and kept[1] == procs("new")
        # Without a "processes" key (older callers), nothing of theirs goes.
        await store.prune({"raw": 1.0, "1m": 1.0, "1h": 1.0}, now=now)
        assert await store.procs.at(1) is not None
        await store.delete_node(1)
        assert await store.procs.at(1) is None
    finally:
        runner.cancel()


async def test_bytes_per_snapshot_are_small(store: SampleStore) -> None:
    # 25 processes (a typical union of the three top-10 lists), command lines of 60 characters.
    top = [
        ProcInfo(
            pid=1000 + i,
            name=f"worker-{i}",
            cpu_pct=12.3,
            rss=123_456_789,
            user="postgres",
            read_bps=4096,
            write_bps=81920,
            cmd="/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main",
        )
        for i in range(25)
    ]
    runner = asyncio.create_task(store.run())
    try:
        await store.store(1, [sample(1, time.time(), top)])
        stats = await store.procs.stats()
        assert stats["rows"] == 1
        # Arrays without key names: the command lines (1,650 bytes here) are most of it, and the
        # rest is about 45 bytes a process, where JSON with keys takes about 170.
        as_json = len(msgspec.json.encode([msgspec.structs.asdict(p) for p in top]))
        assert stats["bytes"] < 1650 + 25 * 50 < as_json, (stats, as_json)
    finally:
        runner.cancel()
