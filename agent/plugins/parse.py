"""Plugin output as series points: `name value` lines and the Prometheus text exposition format.

A small reader of the text format's sample lines (`name{label="v",...} value [timestamp]`), rather
than prometheus_client: the agent needs only this, and the library's import would cost RSS on
every agent. Whatever line it cannot read is counted, never fatal.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from servermanager.common.series import MAX_LABEL_VALUE, MAX_LABELS, MAX_SERIES_NAME, SeriesPoint

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LINE = re.compile(rf"^({_NAME})\s*(?:\{{(.*)\}})?\s+(\S+)(?:\s+(-?\d+))?\s*$")
_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_UNESCAPE = re.compile(r"\\(.)")


@dataclass
class Parsed:
    points: list[SeriesPoint] = field(default_factory=list)
    bad: int = 0  # lines that are neither a sample, a comment nor blank
    first_bad: str | None = None  # the first of them, cut, for the error text


def _labels(body: str) -> dict[str, str] | None:
    out: dict[str, str] = {}
    pos = 0
    body = body.strip()
    while pos < len(body):
        m = _PAIR.match(body, pos)
        if m is None:
            return None
        value = _UNESCAPE.sub(lambda g: "\n" if g.group(1) == "n" else g.group(1), m.group(2))
        if len(value) > MAX_LABEL_VALUE:
            return None
        out[m.group(1)] = value
        pos = m.end()
    return out if len(out) <= MAX_LABELS else None


def _value(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None  # NaN and ±Inf have no place in a stored series


def parse(text: str, *, allow: frozenset[str] | None = None, limit: int = 500) -> Parsed:
    """Every sample line of `text` as a point (at most `limit`); `allow`: the names kept (None: all)."""
    out = Parsed()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        labels = _labels(m.group(2) or "") if m else None
        value = _value(m.group(3)) if m else None
        if m is None or labels is None or value is None or len(m.group(1)) > MAX_SERIES_NAME:
            out.bad += 1
            if out.first_bad is None:
                out.first_bad = line[:80]
            continue
        name = m.group(1)
        if allow is not None and name not in allow:
            continue
        if len(out.points) < limit:
            out.points.append(SeriesPoint(name=name, value=value, labels=labels))
    return out
