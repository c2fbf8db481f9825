"""[containers]: the Engine API parsers on captured answers, the log stream decoder, the settings, and
the watcher and container logs against a real engine (Podman's Docker-compatible service)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devkit.engine import Podman
from servermanager.agent.containers import (
    ContainersSettings,
    ContainerWatcher,
    Engine,
    EngineError,
    parse_health,
    parse_list,
    parse_stats,
)
from servermanager.agent.logread.config import LogsSettings
from servermanager.agent.logread.containers import Demux, entry
from servermanager.agent.logread.service import LogService
from servermanager.common.protocol import LogQuery, LogsChunk, LogsRequest
from servermanager.common.settings import SettingsError
from tests.helpers.wait import wait_for

# Captured from Podman 4.3.1's compat API on this machine kind (cgroup v1, runc), 2026-11:
# GET /containers/json?all=1 and GET /containers/{id}/stats?stream=false&one-shot=true.
PODMAN_LIST = [
    {
        "Id": "2df7e6618192d2efa4d6f0ae9fd6292ec271a338075bdf53ee0e7075bd45d275",
        "Names": ["/smtest1"],
        "Image": "localhost/smtest-busybox:latest",
        "ImageID": "sha256:debe23068ec080ec0094f8813ce548d797da0eb762462568253eb1311d529081",
        "Command": "sh -c while true; do echo hello; sleep 1; done",
        "Created": 1796042658,
        "Ports": [],
        "Labels": {},
        "State": "running",
        "Status": "Up 2 seconds",
        "NetworkSettings": {"Networks": None},
        "Mounts": [],
        "Name": "",
        "Config": None,
        "NetworkingConfig": None,
        "Platform": None,
        "AdjustCPUShares": False,
    }
]
PODMAN_STATS = {
    "read": "2026-11-30T12:44:20.24972534Z",
    "preread": "0001-01-01T00:00:00Z",
    "pids_stats": {"current": 2},
    "blkio_stats": {"io_service_bytes_recursive": [], "io_serviced_recursive": None},
    "num_procs": 0,
    "storage_stats": {},
    "cpu_stats": {
        "cpu_usage": {
            "total_usage": 28498685,
            "percpu_usage": [491038, 28007647],
            "usage_in_kernelmode": 12000000,
            "usage_in_usermode": 16498685,
        },
        "system_cpu_usage": 3641161577228,
        "online_cpus": 2,
        "cpu": 0,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    },
    "precpu_stats": {"cpu_usage": {"total_usage": 0}, "cpu": 0},
    "memory_stats": {"usage": 692224, "limit": 25276059648},
    "name": "smtest1",
    "Id": "2df7e6618192d2efa4d6f0ae9fd6292ec271a338075bdf53ee0e7075bd45d275",
    "networks": {"network": {"rx_bytes": 0, "rx_packets": 0, "tx_bytes": 0, "tx_packets": 0}},
}
# Docker Engine on cgroup v2, in the shape of the Engine API v1.43 reference (ContainerStatsResponse):
# lower-case blkio ops, the page cache as memory_stats.stats.inactive_file, one entry per interface.
DOCKER_V2_STATS = {
    "cpu_stats": {
        "cpu_usage": {"total_usage": 400_000_000},
        "system_cpu_usage": 9_000_000_000,
        "online_cpus": 4,
    },
    "memory_stats": {
        "usage": 80 << 20,
        "limit": 512 << 20,
        "stats": {"inactive_file": 30 << 20, "anon": 40 << 20},
    },
    "networks": {"eth0": {"rx_bytes": 1000, "tx_bytes": 500}, "eth1": {"rx_bytes": 24, "tx_bytes": 0}},
    "blkio_stats": {
        "io_service_bytes_recursive": [
            {"major": 8, "minor": 0, "op": "read", "value": 4096},
            {"major": 8, "minor": 0, "op": "write", "value": 8192},
            {"major": 8, "minor": 16, "op": "write", "value": 100},
        ]
    },
}


def test_parsers_read_captured_answers() -> None:
    [c] = parse_list(PODMAN_LIST)
    assert (c.name, c.image, c.state) == ("smtest1", "localhost/smtest-busybox:latest", "running")
    s = parse_stats(PODMAN_STATS)
    assert (s.cpu_total, s.system, s.online_cpus) == (28498685, 3641161577228, 2)
    assert (s.mem_used, s.mem_limit, s.net_rx, s.net_tx, s.blk_read, s.blk_write) == (
        692224,
        25276059648,
        0,
        0,
        0,
        0,
    )
    d = parse_stats(DOCKER_V2_STATS)
    assert d.mem_used == 50 << 20  # the page cache is left out, as `docker stats` does
    assert (d.net_rx, d.net_tx, d.blk_read, d.blk_write) == (1024, 500, 4096, 8292)
    assert parse_health({"State": {"Health": {"Status": "unhealthy"}}}) == "unhealthy"
    assert parse_health({"State": {"Health": {"Status": ""}}}) is None
    assert parse_health({"State": {}}) is None
    with pytest.raises(EngineError, match="not a list"):
        parse_list({"message": "page not found"})
    assert parse_list([{"Names": ["/x"]}, "junk", {"Id": "abc", "Names": ["/" + "n" * 300]}])[
        0
    ].name.endswith("…")


def test_cpu_percent_is_dockers_formula_between_polls() -> None:
    s = ContainersSettings()
    s.validate()
    w = ContainerWatcher(s)
    first = parse_stats(DOCKER_V2_STATS)
    assert w._cpu_pct("a", first) is None  # first sight: nothing to diff
    later = first._replace(cpu_total=first.cpu_total + 500_000_000, system=first.system + 1_000_000_000)  # type: ignore[operator]
    assert w._cpu_pct("a", later) == 200.0  # half the host's 4 CPUs: two CPUs, as docker stats says
    assert w._cpu_pct("a", first) is None  # restarted: the counter went back


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_demux_splits_frames_across_reads_and_keeps_streams_apart() -> None:
    wire = (
        frame(1, b"2024-05-01T10:00:00.123456789Z hello\n2024-05-01T10:00:01Z wor")
        + frame(2, b"oops\n")
        + frame(1, b"ld\n")
    )
    d = Demux()
    out: list[tuple[str, str]] = []
    for i in range(0, len(wire), 5):  # five bytes at a time: headers cut anywhere
        out += d.feed(wire[i : i + 5])
    assert out == [
        ("stdout", "2024-05-01T10:00:00.123456789Z hello"),
        ("stderr", "oops"),
        ("stdout", "2024-05-01T10:00:01Z world"),
    ]
    e = entry(*out[0])
    assert e.unit == "stdout" and e.message == "hello" and e.ts == pytest.approx(1714557600.123456)
    assert entry("stdout", "no stamp here").ts is None
    tty = Demux()
    assert list(tty.feed(b"raw tty output\nmore")) == [("stdout", "raw tty output")]
    assert list(tty.flush()) == [("stdout", "more")]


def test_bad_settings_are_refused_precisely(tmp_path: Path) -> None:
    cases = {
        "maybe": ({"enabled": "maybe"}, "containers.enabled"),
        "relative": ({"socket": "docker.sock"}, "not an absolute path"),
        "not a socket": ({"socket": str(tmp_path)}, "is not a socket"),
        "interval": ({"interval": 0.1}, "containers.interval"),
        "too many": ({"max_containers": 100_000}, "containers.max_containers"),
        "timeout": ({"timeout": 0}, "containers.timeout"),
    }
    for what, (over, message) in cases.items():
        s = ContainersSettings(**over)  # type: ignore[arg-type]
        with pytest.raises(SettingsError, match=message):
            s.validate()
        assert what
    s = ContainersSettings(enabled="off", socket="unix:///run/x.sock")
    s.validate()
    assert (s.enabled, s.socket, s.watcher()) == (False, "/run/x.sock", None)


@pytest.fixture
async def silent_socket() -> AsyncIterator[str]:
    """A unix socket that accepts and never answers: an engine that hangs."""
    folder = tempfile.mkdtemp(prefix="sm-hang-")
    path = os.path.join(folder, "engine.sock")
    held: list[asyncio.StreamWriter] = []

    async def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_unix_server(accept, path)
    try:
        yield path
    finally:
        server.close()
        for w in held:
            w.close()


async def test_a_hanging_engine_costs_one_timeout_and_no_list(silent_socket: str) -> None:
    s = ContainersSettings(socket=silent_socket, timeout=0.3)
    s.validate()
    w = ContainerWatcher(s)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await w.poll() is None
    assert loop.time() - started < 2.0
    assert w.note is not None and "no answer within 0.3s" in w.note and w.take() is None
    with pytest.raises(EngineError, match="cannot reach"):
        await Engine(silent_socket + ".missing", 1.0).get("/containers/json")


async def test_no_socket_means_no_list_and_says_where_it_looked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = ContainersSettings(socket=str(tmp_path / "docker.sock"))
    s.validate()
    w = ContainerWatcher(s)
    with caplog.at_level(logging.INFO, logger="servermanager.agent.containers"):
        assert await w.poll() is None and w.note == f"no engine socket at {tmp_path / 'docker.sock'}"
    # The default, enabled = "auto", asks for containers only where an engine runs: none here is
    # no fault, so no warning on every start of an agent on a host without Docker.
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.INFO, f"containers: {w.note}")]


@pytest.mark.parametrize("enabled", ["true", "auto"], ids=["asked-for", "seen-then-gone"])
async def test_a_missing_engine_is_a_warning_when_asked_for_or_gone(
    caplog: pytest.LogCaptureFixture, enabled: str
) -> None:
    sock = Path(tempfile.mkdtemp(prefix="sm-gone-")) / "docker.sock"  # short, as socket paths must be
    s = ContainersSettings(enabled=enabled, socket=str(sock))
    s.validate()
    w = ContainerWatcher(s)
    if enabled == "auto":  # an engine was there, then its socket went away
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(sock))
        await w.poll()  # it found the socket (nothing answers on it: a warning of its own)
        sock.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="servermanager.agent.containers"):
        assert await w.poll() is None
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, f"containers: no engine socket at {sock}")
    ]


# ---------------------------------------------------------------- a real engine


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    why = Podman.why_not()
    if why is not None:
        pytest.skip(f"no container engine can run here: {why}")
    with Podman.throwaway() as engine:
        engine.run("burner", "sh", "-c", "yes > /dev/null")
        engine.run(
            "talker",
            "sh",
            "-c",
            "i=0; while true; do echo line $i; echo err $i >&2; i=$((i+1)); sleep 0.1; done",
            health=True,
        )
        engine.run("done", "true")
        engine.podman("wait", "done")
        yield engine


async def test_real_engine_lists_states_health_and_a_busy_container(podman: Podman) -> None:
    s = ContainersSettings(socket=f"unix://{podman.socket}", interval=1)
    s.validate()
    w = ContainerWatcher(s)
    first = await w.poll()
    assert first is not None
    by_name = {c.name: c for c in first}
    assert set(by_name) == {"burner", "talker", "done"}
    assert by_name["done"].state == "exited" and by_name["done"].mem_used is None
    assert by_name["talker"].health == "healthy" and by_name["burner"].health is None
    assert by_name["burner"].cpu_pct is None and by_name["burner"].net_rx_bps is None  # no bogus first rate
    assert [c.name for c in first][-1] == "done"  # running ones first
    assert w.take() == first and w.take() is None  # a sample takes a list once
    # The burner's CPU is a rate between polls: poll until one shows it busy (a shared CPU may
    # starve one short gap).
    async with asyncio.timeout(10):
        while True:
            second = await w.poll()
            assert second is not None
            burner = next(c for c in second if c.name == "burner")
            if burner.cpu_pct is not None and burner.cpu_pct > 20:
                break
    assert burner.mem_used is not None and burner.mem_used > 0 and burner.mem_limit
    assert burner.blk_read_bps is not None and burner.net_rx_bps is not None
    capped = ContainersSettings(socket=podman.socket, max_containers=1)
    capped.validate()
    only = await ContainerWatcher(capped).poll()
    assert only is not None and len(only) == 1 and only[0].state == "running"


async def test_real_container_logs_once_and_followed(podman: Podman) -> None:
    s = ContainersSettings(socket=podman.socket)
    s.validate()
    w = ContainerWatcher(s)
    logs = LogsSettings(containers=True)
    logs.validate()
    svc = LogService(logs, containers=w)
    assert svc.sources().containers is True
    got: list[LogsChunk] = []

    async def send(chunk: LogsChunk) -> None:
        got.append(chunk)

    svc.handle(LogsRequest(request_id="once", query=LogQuery(source="container:talker", lines=6)), send)
    await wait_for(lambda: bool(got) and got[-1].eof)
    entries = [e for c in got for e in c.entries]
    assert len(entries) == 6 and got[-1].error is None
    assert {e.unit for e in entries} == {"stdout", "stderr"}
    assert all(e.ts is not None for e in entries)
    assert all(e.message.startswith(("line ", "err ")) for e in entries)

    got.clear()
    svc.handle(
        LogsRequest(
            request_id="follow", query=LogQuery(source="container:talker", lines=1, match="err"), follow=True
        ),
        send,
    )
    await wait_for(lambda: len({e.message for c in got for e in c.entries}) >= 5)
    assert all(e.message.startswith("err ") for c in got for e in c.entries)
    svc.handle(LogsRequest(request_id="missing", query=LogQuery(source="container:nosuch")), send)
    await wait_for(lambda: any(c.request_id == "missing" for c in got))
    missing = next(c for c in got if c.request_id == "missing")
    assert missing.eof and missing.code == "not_found" and "nosuch" in (missing.error or "")
    await svc.close()


async def test_container_logs_need_the_logs_table_to_allow_them(podman: Podman) -> None:
    s = ContainersSettings(socket=podman.socket)
    s.validate()
    got: list[LogsChunk] = []

    async def send(chunk: LogsChunk) -> None:
        got.append(chunk)

    off = LogService(LogsSettings(), containers=ContainerWatcher(s))
    assert off.sources().containers is False
    off.handle(LogsRequest(request_id="r", query=LogQuery(source="container:talker")), send)
    on_without_engine = LogService(LogsSettings(containers=True), containers=None)
    on_without_engine.handle(LogsRequest(request_id="s", query=LogQuery(source="container:talker")), send)
    bad = LogService(LogsSettings(containers=True), containers=ContainerWatcher(s))
    bad.handle(LogsRequest(request_id="t", query=LogQuery(source="container:../../etc")), send)
    bad.handle(LogsRequest(request_id="u", query=LogQuery(source="container:talker", unit="x")), send)
    await wait_for(lambda: len(got) == 4)
    by_id = {c.request_id: c for c in got}
    assert by_id["r"].code == "refused" and "[logs] containers = false" in (by_id["r"].error or "")
    assert by_id["s"].code == "refused" and "[containers]" in (by_id["s"].error or "")
    assert by_id["t"].code == "invalid" and by_id["u"].code == "invalid"
    assert all(not c.entries for c in got)
