"""Property-based fuzzing of the frame decoder and of each gateway's first frame: any input is a frame or a precise FrameError."""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devkit.cores import RunningCore
from servermanager.common import protocol as p

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
TYPES = [t.value for t in p.MsgType]
# Objects that look like frames: a real type, fields of any shape (what a confused or hostile peer sends).
FRAMES = st.builds(
    lambda t, fields: {**fields, "type": t},
    st.sampled_from([*TYPES, "nope", ""]),
    st.dictionaries(
        st.sampled_from(["protocol", "host", "token", "samples", "seq", "nodes", "all", "ts", "x"]),
        JSON,
        max_size=5,
    ),
)
RAW = (
    st.binary(max_size=200)
    | JSON.map(lambda v: json.dumps(v).encode())
    | FRAMES.map(lambda v: json.dumps(v).encode())
)
DECODERS = {
    name: p.decoder(union)
    for name, union in (
        ("agent", p.AgentToCore),
        ("client", p.ClientToCore),
        ("core", p.CoreToAgent),
        ("to-client", p.CoreToClient),
    )
}


@settings(max_examples=400, deadline=None, derandomize=True)
@given(data=RAW, which=st.sampled_from(sorted(DECODERS)))
def test_the_decoder_answers_a_frame_or_a_frame_error(data: bytes, which: str) -> None:
    error: p.FrameError | None = None
    try:
        frame = p.decode_all(DECODERS[which], data)
    except p.FrameError as exc:
        error = exc
    if error is not None:
        assert error.code in ("malformed_json", "invalid_frame", "unknown_type") and str(error)
    else:
        assert frame and all(isinstance(f, p.Frame) for f in frame)


def _examples(strategy: Any, n: int) -> list[Any]:
    out: list[Any] = []

    @settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(v: Any) -> None:
        out.append(v)

    collect()
    return out


@pytest.mark.parametrize("gateway", ["agent", "client"])
async def test_any_first_frame_is_refused_cleanly(
    core_server: RunningCore, caplog: pytest.LogCaptureFixture, gateway: str
) -> None:
    """A real core's gateways, each fed fuzzed first frames: a 44xx close or 1009, never 1011 or a traceback."""
    assert core_server.http is not None
    caplog.set_level(logging.WARNING)
    url = core_server.agent_ws if gateway == "agent" else core_server.client_ws
    for data in _examples(RAW, 60):
        ws = await core_server.http.ws_connect(url)
        await ws.send_bytes(data)
        msg = await ws.receive(timeout=5)
        await ws.close()
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), (data, msg)
        assert ws.close_code in (
            p.CloseCode.UNAUTHORIZED,
            p.CloseCode.BAD_REQUEST,
            p.CloseCode.UNSUPPORTED_PROTOCOL,
        ), (data, ws.close_code)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
