"""The node view's meter details fit beside their labels at the window sizes people use."""

from __future__ import annotations

import pytest

from servermanager.common import metrics as mt
from servermanager.desktop.context import AppContext
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, enrolled, sign_in, until

GIB = 1 << 30


@pytest.mark.parametrize("size", [(1024, 640), (1280, 760)])
def test_memory_and_disk_details_are_not_clipped(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run, size: tuple[int, int]
) -> None:
    # The README's screenshot read "...MiB / 23.5 GiB" and "... GiB / 1.0 TiB": the worst cases.
    agent = run(
        enrolled(
            cores.c,
            "db-1",
            mem_total=int(23.5 * GIB),
            mem_used=812 << 20,
            mem_pct=3.4,
            disks=[
                mt.DiskUsage(mount="/", fstype="ext4", total=1 << 40, used=612 * GIB, pct=59.8),
                mt.DiskUsage(mount="/home", fstype="ext4", total=931 * GIB, used=97 * GIB, pct=10.4),
            ],
        )
    )
    run(sign_in(ctx, cores.c))
    window.resize(*size)
    window.show()
    assert agent.node_id is not None
    view = window.open_node(agent.node_id)
    run(until(lambda: "/" in view.now.disk_meters, "disk meters"))
    meters = [view.meters["mem_pct"], *view.now.disk_meters.values()]
    run(until(lambda: all(m.detail for m in meters), "details shown"))
    for meter in meters:
        need, room = meter.head_room()
        assert need <= room, f"{meter.label}: {meter.detail!r} needs {need}px, has {room}px"
