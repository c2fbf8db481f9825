"""container_samples: lists stored with their sample (and not in its detail blob), pruned by their own
retention, gone with their node."""

from __future__ import annotations

import asyncio
import time

from servermanager.common.metrics import ContainerInfo, Sample
from servermanager.core.store.samples import SampleStore
from tests.helpers.core import metrics


def sample(seq: int, ts: float, containers: list[ContainerInfo] | None) -> Sample:
    return Sample(seq=seq, ts=ts, metrics=metrics(containers=containers))


async def test_stored_apart_pruned_and_deleted(store: SampleStore) -> None:
    runner = asyncio.create_task(store.run())
    try:
        now = time.time()
        old, new = now - 8 * 86400, now - 60
        web = [ContainerInfo(name="web", image="nginx", state="running", cpu_pct=12.5, mem_used=1 << 20)]
        await store.store(1, [sample(1, old, web), sample(2, new, web), sample(3, new + 1, None)])
        await store.store(2, [sample(1, new, [])])
        latest = await store.containers.at(1)
        assert latest is not None and latest[1] == web and abs(latest[0] - new) < 1e-3
        back = await store.latest(1)
        assert back is not None and back.seq == 3 and back.metrics.containers is None
        stats = await store.containers.stats()
        assert stats["rows"] == 3 and 0 < stats["bytes"] < 3 * 40  # array-like msgpack: a few bytes each
        years = 10 * 365 * 86400.0
        assert await store.prune({"raw": years, "1m": years, "1h": years, "containers": 7 * 86400}, now) == 1
        assert await store.containers.at(1, old + 1) is None
        await store.delete_node(1)
        assert await store.containers.at(1) is None
        empty = await store.containers.at(2)
        assert empty is not None and empty[1] == []  # "the engine runs none" is kept as such
    finally:
        runner.cancel()
