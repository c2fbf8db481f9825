"""The aiohttp application factory: services, routes in one place, background jobs as cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from servermanager.common.protocol import AGENT_WS_PATH, CLIENT_WS_PATH, CloseCode
from servermanager.common.tasks import stop_tasks
from servermanager.core.alerts.channels import Channels
from servermanager.core.alerts.engine import AlertEngine
from servermanager.core.alerts.incidents import Incidents
from servermanager.core.alerts.outbox import Outbox
from servermanager.core.audit import Audit
from servermanager.core.auth import EnrollTokens, LoginThrottle, Role, SlidingWindow, Users
from servermanager.core.bus import Bus
from servermanager.core.clients import Handshakes
from servermanager.core.commands import Commands
from servermanager.core.context import CORE, Core
from servermanager.core.datadir import DB_FILENAME, INITIAL_PASSWORD_FILE, DataDirLock, data_dir
from servermanager.core.http.api import ROUTES
from servermanager.core.http.prometheus import metrics_handler
from servermanager.core.http.routing import BAD_REQUEST_LOG, add_routes, errors_middleware
from servermanager.core.logs import LogRelay
from servermanager.core.nodes import WATCHDOG_EVERY, Nodes
from servermanager.core.settings import CoreSettings
from servermanager.core.store.backend import database_for
from servermanager.core.store.db import Database, StorageFull, is_fatal
from servermanager.core.store.samples import SampleStore
from servermanager.core.ws.agent_gateway import agent_ws
from servermanager.core.ws.client_gateway import client_ws

if TYPE_CHECKING:
    from servermanager.core.cluster import Cluster

log = logging.getLogger(__name__)

# Set when the core must stop by itself: its database cannot be written (see Database.fatal). The
# process that serves the app (runtime.serve) waits on it beside SIGTERM and then exits non-zero.
STOP = web.AppKey("stop", asyncio.Event)


async def _first_admin(core: Core, folder: Path) -> None:
    """On first start, make an admin and leave its password in a 0600 file, never in the log."""
    if await core.users.count():
        return
    password = secrets.token_urlsafe(12)
    uid = await core.users.create("admin", password, Role.ADMIN)
    # A password that sat in a file is asked to be changed at the first sign-in.
    await core.db.execute("UPDATE users SET must_change_password = 1 WHERE id = ?", (uid,))
    path = folder / INITIAL_PASSWORD_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    log.warning(
        "created user 'admin'; its password is in %s (readable only by you). "
        "Log in, then delete that file or set a new password.",
        path,
    )


def _job(
    every: Callable[[], float],
    fn: Callable[[], Awaitable[object]],
    name: str,
    leads: Callable[[], bool] | None = None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A periodic background job as a cleanup context: started with the app, cancelled with it.
    With `leads`, it runs only while that says this core leads the cluster (once per cluster)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(every())
            if leads is not None and not leads():
                continue
            try:
                await fn()
            except StorageFull:
                pass  # the database said so once; the job tries again next time
            except Exception as exc:
                if is_fatal(exc):
                    continue  # the database said so once, and the core is stopping
                log.exception("background job %s failed; will retry", name)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(loop(), name=name)
        yield
        await stop_tasks(task)  # a job on PostgreSQL or Redis may lose its first cancel

    return ctx


def _task(
    run: Callable[[], Coroutine[Any, Any, object]], name: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A long-running background task as a cleanup context: started with the app, cancelled with it."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run(), name=name)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


def _leader_task(
    run: Callable[[], Coroutine[Any, Any, object]], leads: Callable[[], bool], name: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A long-running task that runs only while this core leads the cluster: started when it takes
    the lead, cancelled when it loses it."""

    async def watch() -> None:
        task: asyncio.Task[object] | None = None
        try:
            while True:
                if leads() and task is None:
                    task = asyncio.create_task(run(), name=name)
                elif not leads() and task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    task = None
                await asyncio.sleep(0.25)
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return _task(watch, f"{name}-leader")


