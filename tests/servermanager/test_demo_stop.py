"""Stopping `servermanager demo`: quick, complete (core, agent and the temp dir with the password), however often it is signalled; and a busy port is said, not papered over."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.ports import free_port
from tests.helpers.demo import DemoRun
from tests.helpers.procs import CLI

pytestmark = pytest.mark.slow


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoRun]:
    run = DemoRun(tmp_path, [*CLI, "demo", "--no-desktop", "--listen", f"127.0.0.1:{free_port()}"])
    try:
        yield run
    finally:
        run.kill()


def test_ctrl_c_stops_everything_in_a_few_seconds(demo: DemoRun) -> None:
    demo.wait_running()
    assert len(demo.temp_dirs()) == 1  # the data dir, with the admin password in it
    took = demo.stop_timed(signal.SIGINT)
    assert demo.proc.returncode == 0
    assert took < 4.0, f"stopping took {took:.1f}s\n{demo.log()}"
    assert demo.temp_dirs() == []


def test_a_second_sigint_still_stops_everything(demo: DemoRun) -> None:
    demo.wait_running()
    demo.stop_timed(signal.SIGINT, signal.SIGINT)
    assert demo.temp_dirs() == []
    assert "Traceback" not in demo.log()


def test_a_busy_port_is_said_and_no_password_is_printed(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = DemoRun(tmp_path, [*CLI, "demo", "--no-desktop", "--listen", f"127.0.0.1:{port}"])
        try:
            assert run.proc.wait(timeout=30) == 2
        finally:
            run.kill()
    assert run.log().strip() == (
        f"servermanager demo: cannot listen on 127.0.0.1:{port}: the port is in use (another demo or "
        "core?); stop it, or pick another port with --listen 127.0.0.1:PORT"
    )
    assert run.temp_dirs() == []
