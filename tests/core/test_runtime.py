"""The core process: first start, a clean and quick stop on SIGTERM, fatal database errors, and its event loop."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.ports import free_port
from servermanager.core.datadir import DB_FILENAME, INITIAL_PASSWORD_FILE
from servermanager.core.runtime import LISTEN_BACKLOG
from servermanager.core.store.schema import migrate_sync
from tests.helpers.procs import CLI, AgentProcess, CoreProcess, cli
from tests.helpers.wait import wait_sync


@pytest.fixture
def core_proc(tmp_path: Path) -> Iterator[CoreProcess]:
    proc = CoreProcess(tmp_path / "data")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.slow
def test_first_start_admin_and_clean_sigterm(core_proc: CoreProcess) -> None:
    core_proc.start()
    pw_file = core_proc.data_dir / INITIAL_PASSWORD_FILE
    assert pw_file.stat().st_mode & 0o077 == 0
    token = core_proc.admin_token()
    assert core_proc.terminate() == 0
    log = core_proc.log()
    # The log says where the password is, never what it is, and never prints a token.
    assert str(pw_file) in log
    assert pw_file.read_text().strip() not in log
    assert token not in log and "sma_" not in log


def test_core_event_loop_is_uvloop_unless_switched_off() -> None:
    import asyncio

    import uvloop

    from servermanager.core.runtime import new_event_loop

    fast, plain = new_event_loop(prefer_uvloop=True), new_event_loop(prefer_uvloop=False)
    try:
        assert isinstance(fast, uvloop.Loop)
        assert not isinstance(plain, uvloop.Loop) and isinstance(plain, asyncio.AbstractEventLoop)
    finally:
        fast.close()
        plain.close()


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    import resource

    from servermanager.core.runtime import raise_open_files_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert raise_open_files_limit(want) == want
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == want
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _core_cmd(data: Path, port: int) -> list[str]:
    return [*CLI, "core", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"]


@pytest.mark.slow
def test_a_database_that_fails_at_start_up_ends_the_core_at_once(tmp_path: Path) -> None:
    """It used to print a traceback and then wait for ever on SQLite's threads, deaf to SIGTERM."""
    data = tmp_path / "data"
    data.mkdir()
    db = data / DB_FILENAME
    migrate_sync(db)
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("DROP TABLE nodes")  # opens, then fails while the core loads its nodes
    # The timeout kills a hung core, and fails the test.
    r = subprocess.run(_core_cmd(data, free_port()), capture_output=True, text=True, timeout=20)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"servermanager: cannot use the database in {data}: no such table: nodes"
    )
    assert "core ready" not in r.stderr


@pytest.mark.slow
def test_a_database_damaged_while_serving_stops_the_core(core_proc: CoreProcess) -> None:
    """Serving on would answer health "ok" while every request fails: the core exits 1 instead, so
    its service manager sees it and restarts it (where the damage is then said at start-up)."""
    core_proc.start()
    db = core_proc.data_dir / DB_FILENAME
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the file, nothing in the WAL
    os.truncate(db, 2048)  # the disk lost it, or someone copied over it
    status, body = core_proc.api(
        "POST", "/api/v1/auth/login", body={"username": "admin", "password": "whatever"}
    )
    assert (status, body["error"]["code"]) == (503, "storage_failed")
    assert core_proc.proc is not None
    assert core_proc.proc.wait(timeout=10) == 1
    log = core_proc.log()
    assert "Traceback" not in log
    assert log.strip().splitlines()[-1] == (
        f"servermanager: the core stopped: its database {db} cannot be used (database disk image is "
        "malformed); check the owner, mode and disk of the data dir, or restore a backup"
    )


@pytest.mark.slow
def test_sigterm_stops_a_busy_core_within_seconds(core_proc: CoreProcess, tmp_path: Path) -> None:
    core_proc.start()
    token = core_proc.admin_token()
    r = cli("admin", "enroll-token", "--data-dir", str(core_proc.data_dir))
    agent = AgentProcess(core_proc.url, tmp_path / "agent", token=r.stdout.strip(), interval=1.0).start()
    stop_load = threading.Event()
    requests = [0]

    def load() -> None:
        # Requests without pause while the core stops: each one a handler it must finish or drop.
        while not stop_load.is_set():
            with contextlib.suppress(OSError):
                core_proc.api("GET", "/api/v1/nodes", token)
                requests[0] += 1

    workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    try:
        for w in workers:
            w.start()

        def agent_online() -> bool:
            _, body = core_proc.api("GET", "/api/v1/nodes", token)
            return bool(body["nodes"]) and body["nodes"][0]["online"]

        wait_sync(agent_online, what="the agent online")
        wait_sync(lambda: requests[0] > 50, what="requests under way")
        assert core_proc.proc is not None
        began = time.monotonic()
        core_proc.proc.send_signal(signal.SIGTERM)
        assert core_proc.proc.wait(timeout=20) == 0
        took = time.monotonic() - began
        assert took < 5.0, f"the core took {took:.1f}s to stop"
        assert "core stopped cleanly" in core_proc.log()
    finally:
        stop_load.set()
        for w in workers:
            w.join(timeout=10)
        agent.stop()


def test_the_core_queues_thousands_of_connections_while_busy(core_proc: CoreProcess) -> None:
    """A fleet reconnecting at once after a restart: aiohttp's default backlog of 128 dropped SYNs."""
    core_proc.start()
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{core_proc.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    # State Recv-Q Send-Q Local Peer; for a listening socket Send-Q is its backlog (capped by somaxconn).
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert int(out[2]) == min(LISTEN_BACKLOG, somaxconn) > 128, out