async def _cluster(app: web.Application) -> AsyncIterator[None]:
    """With a Redis bus: connect, then route other cores' frames and node changes into this core's
    services; let go of the cluster's keys at the end, so the others take over at once."""
    core = app[CORE]
    cluster = core.cluster
    await core.bus.start()
    if cluster is not None:
        from servermanager.core.cluster import wire

        wire(core, cluster)
        await cluster.start()
    yield
    if cluster is not None:
        await cluster.stop()
    await core.bus.stop()


async def _alerting(app: web.Application) -> AsyncIterator[None]:
    """The alert engine: open alerts loaded before agents connect; its writes drained before the
    database closes (cleanup contexts unwind in reverse)."""
    alerts = app[CORE].alerts
    alerts.on_outbox = app[CORE].outbox.notify  # new rows go out without waiting for the next pass
    alerts.on_fire = app[CORE].incidents.alert_fired  # a fired alert asks its agent for a snapshot
    await alerts.load()
    await alerts.start()
    yield
    await app[CORE].incidents.close()  # snapshots being stored wait for the engine's writes
    await alerts.stop()


async def _alerting_shutdown(app: web.Application) -> None:
    # Agents cut off by our own shutdown are not offline: open no offline alerts for them.
    app[CORE].alerts.shutting_down = True


def _bus(settings: CoreSettings) -> Bus:
    if not settings.clustered:
        return Bus()
    # Imported only here: a core on its own never loads the Redis client.
    from servermanager.core.redisbus import RedisBus

    core_id = settings.core_id or f"{socket.gethostname()}:{settings.port}:{secrets.token_hex(3)}"
    return RedisBus(settings.bus, settings.bus_prefix, core_id)


def _cluster_of(bus: Bus, nodes: Nodes, settings: CoreSettings) -> Cluster | None:
    if not settings.clustered:
        return None
    from servermanager.core.cluster import Cluster
    from servermanager.core.redisbus import RedisBus

    assert isinstance(bus, RedisBus)
    return Cluster(bus, nodes, settings.bus_ttl)


