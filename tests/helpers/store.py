"""Samples for SampleStore tests, and writing them through its commit loop."""

from __future__ import annotations

import asyncio

from servermanager.common.metrics import Sample
from servermanager.core.store.samples import SampleStore
from tests.helpers.core import metrics


def make_samples(
    start_ts: float, n: int, step: float, cpu: list[float] | None = None, seq0: int = 1
) -> list[Sample]:
    return [
        Sample(seq=seq0 + i, ts=start_ts + i * step, metrics=metrics(cpu=cpu[i] if cpu else float(i)))
        for i in range(n)
    ]


async def write_samples(store: SampleStore, node: int, samples: list[Sample]) -> None:
    """Store the samples with the commit loop running, as the core does."""
    runner = asyncio.create_task(store.run())
    try:
        await store.store(node, samples)
    finally:
        runner.cancel()
