"""What a host reading is: the wire structs of a sample, and lookups derived from the metric table.

Every scalar metric is one row of FIELDS (common/metric_table.py): its name, unit, decimals, label,
chart family, kind and help text. The database columns, rollup rounding, the agent's rounding, the
history API's field list, the desktop's chart families, fleet columns and meters, and the
Prometheus HELP/TYPE lines all derive from it. A row whose name is not already a field of
`MetricsBase` becomes an optional float field of the wire struct `Metrics`, so adding a scalar
metric is one row in the table plus its collector in the agent.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, cast

import msgspec

from servermanager.common.metric_table import FAMILIES, FIELDS, Family, Field, Kind, Unit
from servermanager.common.series import MAX_PLUGINS, MAX_SERIES_POINTS, PluginStatus, SeriesPoint

__all__ = [
    "DERIVED",
    "FAMILIES",
    "FIELDS",
    "FIELDS_BY_NAME",
    "FIELD_DECIMALS",
    "SCALAR_FIELDS",
    "Battery",
    "ContainerInfo",
    "DiskHealth",
    "DiskIO",
    "DiskUsage",
    "Family",
    "Field",
    "GpuInfo",
    "Hardware",
    "HostFacts",
    "Kind",
    "Metrics",
    "MetricsBase",
    "NetIface",
    "ProcInfo",
    "Sample",
    "Temperature",
    "Unit",
    "check_table",
    "family_fields",
    "metrics_struct",
    "round_scalars",
    "scalar",
]


def check_table(fields: tuple[Field, ...], families: tuple[Family, ...]) -> None:
    """Refuse a table that the rest cannot derive from; a mistake in a new row fails at import."""
    keys = {fam.key for fam in families}
    names: set[str] = set()
    for f in fields:
        if not f.name.isidentifier() or not f.name.islower():
            raise ValueError(f"metric {f.name!r}: names are lower-case identifiers (columns, JSON keys)")
        if f.name in names:
            raise ValueError(f"metric {f.name!r} is in the table twice")
        names.add(f.name)
        if f.decimals < 0:
            raise ValueError(f"metric {f.name!r}: decimals must be 0 or more")
        if f.family and f.family not in keys:
            raise ValueError(f"metric {f.name!r}: no chart family {f.family!r} in FAMILIES")
    for fam in families:
        units = {f.unit for f in fields if f.family == fam.key}
        if len(units) > 1:
            raise ValueError(f"chart family {fam.key!r} mixes units {sorted(units)}: one axis, one unit")


check_table(FIELDS, FAMILIES)
FIELDS_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
SCALAR_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS)
FIELD_DECIMALS: dict[str, int] = {f.name: f.decimals for f in FIELDS}


def family_fields(key: str) -> tuple[Field, ...]:
    """The rows a chart family draws, in table order."""
    return tuple(f for f in FIELDS if f.family == key)


# Wire structs are plain trees of values that never refer back to themselves, so they opt out of
# the cycle collector (gc=False): thousands arrive every second at a busy core, and tracking them
# made each young-generation collection walk every sample in flight.


# A count or a byte total as storage holds it (SQLite integers are 64-bit signed): a frame with a
# value past that is refused as invalid, alone, instead of failing the commit it would share.
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class DiskUsage(msgspec.Struct, frozen=True, gc=False):
    mount: str
    fstype: str
    total: Count  # bytes
    used: Count  # bytes
    pct: float


# Block devices a sample carries I/O rates for (the agent keeps the first by name past it).
MAX_DISK_IO = 32


class DiskIO(msgspec.Struct, frozen=True, gc=False, omit_defaults=True, array_like=True):
    """One block device's I/O rates (a whole disk, not a partition): an array on the wire, like
    ProcInfo. Rates are None on a device's first reading."""

    name: Annotated[str, msgspec.Meta(max_length=64)]  # the kernel's name: sda, nvme0n1, dm-0
    read_bps: Annotated[float, msgspec.Meta(ge=0)] | None = None  # bytes/s
    write_bps: Annotated[float, msgspec.Meta(ge=0)] | None = None
    read_iops: Annotated[float, msgspec.Meta(ge=0)] | None = None  # operations/s
    write_iops: Annotated[float, msgspec.Meta(ge=0)] | None = None


class NetIface(msgspec.Struct, frozen=True, gc=False):
    name: str
    rx_total: Count  # bytes since boot
    tx_total: Count
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