def create_app(settings: CoreSettings) -> web.Application:
    logging.getLogger("aiohttp.server").addFilter(BAD_REQUEST_LOG)  # once per process: addFilter dedups
    app = web.Application(middlewares=[errors_middleware], client_max_size=settings.max_frame_bytes)
    app[STOP] = asyncio.Event()
    folder = data_dir(settings)

    async def services(app: web.Application) -> AsyncIterator[None]:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Held while this core uses the data dir: a second core, or a restore, is refused.
        lock = DataDirLock(folder).acquire()
        db = database_for(settings.database, folder / DB_FILENAME)
        try:
            await _open_services(app, db)
        except BaseException:
            await db.close()  # its threads would keep the process from ever ending
            lock.release()
            raise
        store = app[CORE].store
        writer = asyncio.create_task(store.run(), name="sample-writer")
        yield
        try:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if db.fatal is None:  # else every write would fail again, each with its own error
                await store.drain()
                try:
                    await store.settle()
                except Exception:  # the head stays queryable and settles on the next start's first rollup
                    log.exception("could not settle the sample head at shutdown")
                await app[CORE].nodes.persist_last_seen()
        finally:
            await db.close()
            lock.release()

    async def _open_services(app: web.Application, db: Database) -> None:
        await db.open()
        db.on_fatal = lambda exc: app[STOP].set()
        store = SampleStore(
            db, settings.flush_every, day_cache_bytes=int(settings.history_cache_mb * (1 << 20))
        )
        bus = _bus(settings)
        nodes = Nodes(db, store, bus)
        audit = Audit(db)
        channels = Channels(db)
        alerts = AlertEngine(db, nodes, bus, settings)
        core = Core(
            settings=settings,
            db=db,
            users=Users(db, settings.access_token_ttl, settings.refresh_token_ttl),
            enroll=EnrollTokens(db),
            store=store,
            bus=bus,
            nodes=nodes,
            audit=audit,
            throttle=LoginThrottle(settings.login_max_failures, settings.login_window),
            commands=Commands(db, nodes, bus, audit),
            command_limit=SlidingWindow(settings.commands_per_minute, 60.0),
            alerts=alerts,
            channels=channels,
            outbox=Outbox(db, channels, settings),
            incidents=Incidents(db, nodes, alerts),
            logs=LogRelay(nodes),
            handshakes=Handshakes(settings.max_unauthenticated),
            cluster=_cluster_of(bus, nodes, settings),
        )
        await core.nodes.load()
        await _first_admin(core, folder)
        app[CORE] = core

    async def close_sockets(app: web.Application) -> None:
        # Agents reconnect to the next core; tell them it is going away rather than just dropping.
        core = app[CORE]
        for st in list(core.nodes.nodes.values()):
            if st.link is not None and st.here:  # another core's agents stay where they are
                await st.link.close(CloseCode.GOING_AWAY, "core shutting down")
        # Desktop clients too, or each would hold the shutdown for its whole timeout.
        await core.clients.close_all(CloseCode.GOING_AWAY, "core shutting down")

    def core_of() -> Core:
        return app[CORE]

    def leads() -> bool:
        return core_of().leads()

    app.cleanup_ctx.append(services)
    app.cleanup_ctx.append(_cluster)
    app.cleanup_ctx.append(
        _job(lambda: settings.rollup_every, lambda: core_of().store.rollup_pass(), "rollup", leads)
    )
    app.cleanup_ctx.append(
        _job(
            lambda: settings.prune_every,
            lambda: core_of().store.prune(
                {
                    "raw": settings.retention_raw,
                    "1m": settings.retention_1m,
                    "1h": settings.retention_1h,
                    "processes": settings.retention_processes,
                    "containers": settings.retention_containers,
                }
            ),
            "retention",
            leads,
        )
    )
    app.cleanup_ctx.append(_job(lambda: 30.0, lambda: core_of().nodes.persist_last_seen(), "last-seen"))
    app.cleanup_ctx.append(_job(lambda: 1.0, lambda: core_of().nodes.flush(), "node-updates"))
    app.cleanup_ctx.append(_job(lambda: 1.0, lambda: core_of().commands.sweep(), "command-sweep"))
    app.cleanup_ctx.append(
        _job(
            lambda: WATCHDOG_EVERY,
            lambda: core_of().nodes.watchdog(core_of().heartbeat_timeout),
            "heartbeat-watchdog",
        )
    )
    app.cleanup_ctx.append(
        _job(lambda: 3600.0, lambda: core_of().users.purge_expired(), "token-purge", leads)
    )
    app.cleanup_ctx.append(
        _job(lambda: 1.0, lambda: core_of().clients.recheck(core_of().users), "client-token-recheck")
    )
    if settings.clustered:
        app.cleanup_ctx.append(_leader_task(lambda: core_of().outbox.run(), leads, "alert-outbox"))
    else:
        app.cleanup_ctx.append(_task(lambda: core_of().outbox.run(), "alert-outbox"))
    app.cleanup_ctx.append(_alerting)
    app.cleanup_ctx.append(_job(lambda: 1.0, lambda: core_of().incidents.sweep(), "incident-timeouts"))
    app.cleanup_ctx.append(
        _job(lambda: settings.prune_every, lambda: core_of().alerts.prune(), "alert-retention", leads)
    )
    app.on_shutdown.append(_alerting_shutdown)
    app.on_shutdown.append(close_sockets)

    add_routes(app, ROUTES)
    app.router.add_get(AGENT_WS_PATH, agent_ws)
    app.router.add_get(CLIENT_WS_PATH, client_ws)
    app.router.add_get("/metrics", metrics_handler)
    return app
