"""What a host reading is: the wire structs of a sample and the one table of scalar metrics.

Every scalar metric is one row of FIELDS: its name, unit, decimals, label, chart family, kind and
help text. The database columns, rollup rounding, the agent's rounding, the history API's field
list, the desktop's chart families, fleet columns and meters, and the Prometheus HELP/TYPE lines
all derive from it. A row whose name is not already a field of `Metrics` becomes an optional
float field of the wire struct, so adding a scalar metric is one row here plus its collector.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgspec


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

FIELDS_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
SCALAR_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS)
FIELD_DECIMALS: dict[str, int] = {f.name: f.decimals for f in FIELDS}


def family_fields(key: str) -> tuple[Field, ...]:
    """The rows a chart family draws, in table order."""
    return tuple(f for f in FIELDS if f.family == key)


# Wire structs are plain trees of values that never refer back to themselves, so they opt out of
# the cycle collector (gc=False): thousands arrive every second at a busy core, and tracking them
# made each young-generation collection walk every sample in flight.


class DiskUsage(msgspec.Struct, frozen=True, gc=False):
    mount: str
    fstype: str
    total: int  # bytes
    used: int  # bytes
    pct: float


class NetIface(msgspec.Struct, frozen=True, gc=False):
    name: str
    rx_total: int  # bytes since boot
    tx_total: int
    rx_bps: float | None = None  # bytes/s; None until a second reading exists
    tx_bps: float | None = None


class Temperature(msgspec.Struct, frozen=True, gc=False):
    sensor: str
    label: str
    current: float  # degrees Celsius


class Battery(msgspec.Struct, frozen=True, gc=False):
    pct: float
    plugged: bool | None = None
    secs_left: float | None = None


class MetricsBase(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One reading of a host, as the built-in collectors fill it. Rates are None when there is no
    previous reading to diff. `Metrics` is this plus any table row added since (see FIELDS)."""

    cpu_pct: float
    cpu_per_core: list[float]
    load1: float
    load5: float
    load15: float
    mem_total: int
    mem_used: int
    mem_pct: float
    swap_total: int
    swap_used: int
    swap_pct: float
    uptime: float  # seconds
    procs: int
    disks: list[DiskUsage] = []
    disk_read_bps: float | None = None
    disk_write_bps: float | None = None
    disk_read_iops: float | None = None
    disk_write_iops: float | None = None
    nets: list[NetIface] = []
    net_rx_bps: float | None = None
    net_tx_bps: float | None = None
    temps: list[Temperature] = []
    battery: Battery | None = None

    @property
    def disk_pct(self) -> float | None:
        return scalar(self, "disk_pct")


# Rows computed from the detail fields instead of sent: each maps a reading to its value.
DERIVED: dict[str, Callable[[Any], float | None]] = {
    # The fullest mount's usage: what an operator worries about first.
    "disk_pct": lambda m: max((d.pct for d in m.disks), default=None),
}


def _with_table_fields(base: type[MetricsBase]) -> type[MetricsBase]:
    """`base` plus an optional float field for every table row it lacks and nothing derives."""
    extra = [
        (f.name, float | None, None)
        for f in FIELDS
        if f.name not in base.__struct_fields__ and f.name not in DERIVED
    ]
    return cast(
        "type[MetricsBase]",
        msgspec.defstruct(
            "Metrics", extra, bases=(base,), frozen=True, omit_defaults=True, gc=False, module=__name__
        ),
    )


if TYPE_CHECKING:
    # The type checker sees the built-in fields; a row added since is read with scalar().
    Metrics = MetricsBase
else:
    Metrics = _with_table_fields(MetricsBase)


def scalar(m: MetricsBase, name: str) -> float | None:
    """One table row's value in a reading, sent or derived."""
    derive = DERIVED.get(name)
    return derive(m) if derive is not None else cast("float | None", getattr(m, name))


def round_scalars(values: dict[str, Any]) -> dict[str, Any]:
    """Each scalar in `values` to its row's decimals (whole-unit rows as int); others untouched."""
    out = dict(values)
    for name, v in values.items():
        f = FIELDS_BY_NAME.get(name)
        if f is not None and isinstance(v, float):
            out[name] = round(v) if f.decimals == 0 else round(v, f.decimals)
    return out


class Sample(msgspec.Struct, frozen=True, gc=False):
    seq: int  # per-node, strictly increasing, survives agent restarts
    ts: float  # unix seconds, agent clock
    metrics: Metrics


class HostFacts(msgspec.Struct, frozen=True, gc=False):
    hostname: str
    os: str
    os_version: str
    kernel: str
    arch: str
    cpu_model: str
    cpu_count: int
    mem_total: int
    agent_version: str
    boot_time: float | None = None
