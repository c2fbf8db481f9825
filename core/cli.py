"""The `servermanager` command: core, agent, desktop, demo and admin subcommands."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.cli import add_arguments as agent_arguments
from core.settings import CoreSettings, SettingsError, load_settings, parse_duration

# A module that only one subcommand needs (getpass, tempfile, urllib.request) is imported
# inside it: `servermanager agent` starts here too, and every import stays in the agent's RSS.

log = logging.getLogger("servermanager")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _core_settings(args: argparse.Namespace) -> CoreSettings:
    return load_settings(
        CoreSettings,
        env_prefix="SM_CORE_",
        config_file=args.config,
        overrides={"data_dir": args.data_dir, "listen": getattr(args, "listen", None)},
    )


def cmd_core(args: argparse.Namespace) -> int:
    from aiohttp import web

    from core.app import create_app

    settings = _core_settings(args)
    setup_logging(settings.log_level)
    tune_interpreter()
    app = create_app(settings)
    log.info("core listening on http://%s:%d", settings.host, settings.port)
    # run_app turns SIGTERM/SIGINT into a graceful shutdown; returning normally means exit 0.
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=5,
        loop=new_event_loop(settings.uvloop),
    )
    return 0


def tune_interpreter() -> None:
    """Process-wide settings for a hub that serves thousands of sockets (docs/benchmarks.md)."""
    # At CPython's default (a young collection per 700 allocations) the core collected hundreds of
    # times a second at fleet scale, promoting every in-flight sample to the old generation; the
    # full collections that followed scanned all it holds and stalled the loop ~200 ms every few
    # seconds at 2,500 agents.
    gc.set_threshold(100_000, 20, 10)
    # What exists before serving (modules, settings) never needs scanning again.
    gc.freeze()
    # SQLite's threads give up the GIL around each statement step; beside a busy event loop each
    # then waits up to the switch interval to get it back. 1 ms instead of 5 keeps reads quick.
    sys.setswitchinterval(0.001)


def new_event_loop(prefer_uvloop: bool) -> asyncio.AbstractEventLoop:
    """uvloop where installed and wanted: its C transports and timers roughly halve the core's
    per-frame cost at fleet scale (docs/benchmarks.md); plain asyncio otherwise."""
    if prefer_uvloop:
        try:
            import uvloop
        except ImportError:
            log.info("uvloop is not installed; using asyncio's event loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def cmd_agent(args: argparse.Namespace) -> int:
    from agent.cli import run_from_args

    return run_from_args(args)


def cmd_desktop(args: argparse.Namespace) -> int:
    try:
        from desktop.main import main as desktop_main  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        print(f"the desktop app is not available in this install: {exc}", file=sys.stderr)
        return 2
    return int(desktop_main(args))


# ---------------------------------------------------------------- admin


def _admin_core(args: argparse.Namespace) -> Any:
    """Open the core's services on its data dir for one admin action (no server started)."""
    from core.app import data_dir
    from core.auth import EnrollTokens, Users
    from core.db import DB_FILENAME, Database

    settings = _core_settings(args)
    folder = data_dir(settings)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(folder / DB_FILENAME)
    return settings, db, Users, EnrollTokens


def _read_password(args: argparse.Namespace) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    import getpass

    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("passwords differ")
    return first


def cmd_create_user(args: argparse.Namespace) -> int:
    from core.auth import Role

    settings, db, users_cls, _ = _admin_core(args)
    password = _read_password(args)

    async def run() -> int:
        await db.open()
        try:
            users = users_cls(db, settings.access_token_ttl, settings.refresh_token_ttl)
            await users.create(args.name, password, Role(args.role))
        finally:
            await db.close()
        return 0

    try:
        asyncio.run(run())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"user {args.name!r} created with role {args.role}")
    return 0


def cmd_enroll_token(args: argparse.Namespace) -> int:
    _, db, _, enroll_cls = _admin_core(args)
    ttl = parse_duration(args.ttl)

    async def run() -> str:
        await db.open()
        try:
            return str(await enroll_cls(db).create(ttl, args.uses))
        finally:
            await db.close()

    print(asyncio.run(run()))
    return 0