# Bounds of the top-processes list a sample carries: an agent's own config may ask for less.
MAX_PROCS_TOP_N = 20  # processes in each ranking (by CPU, by memory, by disk I/O)
MAX_PROCS_TOP = 3 * MAX_PROCS_TOP_N  # the three rankings' union, at most
MAX_PROC_NAME = 64  # characters
MAX_PROC_USER = 32
MAX_PROC_CMD = 200  # a command line is cut to this, "…" included


class ProcInfo(msgspec.Struct, frozen=True, gc=False, omit_defaults=True, array_like=True):
    """One process of a sample's top list. An array on the wire and in storage (no key names),
    so a sample's 10-30 processes cost a few hundred bytes, not a few kilobytes."""

    pid: Annotated[int, msgspec.Meta(ge=0, le=2**32)]
    name: Annotated[str, msgspec.Meta(max_length=MAX_PROC_NAME)]
    # Percent of the whole machine (all CPUs together), like cpu_pct; None on a process's first sight.
    cpu_pct: Annotated[float, msgspec.Meta(ge=0, le=100)] | None = None
    rss: Count = 0  # resident memory, bytes
    user: Annotated[str, msgspec.Meta(max_length=MAX_PROC_USER)] | None = None
    read_bps: Annotated[float, msgspec.Meta(ge=0)] | None = None  # None where the OS does not tell
    write_bps: Annotated[float, msgspec.Meta(ge=0)] | None = None
    cmd: Annotated[str, msgspec.Meta(max_length=MAX_PROC_CMD)] | None = None  # None: hidden or unreadable


# Bounds of the container list a sample carries ([containers] max_containers may ask for less).
MAX_CONTAINERS = 500
MAX_CONTAINER_NAME = 128  # characters; Docker's names are shorter, a longer one is cut
MAX_CONTAINER_IMAGE = 200


class ContainerInfo(msgspec.Struct, frozen=True, gc=False, omit_defaults=True, array_like=True):
    """One container of a Docker or Podman engine, as its API reports it. An array on the wire and
    in storage, like ProcInfo. Rates and CPU are None on a container's first sight, and for a
    container that is not running."""

    name: Annotated[str, msgspec.Meta(max_length=MAX_CONTAINER_NAME)]
    image: Annotated[str, msgspec.Meta(max_length=MAX_CONTAINER_IMAGE)] = ""
    state: Annotated[str, msgspec.Meta(max_length=32)] = ""  # running, exited, paused, restarting...
    health: Annotated[str, msgspec.Meta(max_length=32)] | None = None  # healthy...; None: no check
    # Percent of one CPU, as `docker stats` shows it: 250 is two and a half CPUs busy.
    cpu_pct: Annotated[float, msgspec.Meta(ge=0)] | None = None
    mem_used: Count | None = None  # bytes, page cache left out (the Docker CLI's figure)
    mem_limit: Count | None = None  # bytes; the host's memory where the container has no limit
    net_rx_bps: Annotated[float, msgspec.Meta(ge=0)] | None = None  # bytes/s, all its interfaces
    net_tx_bps: Annotated[float, msgspec.Meta(ge=0)] | None = None
    blk_read_bps: Annotated[float, msgspec.Meta(ge=0)] | None = None  # bytes/s
    blk_write_bps: Annotated[float, msgspec.Meta(ge=0)] | None = None


