"""How the core process runs: logging, interpreter tuning, the event loop, and serving until stopped."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from servermanager.common import logs
from servermanager.core.settings import CoreSettings

if TYPE_CHECKING:
    from aiohttp import web

    from servermanager.core.store.db import Database
    from servermanager.core.tls import ServerTLS

log = logging.getLogger("servermanager")
# Libraries whose DEBUG lines would print what the core keeps secret; held at INFO even at DEBUG.
QUIET_LOGGERS = ("aiosqlite",)


def setup_logging(level: str) -> None:
    logs.setup(getattr(logging, level.upper(), logging.INFO))
    # aiosqlite logs every statement with its parameters at DEBUG: channel secrets among them.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))


# How long a stop waits for requests in flight before closing their connections.
SHUTDOWN_TIMEOUT = 3.0
# Connections the kernel queues while the event loop is busy (the kernel caps it at net.core.somaxconn).
# aiohttp's 128 overflowed when thousands of agents came back at once after a core restart: each dropped
# SYN costs its agent a 1 s, then 3 s, then 7 s retransmit, and the late ones arrive as the next storm.
LISTEN_BACKLOG = 4096

# A stop that takes longer than this is cut short (os._exit): a stuck thread or socket must never
# leave a core that looks "running" to its service manager after SIGTERM.
STOP_DEADLINE = SHUTDOWN_TIMEOUT + 7.0
# Exit statuses: 2 for what the operator must fix before a start can work (settings, data dir,
# port, database file), 1 for a core that had to stop while serving (its database broke).
EXIT_SETUP = 2
EXIT_FAILED = 1


class StartError(Exception):
    """The core cannot start; the message is the one line the operator reads (exit 2)."""


def serve(settings: CoreSettings) -> int:
    """Run the core until SIGTERM or SIGINT (0 after a clean shutdown); 2 when it cannot start, 1
    when it stopped by itself because its database cannot be written. Each failure is one line on
    stderr, never a traceback."""
    from servermanager.core.app import create_app
    from servermanager.core.datadir import data_dir, usable_data_dir
    from servermanager.core.tls import server_tls

    setup_logging(settings.log_level)
    raise_open_files_limit()
    # Said before anything starts, in one line: SQLite would only say "unable to open database file".
    folder = usable_data_dir(data_dir(settings))
    # Before serving: a certificate that cannot be used stops the core with a message (exit 2).
    tls = server_tls(settings, folder)
    tune_interpreter()
    app = create_app(settings)
    try:
        with asyncio.Runner(loop_factory=lambda: new_event_loop(settings.uvloop)) as runner:
            return runner.run(_serve(app, settings, tls))
    except StartError as exc:
        print(f"servermanager: {exc}", file=sys.stderr, flush=True)
        return EXIT_SETUP
    finally:
        # Whatever is left (a thread that will not end), SIGTERM must still end the process.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)


async def _serve(app: web.Application, settings: CoreSettings, tls: ServerTLS | None) -> int:
    import sqlite3

    from aiohttp import web

    from servermanager.core.app import STOP
    from servermanager.core.context import CORE
    from servermanager.core.datadir import DataDirBusy
    from servermanager.core.settings import redact_url
    from servermanager.core.tls import announce

    loop = asyncio.get_running_loop()
    stop = app[STOP]
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if not received:
            log.info("received %s, shutting down", sig.name)
            _stop_deadline(STOP_DEADLINE)
        received.append(sig)
        stop.set()

    installed = _install_signals(loop, on_signal)
    db: Database | None = None
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    try:
        try:
            await runner.setup()
        except DataDirBusy as exc:
            raise StartError(f"{exc}; stop it first (one data dir serves one core)") from None
        except (sqlite3.Error, RuntimeError, OSError) as exc:
            # RuntimeError: a schema newer than this core (schema.migrate_sync says so).
            where = f"in {settings.data_dir or 'the data dir'}" if settings.database == "sqlite" else ""
            raise StartError(
                f"cannot use the database {where or redact_url(settings.database)}: {exc}"
            ) from None
        site = web.TCPSite(
            runner,
            settings.host,
            settings.port,
            ssl_context=tls.context if tls else None,
            backlog=LISTEN_BACKLOG,
        )
        try:
            await site.start()
        except OSError as exc:
            raise StartError(_bind_error(settings.listen, exc)) from None
        # Only now: the port is ours, so "ready" and "listening" are true when said.
        announce(settings, tls)
        db = app[CORE].db
        log.info("core ready; database %s", db.path)
        await stop.wait()
        if db.fatal is not None and not received:
            _stop_deadline(STOP_DEADLINE)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    if db.fatal is not None:
        print(
            f"servermanager: the core stopped: its database {db.path} cannot be used ({db.fatal}); "
            "check the owner, mode and disk of the data dir, or restore a backup",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_FAILED
    log.info("core stopped cleanly")
    return 0


def _bind_error(listen: str, exc: OSError) -> str:
    import errno

    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {listen}: the port is in use (another core, or another program)"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {listen}: permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {listen}: no such address on this machine"
    return f"cannot listen on {listen}: {exc.strerror or exc}"


def _install_signals(
    loop: asyncio.AbstractEventLoop, on_signal: Callable[[signal.Signals], None]
) -> list[signal.Signals]:
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except NotImplementedError:
            # Windows event loops have no add_signal_handler; route the C-level handler instead.
            signal.signal(sig, lambda s, _f: loop.call_soon_threadsafe(on_signal, signal.Signals(s)))
    return installed


def _stop_deadline(seconds: float) -> None:
    """Cut a stop short after `seconds`: a daemon thread, so it also fires while the interpreter
    waits at exit for a thread that will never end."""

    def expire() -> None:
        sys.stderr.write(f"servermanager: the core did not stop within {seconds:.0f}s; exiting anyway\n")
        sys.stderr.flush()
        os._exit(EXIT_FAILED)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def raise_open_files_limit(want: int = 65536) -> int:
    """Every agent, client and SQLite file is a descriptor: a soft limit of 1,024 runs out under a
    few hundred silent sockets. Raise it to the hard limit (up to `want`) and say what it is."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d: %s", soft, exc)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        log.warning("open files limit is %d: raise it (LimitNOFILE=65536 in the service unit)", soft)
    else:
        log.info("open files limit %d", soft)
    return int(soft)


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
