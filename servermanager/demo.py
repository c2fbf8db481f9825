"""`servermanager demo`: a core, one local agent and the desktop app as child processes."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from servermanager.core.datadir import initial_admin_password
from servermanager.core.runtime import setup_logging
from servermanager.core.tls import is_loopback


def _wait_health(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the core exited during start-up; see its log above")
        try:
            with urllib.request.urlopen(url + "/api/v1/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the core did not answer in time")


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
    import signal
    import tempfile

    host = args.listen.rpartition(":")[0].strip("[]") or "0.0.0.0"
    if not is_loopback(host):
        # The demo is plain HTTP with a printed password: fine on this machine, not on a network.
        print(
            f"servermanager demo: {args.listen} is not a loopback address; the demo serves plain HTTP on "
            "loopback only. For a core others can reach, run `servermanager core` (HTTPS by default).",
            file=sys.stderr,
        )
        return 2

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # the cleanup below stops the children, as on Ctrl-C

    # SIGTERM (kill, a service manager) and SIGHUP (the terminal closed) would otherwise end the
    # demo alone and leave its core and agent running.
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)
    setup_logging("INFO")
    base = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="servermanager-demo-"))
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(base, 0o700)
    exe = [sys.executable, "-m", "servermanager"]
    url = f"http://{args.listen}"
    env = dict(os.environ)
    core_dir, state_dir = base / "core", base / "agent"
    procs: list[subprocess.Popen[bytes]] = []
    desktop: subprocess.Popen[bytes] | None = None
    try:
        core = subprocess.Popen([*exe, "core", "--data-dir", str(core_dir), "--listen", args.listen], env=env)
        procs.append(core)
        _wait_health(url, core)
        token = subprocess.run(
            [*exe, "admin", "enroll-token", "--data-dir", str(core_dir), "--ttl", "10m"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout.strip()
        agent_env = dict(env, SM_AGENT_ENROLL_TOKEN=token)
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
        why_not = _why_no_desktop(args)
        if why_not:
            print(f"  Not opening the desktop app: {why_not}.\n", flush=True)
        else:
            # The password travels in the child's environment only: never argv (ps shows it), never a file.
            desktop = subprocess.Popen(
                [*exe, "desktop", "--core", url, "--demo-login"], env=dict(env, SM_DEMO_PASSWORD=password)
            )
        daemons = list(procs)
        while all(p.poll() is None for p in daemons):
            if desktop is not None and desktop.poll() is not None:
                if desktop.returncode == 0:
                    return 0  # quitting the app ends the demo
                print(
                    f"\n  The desktop app exited with code {desktop.returncode}; the core and the agent keep "
                    "running. Ctrl-C stops them.\n",
                    flush=True,
                )
                desktop = None
            time.sleep(0.5)
        return 1  # the core or the agent died: their logs above say why
    except KeyboardInterrupt:
        return 0
    finally:
        if desktop is not None:
            procs.append(desktop)
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if not args.data_dir:
            shutil.rmtree(base, ignore_errors=True)


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
