"""Every value the desktop shows as text, formatted once: metrics by their table unit, sizes, durations and ages."""

from __future__ import annotations

import math
import time

from servermanager.common.itemmetrics import ITEM_METRICS_BY_NAME
from servermanager.common.metrics import FIELDS_BY_NAME, Unit

NA = "\N{EN DASH}"  # shown where a value is unknown (no sample yet, no rate yet, a gap in history)

BINARY_PREFIXES = ("B", "KiB", "MiB", "GiB", "TiB")


def binary_scale(v: float) -> tuple[float, str]:
    """The power of 1024 and its prefix that put |v| in [1, 1024) (or past it, in TiB)."""
    v = abs(v)
    i = 0
    while v >= 1024.0 and i < len(BINARY_PREFIXES) - 1:
        v /= 1024.0
        i += 1
    return 1024.0**i, BINARY_PREFIXES[i]


def fmt_bytes(n: float | None) -> str:
    """Sizes in binary units (what `free -h` and `df -h` use), three significant digits:
    512 B, 1.50 KiB, 12.3 MiB, 123 GiB."""
    if n is None or not math.isfinite(n):
        return NA
    scale, prefix = binary_scale(n)
    x = n / scale
    digits = 0 if prefix == "B" or abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:.{digits}f} {prefix}"


def fmt_rate(bps: float | None) -> str:
    """Bytes per second, as sizes are written: 1.50 MiB/s."""
    return NA if bps is None or not math.isfinite(bps) else fmt_bytes(bps) + "/s"


def fmt_of(used: float, total: float) -> str:
    """'11.7 / 16.0 GiB', '0.79 / 23.5 GiB': a part of a whole in the whole's unit, said once, so
    it fits beside a meter's label ('812 MiB / 23.5 GiB' did not)."""
    if not (math.isfinite(used) and math.isfinite(total)):
        return NA
    scale, prefix = binary_scale(total)
    b = fmt_bytes(total)
    x = used / scale
    digits = 0 if prefix == "B" or abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:.{digits}f} / {b}"


def fmt_pct(value: float | None, decimals: int = 0) -> str:
    """'42%' in tables and meters; a chart's crosshair reads a point closer, with one decimal."""
    return NA if value is None or not math.isfinite(value) else f"{value:.{decimals}f}%"


def fmt_plain(v: float | None) -> str:
    """A unitless number such as the load average: two decimals, as the kernel keeps it."""
    return NA if v is None or not math.isfinite(v) else f"{v:.2f}"


def fmt_count(v: float | None) -> str:
    """A count: whole when it is (a reading), one decimal when it is not (an average of readings)."""
    if v is None or not math.isfinite(v):
        return NA
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def fmt_per_s(v: float | None) -> str:
    """Operations per second, three significant digits: 3.50/s, 120/s."""
    if v is None or not math.isfinite(v):
        return NA
    digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return f"{v:.{digits}f}/s"


def fmt_duration(seconds: float | None) -> str:
    """The two largest units of a duration: 3d 4h, 2h 5m, 7m 12s, 9s."""
    if seconds is None or not math.isfinite(seconds):
        return NA
    s = int(max(0, seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def fmt_time(ts: float | None, *, seconds: bool = False) -> str:
    """A local date and time, 2025-06-15 17:46; with seconds where events are told apart by them."""
    if ts is None:
        return NA
    return time.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M", time.localtime(ts))


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    """How long ago a time was: 'just now', '5m 2s ago'; 'never' for no time at all."""
    if ts is None:
        return "never"
    age = (now or time.time()) - ts
    if age < 5:
        return "just now"
    return fmt_duration(age) + " ago"


def format_value(unit: Unit, v: float | None, *, precise: bool = False) -> str:
    """A metric value as text, by its table row's unit; precise is for reading one point of a
    chart, where a percentage keeps a decimal that a table cell has no room for."""
    if v is None or not math.isfinite(v):
        return NA
    match unit:
        case Unit.PERCENT:
            return fmt_pct(v, 1 if precise else 0)
        case Unit.BYTES:
            return fmt_bytes(v)
        case Unit.BYTES_PER_S:
            return fmt_rate(v)
        case Unit.PER_S:
            return fmt_per_s(v)
        case Unit.SECONDS:
            return fmt_duration(v)
        case Unit.COUNT:
            return fmt_count(v)
    return fmt_plain(v)


# A per-item metric's unit (common/itemmetrics.py) as the table's, where the table has it.
_ITEM_UNITS = {"%": Unit.PERCENT, "B": Unit.BYTES, "B/s": Unit.BYTES_PER_S}


def format_metric(metric: str, v: float | None) -> str:
    """A value of an alert rule's metric: a scalar by its table row's unit, a device's, container's
    or GPU's by its own (`dev:disk_pct{mount="/"}` as a percentage), anything else as a number."""
    if v is None or not math.isfinite(v):
        return NA
    field = FIELDS_BY_NAME.get(metric)
    if field is not None:
        return format_value(field.unit, v, precise=True)
    item = ITEM_METRICS_BY_NAME.get(metric.split("{", 1)[0])
    if item is None:
        return f"{v:g}"
    unit = _ITEM_UNITS.get(item.unit)
    return format_value(unit, v, precise=True) if unit is not None else f"{v:g} {item.unit}".rstrip()
