"""The one table of scalar metrics: for each, its name, unit, decimals, labels, chart family, kind and help.

Pure data and nothing else, so that everything derived from it (common/metrics.py and what imports
that) is built from whatever this table holds when they are first imported.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Unit(enum.StrEnum):
    """What a value measures; the desktop formats, and Prometheus names, by it."""

    PERCENT = "percent"  # 0..100
    BYTES = "bytes"
    BYTES_PER_S = "bytes_per_s"
    PER_S = "per_s"  # operations per second
    SECONDS = "seconds"
    COUNT = "count"
    PLAIN = "plain"  # a unitless number, such as the load average


class Kind(enum.StrEnum):
    """How a value comes about: read as it is (gauge) or derived from a counter (rate)."""

    GAUGE = "gauge"
    RATE = "rate"  # per second between two readings of a counter; None until a second reading exists


@dataclass(frozen=True)
class Family:
    """One history chart: the metrics of one family share a unit and are drawn together."""

    key: str
    title: str


@dataclass(frozen=True)
class Field:
    """One scalar metric, stored per sample and rolled up (avg/min/max)."""

    name: str
    unit: Unit
    # Decimal places kept by rollups and the agent: what the source measures, and no more.
    # psutil gives percentages to 0.1 and the kernel load to 0.01; bytes and seconds are whole; a
    # minute's average of a rate or a count keeps hundredths. The fifteen digits of a raw average
    # are noise, and made every history answer twice the size it needs to be.
    decimals: int
    label: str  # what a person calls it on its own: a meter's title, an API field description
    help: str  # one sentence: Prometheus HELP and the API documentation
    kind: Kind = Kind.GAUGE
    family: str = ""  # the key of its chart in FAMILIES; "" for no chart
    legend: str = ""  # its name inside its chart (defaults to label)
    column: str = ""  # the fleet table's column header; "" for no column
    meter: bool = False  # shown as a meter in the node view's "Now" box

    @property
    def legend_text(self) -> str:
        return self.legend or self.label


# Display order of the charts in a node view.
FAMILIES: tuple[Family, ...] = (
    Family("cpu", "CPU"),
    Family("memory", "Memory"),
    Family("disk", "Disk usage"),
    Family("disk_io", "Disk I/O"),
    Family("network", "Network"),
    Family("load", "Load average"),
)

# Column order of the database and of history answers: append new rows at the end.
FIELDS: tuple[Field, ...] = (
    Field("cpu_pct", Unit.PERCENT, 2, "CPU", "CPU busy, all cores, percent",
          family="cpu", column="CPU", meter=True),
    Field("load1", Unit.PLAIN, 2, "Load", "Load average over 1 minute",
          family="load", legend="1 min", column="Load", meter=True),
    Field("load5", Unit.PLAIN, 2, "Load 5 min", "Load average over 5 minutes", family="load", legend="5 min"),
    Field("load15", Unit.PLAIN, 2, "Load 15 min", "Load average over 15 minutes",
          family="load", legend="15 min"),
    Field("mem_pct", Unit.PERCENT, 2, "Memory", "Memory in use, percent",
          family="memory", legend="RAM", column="Memory", meter=True),
    Field("mem_used", Unit.BYTES, 0, "Memory used", "Memory in use, bytes"),
    Field("swap_pct", Unit.PERCENT, 2, "Swap", "Swap in use, percent", family="memory", meter=True),
    Field("disk_pct", Unit.PERCENT, 2, "Disk", "Usage of the fullest mounted filesystem, percent",
          family="disk", legend="Fullest mount", column="Disk"),
    Field("disk_read_bps", Unit.BYTES_PER_S, 0, "Disk read", "Bytes read from disks per second",
          Kind.RATE, family="disk_io", legend="Read", meter=True),
    Field("disk_write_bps", Unit.BYTES_PER_S, 0, "Disk write", "Bytes written to disks per second",
          Kind.RATE, family="disk_io", legend="Write", meter=True),
    Field("disk_read_iops", Unit.PER_S, 2, "Disk reads", "Disk read operations per second", Kind.RATE),
    Field("disk_write_iops", Unit.PER_S, 2, "Disk writes", "Disk write operations per second", Kind.RATE),
    Field("net_rx_bps", Unit.BYTES_PER_S, 0, "Network in", "Bytes received per second, all interfaces",
          Kind.RATE, family="network", legend="Receive", column="Net in", meter=True),
    Field("net_tx_bps", Unit.BYTES_PER_S, 0, "Network out", "Bytes sent per second, all interfaces",
          Kind.RATE, family="network", legend="Transmit", column="Net out", meter=True),
    Field("procs", Unit.COUNT, 1, "Processes", "Number of processes", meter=True),
    Field("uptime", Unit.SECONDS, 0, "Uptime", "Seconds since the host booted", column="Uptime"),
)  # fmt: skip
