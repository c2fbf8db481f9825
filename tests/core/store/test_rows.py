"""The Sample <-> row codec: a sample read back is the sample stored, detail and all."""

from __future__ import annotations

import pytest

from servermanager.common.metrics import SCALAR_FIELDS, DiskUsage, Sample, scalar
from servermanager.core.store.rows import detail_of, sample_from_row, to_row
from servermanager.core.store.samples import SampleStore
from tests.helpers.core import metrics
from tests.helpers.store import make_samples, write_samples


async def test_round_trip_keeps_detail(store: SampleStore) -> None:
    s = make_samples(1_700_000_000.0, 1, 1.0)
    await write_samples(store, 2, s)
    latest = await store.latest(2)
    assert latest == s[0]


@pytest.mark.parametrize("disks", [[], [(40, 40.0), (90, 90.0)]], ids=["no-disks", "two-disks"])
def test_a_row_holds_every_table_row_in_table_order_derived_ones_included(
    disks: list[tuple[int, float]],
) -> None:
    m = metrics(
        cpu=12.5,
        disks=[
            DiskUsage(mount=f"/d{i}", fstype="ext4", total=100, used=u, pct=p)
            for i, (u, p) in enumerate(disks)
        ],
    )
    row = to_row(7, Sample(seq=3, ts=1_700_000_000.25, metrics=m))
    assert row[:3] == (7, 1_700_000_000_250, 3)
    # No detail blob in the row: the node's newest detail is kept apart (node_latest).
    assert row[3:] == tuple(scalar(m, f) for f in SCALAR_FIELDS)
    assert not any(isinstance(v, bytes) for v in row)
    assert row[3 + SCALAR_FIELDS.index("disk_pct")] == (90.0 if disks else None)
    s = Sample(seq=3, ts=1_700_000_000.25, metrics=m)
    assert sample_from_row(3, row[1], row[3:], detail_of(s)) == s
