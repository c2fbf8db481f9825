"""`servermanager demo` in a subprocess, for the tests of how it starts and stops."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from tests.helpers.wait import wait_sync


class DemoRun:
    """A command that runs the demo (the demo itself, or dev.py's runner around it), its output in a
    file and its temporary data dir under `tmp/` (TMPDIR), so a test can see that it is removed."""

    def __init__(self, tmp_path: Path, argv: list[str]) -> None:
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir()
        self.log_path = tmp_path / "demo.log"
        env = {
            k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
        }
        env["TMPDIR"] = str(self.tmp)
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session: a failed test can kill everything it started, and no signal of
                # the test's terminal reaches it.
                start_new_session=True,
            )
        self.family: list[psutil.Process] = []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_running(self) -> None:
        """Until the demo says it runs and its core and agent are up; notes every process it started."""
        wait_sync(lambda: "demo is running" in self.log() or self.proc.poll() is not None, what="the demo")
        assert self.proc.poll() is None, self.log()
        wait_sync(lambda: "STREAMING" in self.log(), what="the demo agent connected")
        self.family = psutil.Process(self.proc.pid).children(recursive=True)
        assert len(self.family) >= 2, self.family  # the core and the agent, and dev.py's demo

    def temp_dirs(self) -> list[str]:
        return [p.name for p in self.tmp.iterdir()]

    def stop_timed(self, *signals: signal.Signals) -> float:
        """Send the signals to the one process, each further one once the core is stopping (so it
        lands in the clean-up, not coalesced with the first); seconds until it and all it started
        ended."""
        began = time.monotonic()
        for i, sig in enumerate(signals):
            if i:
                wait_sync(
                    lambda: "shutting down" in self.log() or self.proc.poll() is not None,
                    what="the demo stopping",
                    interval=0.001,
                )
            self.proc.send_signal(sig)
        self.proc.wait(timeout=30)
        _, alive = psutil.wait_procs(self.family, timeout=30)
        assert not alive, f"left running: {alive}\n{self.log()}"
        return time.monotonic() - began

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
