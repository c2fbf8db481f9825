"""Requests as an attacker sends them, against a real core process: absurd numbers, forged log lines, broken headers."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.cores import RunningCore
from servermanager.common.logs import escape
from tests.helpers.core import RawAgent
from tests.helpers.procs import CoreProcess


@pytest.fixture
def core_process(tmp_path: Path) -> Iterator[CoreProcess]:
    proc = CoreProcess(tmp_path / "core").start()
    try:
        yield proc
    finally:
        proc.stop()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        return s.recv(200)


def test_control_characters_cannot_forge_log_lines_or_tracebacks(core_process: CoreProcess) -> None:
    forged = "2026-01-01 00:00:00,000 WARNING servermanager.core.auth: user admin logged in"
    line = _raw(
        core_process.port,
        f"GET /api/v1/nodes/1%0a{forged.replace(' ', '%20')} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    )
    assert line.startswith(b"HTTP/1.1 401")
    assert _raw(
        core_process.port, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"
    ).startswith(b"HTTP/1.0 400")
    assert core_process.terminate() == 0
    log = core_process.log()
    assert "Traceback" not in log and " ERROR " not in log, log
    assert not [ln for ln in log.splitlines() if ln.startswith(forged)], log
    assert "bad HTTP request from 127.0.0.1" in log


def _upgrade_then_reset(port: int, path: str) -> None:
    """A WebSocket upgrade request whose connection is reset (RST) as soon as it is sent."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    s.close()


def test_a_socket_dropped_before_its_upgrade_is_answered_logs_no_error(core_process: CoreProcess) -> None:
    # A storm of sockets that connect and drop (benchmarks/storm.py) made one ERROR with a
    # traceback each: the 101 could not be written to a peer that had gone.
    for i in range(20):
        _upgrade_then_reset(core_process.port, "/ws/agent" if i % 2 else "/ws/client")
    assert _raw(core_process.port, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 200"
    )
    assert core_process.terminate() == 0
    log = core_process.log()
    assert "Traceback" not in log and " ERROR " not in log, log


def test_escape_keeps_tabs_and_shows_the_rest() -> None:
    assert escape("a\nb\rc\x00d\te\x7f") == "a\\nb\\rc\\x00d\te\\x7f"


@pytest.mark.parametrize(
    "query",
    ["from=-1e300&to=1e300", "from=nan", "to=inf", "from=9e18&to=9.1e18", "from=0&to=1e12&points=10"],
)
async def test_out_of_range_history_times_are_a_400(core_server: RunningCore, query: str) -> None:
    agent = RawAgent(core_server)
    await agent.hello(token=await core_server.enroll_token())
    status, body = await core_server.request(
        "GET", f"/api/v1/nodes/{agent.node_id}/metrics?{query}", await core_server.admin_token()
    )
    assert status == 400, body
    assert body["error"]["code"] == "invalid_query" and "query parameter" in body["error"]["message"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/audit?node=99999999999999999999", "node"),
        ("/api/v1/alerts?rule=9223372036854775808", "rule"),
        ("/api/v1/alerts?from=-1", "from"),
    ],
)
async def test_out_of_range_ids_in_queries_are_a_400(core_server: RunningCore, path: str, field: str) -> None:
    status, body = await core_server.request("GET", path, await core_server.admin_token())
    assert status == 400, body
    assert f"query parameter {field}" in body["error"]["message"]


async def test_out_of_range_ids_in_bodies_are_a_400(core_server: RunningCore) -> None:
    admin = await core_server.admin_token()
    status, body = await core_server.request(
        "POST", "/api/v1/commands", admin, json={"targets": {"nodes": [2**63]}, "command": ["true"]}
    )
    assert status == 400 and body["error"]["code"] == "invalid_body", body
    status, body = await core_server.request(
        "POST", "/api/v1/silences", admin, json={"node": 2**64, "duration": "1h", "comment": "x"}
    )
    assert status == 400 and "$.node" in body["error"]["message"], body