class GpuInfo(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One NVIDIA GPU as NVML reports it."""

    index: int
    name: str
    util_pct: float | None = None
    mem_used: Count | None = None
    mem_total: Count | None = None
    temp: float | None = None  # degrees Celsius
    power_w: float | None = None


class DiskHealth(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One disk's SMART verdict as `smartctl --json -a` reports it; `note` says why a value is missing."""

    device: str
    model: str = ""
    passed: bool | None = None  # the overall self-assessment; None: the disk has no SMART
    temp: float | None = None
    power_on_hours: int | None = None
    note: str | None = None


class Hardware(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """GPUs and disk health, sent now and then (not with every sample); a note says why a part is
    empty ("no NVIDIA driver", "smartctl not installed") so the node view can say so."""

    gpus: list[GpuInfo] = []
    gpu_note: str | None = None
    smart: list[DiskHealth] = []
    smart_note: str | None = None


class MetricsBase(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One reading of a host, as the built-in collectors fill it. Rates are None when there is no
    previous reading to diff. `Metrics` is this plus any table row added since (see FIELDS)."""

    cpu_pct: float
    cpu_per_core: list[float]
    load1: float
    load5: float
    load15: float
    mem_total: Count
    mem_used: Count
    mem_pct: float
    swap_total: Count
    swap_used: Count
    swap_pct: float
    uptime: float  # seconds
    procs: Count
    disks: list[DiskUsage] = []
    disk_read_bps: float | None = None
    disk_write_bps: float | None = None
    disk_read_iops: float | None = None
    disk_write_iops: float | None = None
    # The same rates per block device, for the device series (core/store/devices.py).
    disk_io: Annotated[list[DiskIO], msgspec.Meta(max_length=MAX_DISK_IO)] = []
    nets: list[NetIface] = []
    net_rx_bps: float | None = None
    net_tx_bps: float | None = None
    temps: list[Temperature] = []
    battery: Battery | None = None
    # The top processes by CPU, memory and disk I/O (deduplicated); stored apart from the metrics
    # (core/store/processes.py) and left out of the live sample events.
    procs_top: Annotated[list[ProcInfo], msgspec.Meta(max_length=MAX_PROCS_TOP)] = []
    # The engine's containers, when the agent's [containers] poll has a fresh list (not every
    # sample); stored apart (core/store/containers.py) and left out of the live events too.
    containers: Annotated[list[ContainerInfo], msgspec.Meta(max_length=MAX_CONTAINERS)] | None = None
    # GPUs and SMART, when the agent's [hardware] check has a fresh reading; kept by the core
    # with the node (NodeInfo.hardware), not in the sample tables.
    hardware: Hardware | None = None
    # Named series of the agent's own [[custom]], [[scrape]] and [[check]] entries (common/series.py),
    # stored apart (core/store/series.py), and how each entry last ran (kept live, not stored).
    series: Annotated[list[SeriesPoint], msgspec.Meta(max_length=MAX_SERIES_POINTS)] = []
    plugins: Annotated[list[PluginStatus], msgspec.Meta(max_length=MAX_PLUGINS)] = []

    @property
    def disk_pct(self) -> float | None:
        return scalar(self, "disk_pct")


# Rows computed from the detail fields instead of sent: each maps a reading to its value.
DERIVED: dict[str, Callable[[Any], float | None]] = {
    # The fullest mount's usage: what an operator worries about first.
    "disk_pct": lambda m: max((d.pct for d in m.disks), default=None),
}


def metrics_struct(fields: Iterable[Field]) -> type[MetricsBase]:
    """The wire struct of a table: MetricsBase plus an optional float field for every row that is
    neither one of its fields nor derived (an agent without that row's collector omits it)."""
    extra = [
        (f.name, float | None, None)
        for f in fields
        if f.name not in MetricsBase.__struct_fields__ and f.name not in DERIVED
    ]
    return cast(
        "type[MetricsBase]",
        msgspec.defstruct(
            "Metrics", extra, bases=(MetricsBase,), frozen=True, omit_defaults=True, gc=False, module=__name__
        ),
    )


if TYPE_CHECKING:
    # The type checker sees the built-in fields; a row added since is read with scalar().
    Metrics = MetricsBase
else:
    Metrics = metrics_struct(FIELDS)


def scalar(m: MetricsBase, name: str) -> float | None:
    """One table row's value in a reading, sent or derived."""
    derive = DERIVED.get(name)
    return derive(m) if derive is not None else cast("float | None", getattr(m, name))


def scalar_getter(name: str) -> Callable[[MetricsBase], float | None]:
    """What `scalar(m, name)` does, looked up once: for loops that read one row of many readings."""
    return DERIVED.get(name) or operator.attrgetter(name)


def round_scalars(values: dict[str, Any]) -> dict[str, Any]:
    """Each scalar in `values` to its row's decimals (whole-unit rows as int); others untouched."""
    out = dict(values)
    for name, v in values.items():
        f = FIELDS_BY_NAME.get(name)
        if f is not None and isinstance(v, float):
            out[name] = round(v) if f.decimals == 0 else round(v, f.decimals)
    return out


class Sample(msgspec.Struct, frozen=True, gc=False):
    seq: Annotated[
        int, msgspec.Meta(ge=1, le=2**63 - 1)
    ]  # per-node, strictly increasing, survives agent restarts
    ts: float  # unix seconds, agent clock
    metrics: Metrics


class HostFacts(msgspec.Struct, frozen=True, gc=False):
    hostname: str
    os: str
    os_version: str
    kernel: str
    arch: str
    cpu_model: str
    cpu_count: Count
    mem_total: Count
    agent_version: str
    boot_time: float | None = None
