"""Batch frames in the wire contract: batch_bytes and decode_all agree, and refuse nesting and bad frames."""

from __future__ import annotations

import msgspec
import pytest

from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from tests.helpers.core import metrics

_dec = p.decoder(p.CoreToClient)


def _sample_event(node_id: int, seq: int) -> p.SampleEvent:
    return p.SampleEvent(node_id=node_id, sample=mt.Sample(seq=seq, ts=1000.0 + seq, metrics=metrics()))


def test_batch_round_trips_through_batch_bytes_and_decode_all() -> None:
    frames: list[p.Frame] = [
        _sample_event(1, 1),
        p.NodeStatus(node_id=2, online=False, last_seen=12.5),
        _sample_event(1, 2),
        p.NodeRemoved(node_id=3),
        p.CommandOutput(command_id="c1", stream="stdout", data="hi\n", node_id=1),
    ]
    data = p.batch_bytes([p.encode(f) for f in frames])
    outer = p.decode(_dec, data)
    assert isinstance(outer, p.Batch) and len(outer.frames) == len(frames)
    assert p.decode_all(_dec, data) == frames
    # The Batch struct and batch_bytes agree on the wire form.
    encoded = p.encode(p.Batch(frames=[msgspec.Raw(p.encode(f)) for f in frames]))
    assert msgspec.json.decode(encoded) == msgspec.json.decode(data)
    # A bare frame is a list of one, and an empty batch carries nothing.
    assert p.decode_all(_dec, p.encode(frames[1])) == [frames[1]]
    assert p.decode_all(_dec, p.batch_bytes([])) == []


def test_decode_all_refuses_a_nested_batch() -> None:
    inner = p.batch_bytes([p.encode(_sample_event(1, 2))])
    data = p.batch_bytes([p.encode(_sample_event(1, 1)), inner])
    with pytest.raises(p.FrameError) as err:
        p.decode_all(_dec, data)
    assert err.value.code == "invalid_frame"


@pytest.mark.parametrize(
    ("inner", "code"),
    [
        (b'{"type":"nope"}', "unknown_type"),
        (b'{"type":"sample","node_id":"x"}', "invalid_frame"),
        (b"42", "invalid_frame"),
    ],
)
def test_decode_all_refuses_a_bad_frame_inside_a_batch(inner: bytes, code: str) -> None:
    data = p.batch_bytes([p.encode(_sample_event(1, 1)), inner])
    with pytest.raises(p.FrameError) as err:
        p.decode_all(_dec, data)
    assert err.value.code == code
