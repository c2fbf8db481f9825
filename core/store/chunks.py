"""A time chunk of one series' points as one compact blob: delta-encoded timestamps and values, byte-shuffled, zlib.

Settled raw points of a named series are kept a chunk per series and CHUNK_MS window, and its 1m
rollup rows (cnt, avg, min, max: four columns) likewise (core/store/series.py), because a narrow
(series_id, ts, value) row costs ~24 bytes of pages per value. In a chunk the timestamps are deltas (a steady interval repeats one delta) and the values
are either integer deltas at the fewest decimals that give every value back exactly, or the XOR
of each float's bits with the previous one's; either way most of the high bytes are zero. The
bytes are then shuffled (every first byte, then every second byte, ...) so that zlib sees those
zeros as long runs. Everything per point runs in C (array, itertools, zlib) but the exactness
check of the decimal form.
"""

from __future__ import annotations

import itertools
import operator
import struct
import zlib
from array import array
from collections.abc import Sequence

# The window a chunk covers, in ms: settled points of one series and window share a chunk, keyed
# by the window's start. Ten minutes of 1 s points compress to well under a page.
CHUNK_MS = 600_000

_VERSION = 1
# version, count, columns, first ts; then a form byte per column: its decimals, or _FLOAT for
# XORed float bits
_HEADER = struct.Struct("<BIBq")
_FLOAT = 255
_PLAIN = 0x80  # with decimals: the scaled integers themselves, not their deltas
_MAX_DECIMALS = 4
_EXACT = float(1 << 52)  # scaled values must stay integers a float holds exactly


class ChunkError(ValueError):
    """A blob that is not a chunk this core can read (damaged, or from a newer core)."""


def _shuffle(raw: bytes) -> bytes:
    return b"".join(raw[i::8] for i in range(8))


def _unshuffle(data: bytes, n: int) -> bytes:
    out = bytearray(8 * n)
    for i in range(8):
        out[i::8] = data[i * n : (i + 1) * n]
    return bytes(out)


def _words(typecode: str, data: memoryview) -> array[int]:
    # array(typecode, memoryview) would read the view's bytes as numbers, one each.
    out = array(typecode)
    out.frombytes(data)
    return out


def _deltas(xs: Sequence[int]) -> array[int]:
    return array("q", itertools.chain((xs[0],), map(operator.sub, xs[1:], xs)))


def _decimals(values: Sequence[float]) -> int | None:
    """The fewest decimals (up to _MAX_DECIMALS) at which every value is an exact scaled integer."""
    for d in range(_MAX_DECIMALS + 1):
        scale = 10.0**d
        try:
            if all(abs(v * scale) < _EXACT and round(v * scale) / scale == v for v in values):
                return d
        except (OverflowError, ValueError):  # inf, nan
            return None
    return None


def _column(values: Sequence[float]) -> tuple[int, bytes]:
    """One column's form byte and its 8-byte words, unshuffled."""
    d = _decimals(values)
    if d is None:
        bits = array("Q", array("d", values).tobytes())
        return _FLOAT, array("Q", itertools.chain((bits[0],), map(operator.xor, bits[1:], bits))).tobytes()
    # A slow-moving value (bytes used) packs best as deltas, noise (a rate) as itself: both are
    # tried (a quick compression of each, shuffled), and the smaller kept.
    scaled = [round(v * 10.0**d) for v in values]
    deltas, plain = _deltas(scaled).tobytes(), array("q", scaled).tobytes()
    if len(zlib.compress(_shuffle(plain), 1)) < len(zlib.compress(_shuffle(deltas), 1)):
        return d | _PLAIN, plain
    return d, deltas


def encode(ts: Sequence[int], *columns: Sequence[float]) -> bytes:
    """The chunk of points: ts in ms (strictly increasing) and one or more columns of values as
    stored (a value per timestamp in each; a rollup row's cnt, avg, min and max are four)."""
    n = len(ts)
    if n == 0 or not columns or any(len(c) != n for c in columns):
        raise ValueError("a chunk holds one or more points, a value per timestamp in each column")
    forms, parts = zip(*(_column(c) for c in columns), strict=True)
    # Shuffled as one: one unshuffle gives every column back.
    body = _shuffle(_deltas(ts).tobytes() + b"".join(parts))
    return _HEADER.pack(_VERSION, n, len(columns), ts[0]) + bytes(forms) + zlib.compress(body, 6)


def decode_columns(blob: bytes, only: Sequence[int] | None = None) -> tuple[list[int], list[list[float]]]:
    """The points of a chunk: ts (ms) and each column's values, in time order; with `only`, just
    those columns (by index, in that order)."""
    try:
        version, n, ncols, _ = _HEADER.unpack_from(blob)
        if version != _VERSION:
            raise ChunkError(f"chunk format {version} is not one this core reads")
        forms = blob[_HEADER.size : _HEADER.size + ncols]
        body = zlib.decompress(blob[_HEADER.size + ncols :])
    except (struct.error, zlib.error) as exc:
        raise ChunkError(f"damaged chunk: {exc}") from exc
    if len(forms) != ncols or len(body) != 8 * n * (1 + ncols):
        raise ChunkError(f"damaged chunk: {len(body)} bytes for {n} points of {ncols} column(s)")
    words = memoryview(_unshuffle(body, n * (1 + ncols)))
    ts = list(itertools.accumulate(_words("q", words[: 8 * n])))
    columns = []
    for i in range(ncols) if only is None else only:
        form, packed = forms[i], words[8 * n * (i + 1) : 8 * n * (i + 2)]
        if form == _FLOAT:
            bits = array("Q", itertools.accumulate(_words("Q", packed), operator.xor))
            columns.append(array("d", bits.tobytes()).tolist())
            continue
        ints = _words("q", packed)
        whole = ints if form & _PLAIN else itertools.accumulate(ints)
        # In C (array's conversion, map over a bound method): a week of 1m history is 40,000
        # values to give back; the same division as encode's check, so exactly the same floats.
        if form & ~_PLAIN == 0:
            columns.append(array("d", whole).tolist())
        else:
            columns.append(list(map((10.0 ** (form & ~_PLAIN)).__rtruediv__, whole)))
    return ts, columns


def decode(blob: bytes) -> tuple[list[int], list[float]]:
    """The points of a one-column chunk: ts (ms) and values, in time order."""
    ts, columns = decode_columns(blob)
    if len(columns) != 1:
        raise ChunkError(f"a chunk of {len(columns)} columns where one was expected")
    return ts, columns[0]


def window(ts: int) -> int:
    """The start (ms) of the chunk window holding `ts`."""
    return ts // CHUNK_MS * CHUNK_MS
