"""`servermanager demo`: a core, one local agent and the desktop app as child processes."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from servermanager.core.datadir import initial_admin_password
from servermanager.core.runtime import setup_logging
from servermanager.core.tls import is_loopback


class _Stop:
    """Set by SIGINT, SIGTERM or SIGHUP; every wait of the demo polls it. Nothing is raised from the
    handler, so a signal never lands between starting a child and recording it, and a second one
    cannot cut the clean-up short (which is bounded by STOP_WAIT)."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __call__(self, signum: int, frame: object) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.signal is not None


# How long the children get to stop after SIGTERM before they are killed.
STOP_WAIT = 10.0


def _wait_health(url: str, proc: subprocess.Popen[bytes], stop: _Stop, timeout: float = 30.0) -> bool:
    """True once the core answers; False if a signal came first. SystemExit (one line) if it failed."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop:
        if proc.poll() is not None:
            raise SystemExit("servermanager demo: the core exited during start-up; its log above says why")
        try:
            with urllib.request.urlopen(url + "/api/v1/health", timeout=1) as r:
                if r.status == 200 and proc.poll() is None:
                    return True
        except OSError:
            time.sleep(0.1)
    if stop:
        return False
    raise SystemExit("servermanager demo: the core did not answer in time")


def _port_in_use(host: str, port: int) -> bool:
    """Whether the port is taken, tried as the core will bind it (SO_REUSEADDR, as aiohttp does on
    POSIX, so a port left in TIME_WAIT by the last demo counts as free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _stop_children(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every child still running, then SIGKILL to whichever has not ended by STOP_WAIT."""
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + STOP_WAIT
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# What the demo's agent lets the Console and Services tabs run: read-only commands only, so the demo
# shows remote execution working without letting anything change the machine.
DEMO_ALLOW = (
    "uptime",
    "df -h",
    "free -h",
    "uname -a",
    "systemctl status",
    "systemctl status *",
    "service list",
    "service status *",
)


def write_demo_agent_config(path: Path) -> Path:
    """The demo agent's agent.toml: [exec] on, allowing DEMO_ALLOW and nothing else."""
    allow = ",\n".join(f"    {json.dumps(c)}" for c in DEMO_ALLOW)
    path.write_text(
        "# Written by `servermanager demo`: remote execution limited to read-only commands.\n"
        f"[exec]\nenabled = true\nallow = [\n{allow},\n]\nmax_runtime = 30\n",
        encoding="utf-8",
    )
    os.chmod(path, 0o600)
    return path


def run_demo(args: argparse.Namespace) -> int:
    """Core + one local agent on a throwaway data dir; the desktop app joins once it exists."""
    import tempfile

    host = args.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"
    port = args.listen.rpartition(":")[2]
    if not is_loopback(host):
        # The demo is plain HTTP with a printed password: fine on this machine, not on a network.
        print(
            f"servermanager demo: {args.listen} is not a loopback address; the demo serves plain HTTP on "
            "loopback only. For a core others can reach, run `servermanager core` (HTTPS by default).",
            file=sys.stderr,
        )
        return 2
    if not port.isdigit():
        print(f"servermanager demo: --listen expects HOST:PORT, got {args.listen!r}", file=sys.stderr)
        return 2
    # Said before anything starts: otherwise the health check could be answered by whatever holds
    # the port, and the demo would print a password for a core that never served.
    if _port_in_use(host, int(port)):
        print(
            f"servermanager demo: cannot listen on {args.listen}: the port is in use (another demo or "
            "core?); stop it, or pick another port with --listen 127.0.0.1:PORT",
            file=sys.stderr,
        )
        return 2

    # SIGINT (Ctrl-C; or kill -INT), SIGTERM (kill, a service manager) and SIGHUP (the terminal
    # closed) all stop the demo and everything it started, however often they come.
    stop = _Stop()
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)
    setup_logging("INFO")
    base = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="servermanager-demo-"))
    try:
        return _run(args, base, stop)
    finally:
        if not args.data_dir:
            # It holds the admin password: it never outlives the demo.
            shutil.rmtree(base, ignore_errors=True)


def _run(args: argparse.Namespace, base: Path, stop: _Stop) -> int:
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(base, 0o700)
    exe = [sys.executable, "-m", "servermanager"]
    url = f"http://{args.listen}"
    env = dict(os.environ)
    core_dir, state_dir = base / "core", base / "agent"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen([*exe, "core", "--data-dir", str(core_dir), "--listen", args.listen], env=env)
        )
        if not _wait_health(url, procs[0], stop):
            return 0
        made = subprocess.run(
            [*exe, "admin", "enroll-token", "--data-dir", str(core_dir), "--ttl", "10m"],
            capture_output=True,
            text=True,
            env=env,
        )
        if made.returncode != 0:
            if stop:
                return 0
            print(f"servermanager demo: no enrollment token: {made.stderr.strip()}", file=sys.stderr)
            return 1
        agent_env = dict(env, SM_AGENT_ENROLL_TOKEN=made.stdout.strip())
        agent_config = write_demo_agent_config(base / "agent.toml")
        procs.append(
            subprocess.Popen(
                [
                    *exe,
                    "agent",
                    "--config",
                    str(agent_config),
                    "--core",
                    url,
                    "--state-dir",
                    str(state_dir),
                    "--interval",
                    "2",
                ],
                env=agent_env,
            )
        )
        password = initial_admin_password(core_dir)
        print(
            "\n  Server Manager demo is running.\n"
            f"    core:     {url}   (data in {base})\n"
            f"    login:    admin / {password}\n"
            f"    try:      curl -s -X POST {url}/api/v1/auth/login -H 'Content-Type: application/json' "
            f'-d \'{{"username":"admin","password":"{password}"}}\'\n'
            "    commands: the local agent runs only these read-only ones (Console and Services tabs):\n"
            f"              {', '.join(c for c in DEMO_ALLOW if '*' not in c)} (and status of any service;\n"
            f"              see {agent_config})\n"
            "    Ctrl-C stops everything.\n",
            flush=True,
        )
        daemons = list(procs)
        desktop: subprocess.Popen[bytes] | None = None
        why_not = _why_no_desktop(args)
        if why_not:
            print(f"  Not opening the desktop app: {why_not}.\n", flush=True)
        else:
            # The password travels in the child's environment only: never argv (ps shows it), never a file.
            desktop = subprocess.Popen(
                [*exe, "desktop", "--core", url, "--demo-login"], env=dict(env, SM_DEMO_PASSWORD=password)
            )
            procs.append(desktop)
        while not stop and all(p.poll() is None for p in daemons):
            if desktop is not None and desktop.poll() is not None:
                if desktop.returncode == 0:
                    return 0  # quitting the app ends the demo
                print(
                    f"\n  The desktop app exited with code {desktop.returncode}; the core and the agent keep "
                    "running. Ctrl-C stops them.\n",
                    flush=True,
                )
                desktop = None
            time.sleep(0.2)
        return 0 if stop else 1  # without a signal, the core or the agent died: their logs say why
    finally:
        _stop_children(procs)


def _why_no_desktop(args: argparse.Namespace) -> str | None:
    """Why the demo runs without the app, or None: a headless server should still get core and agent."""
    if args.no_desktop:
        return "--no-desktop was given"
    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    )
    if headless:
        return "there is no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    # Look for the packages without importing them: importing Qt takes seconds on a busy machine.
    if any(importlib.util.find_spec(name) is None for name in ("PySide6", "qasync", "pyqtgraph")):
        return "it is not installed (pip install 'servermanager[desktop]')"
    return None
