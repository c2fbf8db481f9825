"""The Sample <-> row codec: a sample read back is the sample stored, detail and all."""

from __future__ import annotations

from servermanager.core.store.samples import SampleStore
from tests.helpers.store import make_samples, write_samples


async def test_round_trip_keeps_detail(store: SampleStore) -> None:
    s = make_samples(1_700_000_000.0, 1, 1.0)
    await write_samples(store, 2, s)
    latest = await store.latest(2)
    assert latest == s[0]
