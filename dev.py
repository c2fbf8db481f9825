#!/usr/bin/env python3
"""One-command set-up: `python3 dev.py run` starts the product, `python3 dev.py test` runs every check."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("SM_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_venv(extras: str) -> None:
    """Create the venv and install the project once; reinstall only when pyproject.toml changes."""
    stamp = VENV / f".installed-{extras}"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == want and PY.exists():
        return
    if not PY.exists():
        print(f"creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    print(f"installing servermanager[{extras}] (first run takes a minute)", flush=True)
    subprocess.run([*pip, "-e", f"{ROOT}[{extras}]"], check=True)
    stamp.write_text(want)


def run(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run cmd to its end, passing on SIGINT, SIGTERM and SIGHUP, and never leave it behind.

    On POSIX it runs in a process group of its own, so a terminal's Ctrl-C reaches only this
    process, which passes it on once: the child hears every stop request exactly once, whether
    it came from the terminal or from `kill -INT <this pid>`, and stops what it started itself
    (the demo's core and agent). A repeated signal is passed on again; this never kills the
    child, which would orphan whatever it started.
    """
    print("+", " ".join(cmd), flush=True)
    posix = os.name == "posix"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, process_group=0 if posix else None)

    def forward(signum: int, frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    # On Windows the console sends Ctrl-C to every process attached to it; there it stays
    # Python's KeyboardInterrupt, and this keeps waiting.
    for name in ("SIGINT", "SIGTERM", "SIGHUP") if posix else ("SIGTERM",):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), forward)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue


def cmd_run(args: list[str]) -> int:
    ensure_venv("all")
    return run([str(BIN / "servermanager"), "demo", *args])


def cmd_test(args: list[str]) -> int:
    ensure_venv("dev")
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    # One pytest-xdist worker per CPU: most tests wait on real cores and agents in subprocesses, so
    # two workers on two CPUs take about half the time. `-n 0` (or any -n) in args overrides it; tests
    # that share a costly fixture stay on one worker (tests/conftest.py, _ONE_WORKER).
    parallel = ["-n", str(min(os.cpu_count() or 1, 4))]
    steps = [
        [str(BIN / "ruff"), "check", "."],
        [str(BIN / "ruff"), "format", "--check", "."],
        [str(BIN / "mypy")],
        [str(PY), "-m", "pytest", *parallel, *args],
    ]
    for step in steps:
        code = run(step, env)
        if code != 0:
            print(f"FAILED: {' '.join(step)} (exit {code})", flush=True)
            return code
    return 0


def main() -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py is what an older python3 runs first
        print(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    commands = {"run": cmd_run, "test": cmd_test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print("usage: python3 dev.py run [demo options] | test [pytest options]", file=sys.stderr)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
