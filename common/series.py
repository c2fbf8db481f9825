"""Named series: values outside the metric table (custom metrics, service checks), carried in a sample."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

import msgspec

__all__ = [
    "DEVICE_PREFIX",
    "LABEL_RE",
    "MAX_LABELS",
    "MAX_PLUGINS",
    "MAX_PLUGIN_ERROR",
    "MAX_SERIES_NAME",
    "MAX_SERIES_POINTS",
    "NAME_RE",
    "SERIES_PREFIX",
    "PluginStatus",
    "SelectorError",
    "SeriesPoint",
    "format_selector",
    "labels_key",
    "parse_selector",
    "series_reader",
]

# Prometheus's metric and label name rules, so scraped names pass through unchanged.
NAME_PATTERN = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
LABEL_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
NAME_RE = re.compile(NAME_PATTERN)
LABEL_RE = re.compile(LABEL_PATTERN)
MAX_SERIES_NAME = 128
MAX_LABELS = 8  # labels per point: a series is (node, name, labels), so labels multiply series
MAX_LABEL_VALUE = 128
MAX_SERIES_POINTS = 500  # points per sample; an agent's plugins are cut to this
MAX_PLUGINS = 64  # [[custom]] + [[scrape]] + [[check]] entries of one agent
MAX_PLUGIN_ERROR = 300  # characters of a plugin's error text

SeriesName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SERIES_NAME, pattern=NAME_PATTERN)]
LabelName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=LABEL_PATTERN)]
LabelValue = Annotated[str, msgspec.Meta(max_length=MAX_LABEL_VALUE)]


class SeriesPoint(msgspec.Struct, frozen=True, gc=False, omit_defaults=True, array_like=True):
    """One value of a named series in a sample: an array on the wire (no key names)."""

    name: SeriesName
    value: float
    labels: Annotated[dict[LabelName, LabelValue], msgspec.Meta(max_length=MAX_LABELS)] = {}
    unit: Annotated[str, msgspec.Meta(max_length=16)] | None = None


class PluginStatus(msgspec.Struct, frozen=True, gc=False):
    """How one of the agent's [[custom]], [[scrape]] or [[check]] entries last ran.

    `ok` False with `error` saying why (a timeout, too much output, a refused connection); `bad_lines`
    counts the output lines that could not be read on its last run.
    """

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    kind: str  # "custom", "scrape" or "check"
    ok: bool = True
    error: Annotated[str, msgspec.Meta(max_length=MAX_PLUGIN_ERROR)] | None = None
    bad_lines: Annotated[int, msgspec.Meta(ge=0)] = 0
    last_run: float | None = None  # unix seconds of the last finished run


# Names of the series the core derives from a sample's disks, interfaces and sensors
# (core/store/devices.py): reserved, an agent's own series with such a name are not stored.
DEVICE_PREFIX = "dev:"

# An alert rule's metric naming a series: "series:check_up{check=\"web\"}" (exact label set).
SERIES_PREFIX = "series:"


def series_reader(selector: str) -> Callable[[Any], float | None]:
    """A reader of one series' value in a reading (None when absent): what the alert engine calls
    per sample. Costs one truth test for a reading without named series."""
    name, labels = parse_selector(selector)

    def read(m: Any) -> float | None:
        points = m.series
        if not points:
            return None
        for p in points:
            if p.name == name and p.labels == labels:
                return float(p.value)
        return None

    return read


def labels_key(labels: dict[str, str]) -> str:
    """The canonical text of a label set (sorted keys, compact JSON): how storage keys a series."""
    if not labels:
        return "{}"
    return msgspec.json.encode(dict(sorted(labels.items()))).decode()


class SelectorError(ValueError):
    """A series selector that cannot be read; the message says where."""


_SELECTOR_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$", re.S)
_LABEL_PAIR_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_selector(text: str) -> tuple[str, dict[str, str]]:
    """`name` or `name{k="v",...}` as a name and its exact label set; raises SelectorError."""
    m = _SELECTOR_RE.match(text.strip())
    if m is None:
        raise SelectorError(f'series selector {text!r} is not name or name{{label="value",...}}')
    name, body = m.group(1), m.group(2)
    if len(name) > MAX_SERIES_NAME:
        raise SelectorError(f"series name is over {MAX_SERIES_NAME} characters")
    labels: dict[str, str] = {}
    pos = 0
    body = (body or "").strip()
    while pos < len(body):
        lm = _LABEL_PAIR_RE.match(body, pos)
        if lm is None:
            raise SelectorError(f"series selector {text!r}: cannot read labels from {body[pos:]!r}")
        value = lm.group(2).replace('\\"', '"').replace("\\\\", "\\")
        labels[lm.group(1)] = value
        pos = lm.end()
    if len(labels) > MAX_LABELS:
        raise SelectorError(f"series selector {text!r} has over {MAX_LABELS} labels")
    return name, labels


def format_selector(name: str, labels: dict[str, str]) -> str:
    """The canonical selector text (labels sorted): `check_up{check="web"}`."""
    if not labels:
        return name
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return f"{name}{{{inner}}}"
