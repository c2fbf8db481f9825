"""Per-item values an alert rule can name: a device's (`dev:`), a container's (`container:`), a GPU's (`gpu:`).

A sample carries lists (mounts, interfaces, sensors, containers, GPUs); each row of ITEM_METRICS
reads one value of every item of a list, labelled by the one label that names the item. The `dev:`
names are those the core stores the device series under (core/store/devices.py), so a rule names
the series its chart shows; tests/common/test_itemmetrics.py keeps the two in step.

A selector's labels must match an item's; a label left out matches every item, and when several
items match, a rule judges the worst of them (the highest for `>`, the lowest for `<`): an alert is
one per rule and node, whichever of its items breaches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from servermanager.common.series import DEVICE_PREFIX, SelectorError, parse_selector

__all__ = [
    "CONTAINER_PREFIX",
    "GPU_PREFIX",
    "ITEM_METRICS",
    "ITEM_METRICS_BY_NAME",
    "ITEM_PREFIXES",
    "ItemMetric",
    "item_metric",
    "item_reader",
]

CONTAINER_PREFIX = "container:"
GPU_PREFIX = "gpu:"
ITEM_PREFIXES = (DEVICE_PREFIX, CONTAINER_PREFIX, GPU_PREFIX)

# The values of one item an ItemMetric reads (None: the item has no such value in this sample).
Value = Callable[[Any], float | None]


@dataclass(frozen=True, slots=True)
class ItemKind:
    """A list a sample carries and the label that names its items."""

    label: str  # mount, iface, sensor, name, index
    # The list; None when the sample carries no fresh one (containers and GPUs come only when
    # their background poll has a new one).
    items: Callable[[Any], Sequence[Any] | None]
    key: Callable[[Any], str]  # an item's label value


@dataclass(frozen=True, slots=True)
class ItemMetric:
    """One value of each item of a list a sample carries."""

    name: str  # with its prefix: "dev:disk_pct"
    kind: ItemKind
    unit: str
    help: str
    value: Value
    # The value of an item the selector names that is missing from a fresh list (a removed
    # container is not running); None: a missing item has no value.
    absent: float | None = None

    @property
    def label(self) -> str:
        return self.kind.label

    def read(self, m: Any) -> list[tuple[str, float | None]] | None:
        """Every item's (label value, value), or None without a fresh list."""
        items = self.kind.items(m)
        if items is None:
            return None
        key, value = self.kind.key, self.value
        return [(key(i), value(i)) for i in items]


def _sensor(t: Any) -> str:
    # As core/store/devices.py names it: the chip ("coretemp") and the reading ("Package id 0").
    return f"{t.sensor}/{t.label}" if t.label else str(t.sensor)


def _pct(used: float | None, total: float | None) -> float | None:
    return None if used is None or not total else round(100.0 * used / total, 2)


def _hardware_gpus(m: Any) -> Sequence[Any] | None:
    hw = m.hardware
    return None if hw is None else hw.gpus


def _num(name: str) -> Value:
    get = attrgetter(name)

    def value(item: Any) -> float | None:
        v = get(item)
        return None if v is None else float(v)

    return value


MOUNTS = ItemKind("mount", attrgetter("disks"), attrgetter("mount"))
DISKS = ItemKind("disk", attrgetter("disk_io"), attrgetter("name"))
IFACES = ItemKind("iface", attrgetter("nets"), attrgetter("name"))
SENSORS = ItemKind("sensor", attrgetter("temps"), _sensor)
CONTAINERS = ItemKind("name", attrgetter("containers"), attrgetter("name"))
GPUS = ItemKind("index", _hardware_gpus, lambda g: str(g.index))

