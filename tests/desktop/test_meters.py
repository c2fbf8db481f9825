"""The node view's meters come from the metric table: today's meters and details, one more for one more row."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from servermanager.common import metrics as mt
from servermanager.desktop.meters import METER_COLUMNS, MeterBox, Reading, meter_rows, reading
from tests.desktop.conftest import WITH_GPU, with_gpu
from tests.helpers.core import metrics

# The meters as they were written by hand before the table existed, in their grid order.
WRITTEN = [
    "CPU",
    "Memory",
    "Swap",
    "Load",
    "Network in",
    "Network out",
    "Disk read",
    "Disk write",
    "Processes",
]


def test_the_table_gives_the_meters_as_they_were() -> None:
    assert [f.label for f in meter_rows()] == WRITTEN


def test_readings_carry_their_details() -> None:
    m = metrics(
        cpu=41.6,
        cpu_per_core=[1.0] * 4,
        load1=2.0,
        load5=1.5,
        load15=1.25,
        mem_pct=62.5,
        mem_used=5 << 30,
        mem_total=8 << 30,
        net_rx_bps=1.5 * 2**20,
        procs=180,
    )
    by = {f.name: f for f in mt.FIELDS}
    assert reading(by["cpu_pct"], m) == Reading(41.6, "42%", "4 cores")
    assert reading(by["mem_pct"], m) == Reading(62.5, "62%", "5.00 / 8.00 GiB")
    assert reading(by["swap_pct"], m) == Reading(None, "no swap")
    # The load bar is the 1-minute load per core.
    assert reading(by["load1"], m) == Reading(50.0, "2.00", "1.50 · 1.25")
    assert reading(by["net_rx_bps"], m) == Reading(None, "1.50 MiB/s")
    assert reading(by["procs"], m) == Reading(None, "180")
    swapping = metrics(swap_total=4 << 30, swap_used=1 << 30, swap_pct=25.0)
    assert reading(by["swap_pct"], swapping) == Reading(25.0, "25%", "1.00 GiB")
    assert reading(by["disk_read_bps"], metrics(disk_read_bps=None)).text == "\N{EN DASH}"


def test_one_more_row_is_one_more_meter_before_the_mounts(qtbot: QtBot) -> None:
    box = MeterBox(WITH_GPU)
    qtbot.addWidget(box)
    assert list(box.meters)[-1] == "gpu_pct" and len(box.meters) == len(WRITTEN) + 1
    box.show_reading(with_gpu(metrics(), 77.0), dim=False)
    gpu = box.meters["gpu_pct"]
    assert (gpu.label, gpu.pct, gpu.text) == ("GPU", 77.0, "77%")
    # The mounts follow in the same grid, after the table's meters.
    mount = box.disk_meters["/"]
    index = box.grid.indexOf(mount)
    assert box.grid.getItemPosition(index)[:2] == divmod(len(WRITTEN) + 1, box.columns)
    box.show_missing("no data yet")
    assert gpu.text == "no data yet" and gpu.dim


def test_meters_take_fewer_columns_when_their_details_would_not_fit(qtbot: QtBot) -> None:
    box = MeterBox()
    qtbot.addWidget(box)
    box.show_reading(metrics(mem_used=812 << 20, mem_total=int(23.5 * 2**30)), dim=False)
    box.show()
    box.resize(1200, 200)
    assert box.columns == METER_COLUMNS
    box.resize(420, 300)
    assert box.columns < METER_COLUMNS
    qtbot.waitUntil(lambda: box.meters["mem_pct"].width() < 200, timeout=2000)
    need, room = box.meters["mem_pct"].head_room()
    assert need <= room
    box.resize(1200, 200)
    assert box.columns == METER_COLUMNS  # and back when there is room again
