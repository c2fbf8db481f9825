"""A Sample as a table row and back: a column per metric; the rest of the reading (the detail) as a msgpack blob kept per node, not per row."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from servermanager.common.metrics import DERIVED, SCALAR_FIELDS, Metrics, Sample

# Fields of Metrics that are not scalar columns travel in the detail blob; the top processes and
# the containers have their own tables (core/store/processes.py, containers.py), with their own
# retention, and the hardware reading is kept with the node. Named series are stored apart too
# (core/store/series.py), and plugin statuses kept live only.
_APART = ("procs_top", "containers", "hardware", "series", "plugins")
_DETAIL_FIELDS = tuple(f for f in Metrics.__struct_fields__ if f not in SCALAR_FIELDS and f not in _APART)
# Columns read back into the struct; a derived row's column is computed again from the detail.
_COLUMN_FIELDS = tuple(f for f in SCALAR_FIELDS if f in Metrics.__struct_fields__)
_msgpack = msgspec.msgpack.Encoder()
_unpack = msgspec.msgpack.Decoder(dict[str, Any])

# A raw row, as samples_head and samples_raw hold it (see to_row). Their `detail` column is no
# longer written: the detail was 72 % of a row and read only for the node's latest sample at core
# start, so the writer keeps the newest one per node in node_latest instead (writer.py); its
# per-device values are stored as device series (devices.py). Rows of older cores keep theirs
# until pruned.
COLUMNS = f"node_id, ts, seq, {', '.join(SCALAR_FIELDS)}"
# What sample_from_row takes, in order.
SAMPLE_COLUMNS = f"seq, ts, {', '.join(SCALAR_FIELDS)}"

# attrgetter fetches many attributes in one C call: this runs for every sample the core receives.
# The rows a reading sends are fetched so; a DERIVED row is computed (as scalar() does) and put in
# its place in table order.
_sent = operator.attrgetter(*(f for f in SCALAR_FIELDS if f not in DERIVED))
_derived = tuple((i, DERIVED[f]) for i, f in enumerate(SCALAR_FIELDS) if f in DERIVED)
_details = operator.attrgetter(*_DETAIL_FIELDS)


def _scalars(m: Metrics) -> list[Any]:
    values = list(_sent(m))
    for i, derive in _derived:
        values.insert(i, derive(m))
    return values


def to_row(node_id: int, s: Sample) -> tuple[Any, ...]:
    """The row of COLUMNS for one sample of the node."""
    return (node_id, round(s.ts * 1000), s.seq, *_scalars(s.metrics))


def detail_of(s: Sample) -> bytes:
    """The sample's detail (the non-scalar fields kept with the node), as node_latest holds it."""
    return _msgpack.encode(dict(zip(_DETAIL_FIELDS, _details(s.metrics), strict=True)))


def sample_from_row(seq: int, ts_ms: int, values: Sequence[Any], detail: bytes | None) -> Sample:
    """The sample of one row of SAMPLE_COLUMNS (`values` are its metric columns) with a detail
    blob of detail_of(), if there is one (else its lists are empty)."""
    data = dict(zip(SCALAR_FIELDS, values, strict=True))
    metrics = {f: data[f] for f in _COLUMN_FIELDS}
    if detail is not None:
        metrics.update(_unpack.decode(detail))
    # REAL columns hand back floats for int fields; strict=False converts integral floats back.
    return Sample(seq=seq, ts=ts_ms / 1000, metrics=msgspec.convert(metrics, Metrics, strict=False))


class Scope(NamedTuple):
    """The nodes lo..hi (ids, inclusive), and rows before `before` (ms): what one slice of a rollup
    needs moved out of the heads (samples_head, series_incoming) before it reads them."""

    lo: int
    hi: int
    before: int

    @property
    def params(self) -> tuple[int, int, int]:
        """(before, lo, hi): the parameters of "ts < ? AND <node> BETWEEN ? AND ?"."""
        return self.before, self.lo, self.hi
