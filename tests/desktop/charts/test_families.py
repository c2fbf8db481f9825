"""Chart families come from the metric table: today's charts, and one more series for one more row."""

from __future__ import annotations

import numpy as np
import pytest
from pytestqt.qtbot import QtBot

from servermanager.common.metrics import FIELDS, Field, Kind, Sample, Unit
from servermanager.desktop.charts.families import DEFAULT_FAMILIES, ChartFamily, chart_families
from servermanager.desktop.charts.panel import ChartPanel
from tests.desktop.charts.conftest import NOW, reading
from tests.desktop.conftest import WITH_GPU, with_gpu

# The charts as they were written by hand before the table existed: titles, order, legends, units.
WRITTEN = (
    ChartFamily("cpu", "CPU", ("cpu_pct",), ("CPU",), Unit.PERCENT),
    ChartFamily("memory", "Memory", ("mem_pct", "swap_pct"), ("RAM", "Swap"), Unit.PERCENT),
    ChartFamily("disk", "Disk usage", ("disk_pct",), ("Fullest mount",), Unit.PERCENT),
    ChartFamily(
        "disk_io", "Disk I/O", ("disk_read_bps", "disk_write_bps"), ("Read", "Write"), Unit.BYTES_PER_S
    ),
    ChartFamily(
        "network", "Network", ("net_rx_bps", "net_tx_bps"), ("Receive", "Transmit"), Unit.BYTES_PER_S
    ),
    ChartFamily(
        "load", "Load average", ("load1", "load5", "load15"), ("1 min", "5 min", "15 min"), Unit.PLAIN
    ),
)


def test_the_table_gives_the_charts_as_they_were() -> None:
    assert DEFAULT_FAMILIES == WRITTEN


def test_one_more_row_is_one_more_series(qtbot: QtBot) -> None:
    families = {f.key: f for f in chart_families(WITH_GPU)}
    assert families["cpu"] == ChartFamily("cpu", "CPU", ("cpu_pct", "gpu_pct"), ("CPU", "GPU"), Unit.PERCENT)
    assert [f.key for f in families.values()] == [f.key for f in WRITTEN]

    panel = ChartPanel(families=tuple(families.values()), now=lambda: NOW)
    qtbot.addWidget(panel)
    cpu = panel.charts["cpu"]
    assert set(cpu.curves) == {"cpu_pct", "gpu_pct"}
    assert panel.append_sample(Sample(seq=1, ts=NOW, metrics=with_gpu(reading(12.5), 77.0)))
    _, ys = cpu.data()
    np.testing.assert_array_equal(ys["gpu_pct"], [77.0])
    assert "GPU: 77.0%" in cpu.show_crosshair(NOW)


def test_a_family_of_rows_without_a_chart_or_of_mixed_units_is_refused() -> None:
    # A row of a family FAMILIES does not list draws nowhere; a family must share one unit.
    lonely = Field("x", Unit.COUNT, 0, "X", "x", family="nowhere")
    assert chart_families((*FIELDS, lonely)) == WRITTEN
    mixed = Field("fans", Unit.PER_S, 0, "Fans", "fan speed", Kind.GAUGE, family="cpu")
    with pytest.raises(ValueError, match="'cpu' mixes units"):
        chart_families((*FIELDS, mixed))
