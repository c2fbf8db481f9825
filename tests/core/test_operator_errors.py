"""An operator's common mistakes with the core and admin commands: one line on stderr, an exit code, no traceback."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import sqlite3
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from devkit.ports import free_port
from tests.helpers.procs import CLI, CoreProcess, cli

pytestmark = pytest.mark.slow

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")


def last_line(r: subprocess.CompletedProcess[str]) -> str:
    """The line the operator reads: stderr's last (INFO lines of the start-up come before it)."""
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr.strip().splitlines()[-1]


def test_a_port_in_use_is_one_line_and_nothing_is_called_ready(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli("core", "--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{port}")
    assert r.returncode == 2
    assert last_line(r) == (
        f"servermanager: cannot listen on 127.0.0.1:{port}: the port is in use (another core, or another program)"
    )
    # Neither is true of a core that never got its port.
    assert "core ready" not in r.stderr and "core listening" not in r.stderr


def test_a_second_core_on_one_data_dir_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = CoreProcess(tmp_path / "d").start()
    try:
        assert first.proc is not None
        r = cli("core", "--data-dir", str(first.data_dir), "--listen", f"127.0.0.1:{free_port()}")
        assert r.returncode == 2
        assert last_line(r) == (
            f"servermanager: a core (pid {first.proc.pid}) is using the data dir {first.data_dir}; "
            "stop it first (one data dir serves one core)"
        )
        assert first.healthy()
    finally:
        first.stop()


@as_root
@pytest.mark.parametrize(
    "argv",
    [("core", "--listen", "127.0.0.1:1"), ("admin", "users")],
    ids=["core", "admin"],
)
def test_a_data_dir_this_user_cannot_use_is_named(argv: tuple[str, ...]) -> None:
    # Under /tmp itself: pytest's own tmp_path sits in a folder only root may enter.
    with tempfile.TemporaryDirectory() as top:
        os.chmod(top, 0o755)
        data = Path(top) / "d"
        data.mkdir(mode=0o700)  # root's, as after `sudo servermanager core` once
        r = run_as_nobody([*argv, "--data-dir", str(data)])
    assert r.returncode == 2
    assert last_line(r) == (
        f"servermanager: the data dir {data} is not readable and writable by user nobody (uid {NOBODY}): "
        "fix its owner or mode (or run as the user who owns it)"
    )


def run_as_nobody(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        cwd="/",
    )


def test_an_unknown_log_level_is_refused_with_the_valid_ones(tmp_path: Path) -> None:
    cfg = tmp_path / "core.toml"
    cfg.write_text('log_level = "VERBOSE"\n')
    r = cli("core", "--config", str(cfg), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2
    assert last_line(r) == (
        "servermanager: setting log_level: expected DEBUG, INFO, WARNING or ERROR, got 'VERBOSE'"
    )
    assert not (tmp_path / "d").exists()  # refused before anything was made


def test_the_agent_refuses_an_unknown_log_level_too(tmp_path: Path) -> None:
    env = {**os.environ, "SM_AGENT_LOG_LEVEL": "VERBOSE"}
    r = cli("agent", "--core", "http://127.0.0.1:1", "--state-dir", str(tmp_path / "s"), env=env)
    assert r.returncode == 2
    assert last_line(r) == (
        "servermanager agent: setting log_level: expected DEBUG, INFO, WARNING or ERROR, got 'VERBOSE'"
    )


def test_a_ttl_that_is_not_a_duration_is_a_usage_error(tmp_path: Path) -> None:
    r = cli("admin", "enroll-token", "--ttl", "banana", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2
    assert last_line(r) == (
        "servermanager admin enroll-token: error: argument --ttl: "
        "not a duration: 'banana' (use e.g. 5s, 10m, 48h, 30d)"
    )
    assert not (tmp_path / "d").exists()


def test_a_backup_path_that_cannot_be_written(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert cli("admin", "users", "--data-dir", str(data)).returncode == 0  # makes the database
    missing = tmp_path / "no-such-dir" / "b.db"
    r = cli("admin", "backup", str(missing), "--data-dir", str(data))
    assert r.returncode == 1
    assert last_line(r) == f"error: cannot write the backup to {missing}: no such directory"
    r = cli("admin", "backup", str(tmp_path), "--data-dir", str(data))
    assert r.returncode == 1
    assert last_line(r) == f"error: cannot write the backup to {tmp_path}: it is a directory; name a file"
    # Nothing was recorded for a backup that was not taken.
    r = cli("admin", "backup", str(tmp_path / "ok.db"), "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    with contextlib.closing(sqlite3.connect(tmp_path / "ok.db")) as con:
        rows = con.execute("SELECT count(*) FROM audit WHERE action = 'admin.backup'").fetchone()[0]
    assert rows == 1


def test_the_test_harness_starts_a_core_elsewhere_when_its_port_was_taken(tmp_path: Path) -> None:
    """On a busy test run another worker's server can bind the port a fixture chose before the core
    starts; it answers the health check too and then goes away. CoreProcess counts only its own
    core's listener, and starts it on another port when the chosen one was taken."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    core = CoreProcess(tmp_path / "d")
    taken = core.port = other.server_address[1]
    try:
        core.start()
        assert core.port != taken
        status, body = core.api("GET", "/api/v1/health")
        assert status == 200 and body["status"] == "ok"
    finally:
        core.stop()
        other.shutdown()
        other.server_close()
