"""How the core process runs: logging, interpreter tuning, the event loop, and serving until stopped."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys

from servermanager.common import logs
from servermanager.core.settings import CoreSettings

log = logging.getLogger("servermanager")
# Libraries whose DEBUG lines would print what the core keeps secret; held at INFO even at DEBUG.
QUIET_LOGGERS = ("aiosqlite",)


def setup_logging(level: str) -> None:
    logs.setup(getattr(logging, level.upper(), logging.INFO))
    # aiosqlite logs every statement with its parameters at DEBUG: channel secrets among them.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))


def serve(settings: CoreSettings) -> int:
    """Run the core until SIGTERM or SIGINT; 0 after a clean shutdown."""
    from aiohttp import web

    from servermanager.core.app import create_app
    from servermanager.core.datadir import data_dir
    from servermanager.core.tls import announce, server_tls

    setup_logging(settings.log_level)
    raise_open_files_limit()
    # Before serving: a certificate that cannot be used stops the core with a message (exit 2).
    tls = server_tls(settings, data_dir(settings))
    tune_interpreter()
    app = create_app(settings)
    announce(settings, tls)
    # run_app turns SIGTERM/SIGINT into a graceful shutdown; returning normally means exit 0.
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        ssl_context=tls.context if tls else None,
        access_log=None,
        shutdown_timeout=5,
        loop=new_event_loop(settings.uvloop),
    )
    return 0


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
