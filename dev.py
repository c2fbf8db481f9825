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
    """Run cmd to its end. SIGTERM and SIGHUP are passed on to it, and on Ctrl-C (which the
    terminal sends it too) this waits for it: either way it stops what it started first."""
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda signum, frame: proc.send_signal(signum))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for a clean stop
            proc.kill()
            return proc.wait()


def cmd_run(args: list[str]) -> int:
    ensure_venv("all")
    return run([str(BIN / "servermanager"), "demo", *args])


def cmd_test(args: list[str]) -> int:
    ensure_venv("dev")
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    steps = [
        [str(BIN / "ruff"), "check", "."],
        [str(BIN / "ruff"), "format", "--check", "."],
        [str(BIN / "mypy")],
        [str(PY), "-m", "pytest", *args],
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