def cmd_api_token(args: argparse.Namespace) -> int:
    """A script's token belongs to a service user of its own, so its role is its own too."""
    import secrets

    from core.auth import Role, TokenKind

    settings, db, users_cls, _ = _admin_core(args)

    async def run() -> str:
        await db.open()
        try:
            users = users_cls(db, settings.access_token_ttl, settings.refresh_token_ttl)
            row = await db.fetchone("SELECT id, role FROM users WHERE name = ?", (args.name,))
            if row is None:
                uid = await users.create(args.name, secrets.token_urlsafe(24), Role(args.role))
            elif row[1] != args.role:
                raise ValueError(f"user {args.name!r} exists with role {row[1]}, not {args.role}")
            else:
                uid = row[0]
            token, _ = await users.issue(uid, TokenKind.API, args.name)
            return str(token)
        finally:
            await db.close()

    try:
        print(asyncio.run(run()))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from core.app import data_dir
    from core.db import DB_FILENAME

    src = data_dir(_core_settings(args)) / DB_FILENAME
    if not src.exists():
        print(f"error: no database at {src}", file=sys.stderr)
        return 1
    dest = Path(args.file)
    # SQLite's online backup copies a consistent snapshot while the core keeps writing.
    with sqlite3.connect(src) as s, sqlite3.connect(dest) as d:
        s.backup(d)
    os.chmod(dest, 0o600)
    print(f"backup written to {dest}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from core.app import data_dir
    from core.db import DB_FILENAME, SCHEMA_VERSION, migrate_sync

    src = Path(args.file)
    try:
        with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as con:
            ok = con.execute("PRAGMA integrity_check").fetchone()[0]
            version = con.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        print(f"error: {src} is not a usable backup: {exc}", file=sys.stderr)
        return 1
    if ok != "ok" or version > SCHEMA_VERSION:
        print(f"error: {src} failed its check ({ok}, schema {version})", file=sys.stderr)
        return 1
    folder = data_dir(_core_settings(args))
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = folder / DB_FILENAME
    tmp = folder / (DB_FILENAME + ".restore")
    with sqlite3.connect(src) as s, sqlite3.connect(tmp) as d:
        s.backup(d)
    for suffix in ("-wal", "-shm"):
        Path(str(dest) + suffix).unlink(missing_ok=True)
    os.replace(tmp, dest)
    migrate_sync(dest)
    print(f"restored {src} into {dest}; start the core again")
    return 0


# ---------------------------------------------------------------- demo


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


def cmd_demo(args: argparse.Namespace) -> int:
    """Core + one local agent on a throwaway data dir; the desktop app joins once it exists."""
    import signal
    import tempfile

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
    exe = [sys.executable, "-m", "core.cli"]
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
        procs.append(
            subprocess.Popen(
                [*exe, "agent", "--core", url, "--state-dir", str(state_dir), "--interval", "2"],
                env=agent_env,
            )
        )
        password = (core_dir / "initial-admin-password").read_text().strip()
        print(
            "\n  Server Manager demo is running.\n"
            f"    core:     {url}   (data in {base})\n"
            f"    login:    admin / {password}\n"
            f"    try:      curl -s -X POST {url}/api/v1/auth/login -H 'Content-Type: application/json' "
            f'-d \'{{"username":"admin","password":"{password}"}}\'\n'
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


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="servermanager", description="Server Manager: fleet monitoring and operations"
    )
    sub = ap.add_subparsers(dest="cmd", required=True)

    def core_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML config file (env SM_CORE_CONFIG)")
        p.add_argument("--data-dir", help="directory of the core's database")

    p = sub.add_parser("core", help="run the core daemon")
    core_opts(p)
    p.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8760)")
    p.set_defaults(fn=cmd_core)

    p = sub.add_parser("agent", help="run the agent daemon")
    agent_arguments(p)
    p.set_defaults(fn=cmd_agent)

    p = sub.add_parser("desktop", help="open the desktop app")
    p.add_argument("--core", help="core URL to connect to")
    p.add_argument("--demo-login", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_desktop)

    p = sub.add_parser("demo", help="core, a local agent and the desktop app on a throwaway data dir")
    p.add_argument("--listen", default="127.0.0.1:8760")
    p.add_argument("--data-dir", help="keep the demo's data here instead of a temporary dir")
    p.add_argument("--no-desktop", action="store_true", help="do not open the desktop app")
    p.set_defaults(fn=cmd_demo)

    adm = sub.add_parser("admin", help="administer the core's data dir").add_subparsers(
        dest="admin", required=True
    )
    p = adm.add_parser("create-user", help="create a user; the password comes from stdin or a prompt")
    core_opts(p)
    p.add_argument("name")
    p.add_argument("--role", choices=["admin", "operator", "viewer"], required=True)
    p.set_defaults(fn=cmd_create_user)
    p = adm.add_parser("enroll-token", help="print a new agent enrollment token")
    core_opts(p)
    p.add_argument("--ttl", default="1h", help="lifetime, e.g. 30m, 1h, 7d")
    p.add_argument("--uses", type=int, default=1, help="how many agents may enroll with it")
    p.set_defaults(fn=cmd_enroll_token)
    p = adm.add_parser("api-token", help="print a long-lived API token for scripts")
    core_opts(p)
    p.add_argument("name")
    p.add_argument("--role", choices=["admin", "operator", "viewer"], required=True)
    p.set_defaults(fn=cmd_api_token)
    p = adm.add_parser("backup", help="online backup of the database to FILE")
    core_opts(p)
    p.add_argument("file")
    p.set_defaults(fn=cmd_backup)
    p = adm.add_parser("restore", help="restore the database from FILE (stop the core first)")
    core_opts(p)
    p.add_argument("file")
    p.set_defaults(fn=cmd_restore)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except SettingsError as exc:
        print(f"servermanager: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