ITEM_METRICS: tuple[ItemMetric, ...] = (
    ItemMetric(f"{DEVICE_PREFIX}disk_used_bytes", MOUNTS, "B", "bytes used on a mount", _num("used")),
    ItemMetric(f"{DEVICE_PREFIX}disk_pct", MOUNTS, "%", "percent used of a mount", attrgetter("pct")),
    ItemMetric(
        f"{DEVICE_PREFIX}disk_read_bps",
        DISKS,
        "B/s",
        "bytes read per second from a disk",
        attrgetter("read_bps"),
    ),
    ItemMetric(
        f"{DEVICE_PREFIX}disk_write_bps",
        DISKS,
        "B/s",
        "bytes written per second to a disk",
        attrgetter("write_bps"),
    ),
    ItemMetric(
        f"{DEVICE_PREFIX}disk_read_iops",
        DISKS,
        "/s",
        "read operations per second of a disk",
        attrgetter("read_iops"),
    ),
    ItemMetric(
        f"{DEVICE_PREFIX}disk_write_iops",
        DISKS,
        "/s",
        "write operations per second of a disk",
        attrgetter("write_iops"),
    ),
    ItemMetric(
        f"{DEVICE_PREFIX}net_rx_bps",
        IFACES,
        "B/s",
        "bytes received per second on an interface",
        attrgetter("rx_bps"),
    ),
    ItemMetric(
        f"{DEVICE_PREFIX}net_tx_bps",
        IFACES,
        "B/s",
        "bytes sent per second on an interface",
        attrgetter("tx_bps"),
    ),
    ItemMetric(
        f"{DEVICE_PREFIX}temp_celsius", SENSORS, "°C", "a temperature sensor's reading", attrgetter("current")
    ),
    ItemMetric(
        f"{CONTAINER_PREFIX}running",
        CONTAINERS,
        "",
        "1 while the container runs, else 0 (also when it is gone from the engine's list)",
        lambda c: 1.0 if c.state == "running" else 0.0,
        absent=0.0,
    ),
    ItemMetric(
        f"{CONTAINER_PREFIX}healthy",
        CONTAINERS,
        "",
        "0 while the container's health check says unhealthy, else 1 (no value without a check)",
        lambda c: None if c.health is None else 0.0 if c.health == "unhealthy" else 1.0,
    ),
    ItemMetric(
        f"{CONTAINER_PREFIX}cpu_pct",
        CONTAINERS,
        "%",
        "the container's CPU, percent of one CPU",
        _num("cpu_pct"),
    ),
    ItemMetric(
        f"{CONTAINER_PREFIX}mem_used", CONTAINERS, "B", "the container's memory in use", _num("mem_used")
    ),
    ItemMetric(
        f"{CONTAINER_PREFIX}mem_pct",
        CONTAINERS,
        "%",
        "the container's memory, percent of its limit (of the host's memory without one)",
        lambda c: _pct(c.mem_used, c.mem_limit),
    ),
    ItemMetric(
        f"{CONTAINER_PREFIX}net_rx_bps",
        CONTAINERS,
        "B/s",
        "bytes the container receives per second",
        _num("net_rx_bps"),
    ),
    ItemMetric(
        f"{CONTAINER_PREFIX}net_tx_bps",
        CONTAINERS,
        "B/s",
        "bytes the container sends per second",
        _num("net_tx_bps"),
    ),
    ItemMetric(
        f"{CONTAINER_PREFIX}blk_read_bps",
        CONTAINERS,
        "B/s",
        "bytes the container reads from block devices per second",
        _num("blk_read_bps"),
    ),
    ItemMetric(
        f"{CONTAINER_PREFIX}blk_write_bps",
        CONTAINERS,
        "B/s",
        "bytes the container writes to block devices per second",
        _num("blk_write_bps"),
    ),
    ItemMetric(f"{GPU_PREFIX}util_pct", GPUS, "%", "the GPU's utilization", _num("util_pct")),
    ItemMetric(f"{GPU_PREFIX}mem_used", GPUS, "B", "the GPU's memory in use", _num("mem_used")),
    ItemMetric(
        f"{GPU_PREFIX}mem_pct",
        GPUS,
        "%",
        "the GPU's memory in use, percent of its total",
        lambda g: _pct(g.mem_used, g.mem_total),
    ),
    ItemMetric(f"{GPU_PREFIX}temp_celsius", GPUS, "°C", "the GPU's temperature", _num("temp")),
    ItemMetric(f"{GPU_PREFIX}power_w", GPUS, "W", "the GPU's power draw", _num("power_w")),
)
ITEM_METRICS_BY_NAME = {im.name: im for im in ITEM_METRICS}


def item_metric(metric: str) -> tuple[ItemMetric, dict[str, str]]:
    """`dev:disk_pct{mount="/"}` as its row and the labels to match; raises SelectorError saying
    what is wrong (an unknown name lists the known ones of its prefix)."""
    name, labels = parse_selector(metric)
    im = ITEM_METRICS_BY_NAME.get(name)
    if im is None:
        prefix = next((p for p in ITEM_PREFIXES if name.startswith(p)), "")
        known = [i.name for i in ITEM_METRICS if i.name.startswith(prefix)]
        raise SelectorError(
            f"unknown metric {name!r}; {prefix or 'per-item metrics'} are: {', '.join(known)}"
        )
    extra = sorted(set(labels) - {im.label})
    if extra:
        raise SelectorError(f"{name} takes only the label {im.label!r} (the item), not {', '.join(extra)}")
    return im, labels


def item_reader(metric: str, above: bool) -> Callable[[Any], float | None]:
    """A reader of a per-item metric in a reading: the worst value of the items it matches (the
    highest when the rule fires above, else the lowest), None when none has a value. Per sample,
    one pass over the list; a named item's value alone is computed."""
    im, labels = item_metric(metric)
    want = labels.get(im.label)
    items_of, key, value, absent = im.kind.items, im.kind.key, im.value, im.absent
    pick = max if above else min

    if want is not None:

        def one(m: Any) -> float | None:
            items = items_of(m)
            if items is None:
                return None
            for item in items:
                if key(item) == want:
                    return value(item)
            return absent

        return one

    def worst(m: Any) -> float | None:
        items = items_of(m)
        if not items:
            return None
        found: float | None = None
        for item in items:
            v = value(item)
            if v is not None:
                found = v if found is None else pick(found, v)
        return found

    return worst
