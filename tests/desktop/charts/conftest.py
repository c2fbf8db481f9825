"""Chart test helpers: a fixed clock, readings, a synthetic day of rollups, and charts made for qtbot."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
from pytestqt.qtbot import QtBot

from servermanager.common.metrics import DiskUsage, Metrics
from servermanager.common.rest import History
from servermanager.desktop.charts.chart import HistoryChart
from servermanager.desktop.charts.families import DEFAULT_FAMILIES
from servermanager.desktop.charts.panel import ChartPanel

NOW = 1_750_000_000.0
FAMILIES = {f.key: f for f in DEFAULT_FAMILIES}


def make_chart(qtbot: QtBot, key: str = "memory", *, dark: bool = True, show: bool = False) -> HistoryChart:
    chart = HistoryChart(FAMILIES[key], dark=dark)
    qtbot.addWidget(chart)
    if show:
        chart.resize(640, 300)
        chart.show()
        qtbot.waitExposed(chart)
    return chart


def make_panel(qtbot: QtBot, **kwargs: Any) -> ChartPanel:
    panel = ChartPanel(now=lambda: NOW, **kwargs)
    qtbot.addWidget(panel)
    return panel


def reading(cpu: float, mem: float = 40.0, rx: float | None = 1000.0) -> Metrics:
    return Metrics(
        cpu_pct=cpu,
        cpu_per_core=[cpu],
        load1=0.5,
        load5=0.4,
        load15=0.3,
        mem_total=8 << 30,
        mem_used=int((8 << 30) * mem / 100),
        mem_pct=mem,
        swap_total=0,
        swap_used=0,
        swap_pct=0.0,
        uptime=100.0,
        procs=90,
        disks=[DiskUsage("/", "ext4", 100, 61, 61.0), DiskUsage("/data", "ext4", 100, 87, 87.0)],
        net_rx_bps=rx,
        net_tx_bps=None,
    )


def synthetic_history(start: float, end: float, step: float, seed: int = 1) -> History:
    """A REST history answer (1m rollup shape) with daily cycles, noise, a gap and min/max."""
    rng = np.random.default_rng(seed)
    ts = np.arange(start, end, step)
    n = ts.shape[0]
    day = 2 * np.pi * (ts - start) / 86400.0
    series: dict[str, tuple[np.ndarray, float]] = {
        # (avg, spread of min/max around it)
        "cpu_pct": (np.clip(30 + 20 * np.sin(day) + rng.normal(0, 3, n), 0, 100), 12.0),
        "mem_pct": (55 + 8 * (ts - start) / (end - start) + rng.normal(0, 0.3, n), 1.0),
        "swap_pct": (4 + rng.normal(0, 0.1, n), 0.2),
        "disk_pct": (71 + 2 * (ts - start) / (end - start), 0.05),
        "disk_read_bps": (np.abs(2e6 + 1.5e6 * np.sin(3 * day) + rng.normal(0, 2e5, n)), 8e5),
        "disk_write_bps": (np.abs(5e5 + rng.normal(0, 1e5, n)), 3e5),
        "net_rx_bps": (np.abs(8e6 + 6e6 * np.sin(day) + rng.normal(0, 6e5, n)), 3e6),
        "net_tx_bps": (np.abs(1.2e6 + rng.normal(0, 2e5, n)), 6e5),
        "load1": (np.abs(1.2 + np.sin(day) + rng.normal(0, 0.2, n)), 0.6),
        "load5": (np.abs(1.2 + np.sin(day) + rng.normal(0, 0.08, n)), 0.25),
        "load15": (np.abs(1.2 + 0.9 * np.sin(day)), 0.1),
    }
    avg: dict[str, list[float | None]] = {}
    lo: dict[str, list[float | None]] = {}
    hi: dict[str, list[float | None]] = {}
    gap = slice(n // 5, n // 5 + 20)  # the agent was down for 20 minutes
    for f, (v, spread) in series.items():
        d = np.abs(rng.normal(0, spread / 2, n))
        cols = [v.tolist(), np.maximum(v - d, 0).tolist(), (v + d).tolist()]
        for col in cols:
            col[gap] = [None] * (gap.stop - gap.start)
        avg[f], lo[f], hi[f] = cols
    body = {
        "node_id": 1,
        "resolution": "1m",
        "from": start,
        "to": end,
        "fields": list(series),
        "ts": ts.tolist(),
        "avg": avg,
        "min": lo,
        "max": hi,
    }
    return msgspec.convert(body, History)
