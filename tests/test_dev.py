"""dev.py's runner: a signal to dev.py alone reaches what it runs, and a second one never orphans the demo's core and agent."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.ports import free_port
from tests.helpers.demo import DemoRun
from tests.helpers.procs import CLI

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dev_demo(tmp_path: Path) -> Iterator[DemoRun]:
    """`python3 dev.py run --no-desktop` without its venv step: dev.run() around the demo command."""
    demo = [*CLI, "demo", "--no-desktop", "--listen", f"127.0.0.1:{free_port()}"]
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import dev; sys.exit(dev.run({demo!r}))"
    run = DemoRun(tmp_path, [sys.executable, "-c", code])
    try:
        yield run
    finally:
        run.kill()


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGINT, signal.SIGINT]], ids=["once", "twice"])
def test_sigint_to_dev_py_alone_stops_everything(dev_demo: DemoRun, signals: list[signal.Signals]) -> None:
    dev_demo.wait_running()
    took = dev_demo.stop_timed(*signals)
    assert dev_demo.proc.returncode == 0
    assert took < 5.0, f"stopping took {took:.1f}s\n{dev_demo.log()}"
    assert dev_demo.temp_dirs() == []  # with the admin password in it
