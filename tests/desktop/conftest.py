"""Desktop fixtures: one qasync loop per test shared by a real core, the app and RawAgents; a memory keyring."""

from __future__ import annotations

import os

# Before anything creates the QApplication: no display here, and none needed.
os.environ["QT_QPA_PLATFORM"] = "offscreen"

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import keyring
import pytest
import qasync
from aiohttp import web
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from devkit.cores import RunningCore
from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from servermanager.core.datadir import initial_admin_password
from servermanager.desktop.context import AppContext
from servermanager.desktop.main import configure
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.net.rest import Session
from servermanager.desktop.settings import Profile
from servermanager.desktop.window import MainWindow
from tests.helpers.core import RawAgent

T = TypeVar("T")
Run = Callable[..., Any]

# Agents in these tests are silent between samples; a long interval keeps the core from
# timing them out mid-test, so "offline" happens only when a test closes an agent.
CORE_SETTINGS = {"agent_interval": 60.0}


class MemoryKeyring(KeyringBackend):
    """A real keyring backend (keyring's own API) that keeps secrets in a dict."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}
        self.writes = 0

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.writes += 1
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.items:
            raise PasswordDeleteError("not found")
        del self.items[(service, username)]


@pytest.fixture
def keyring_backend() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


@pytest.fixture(scope="session")
def qt_loop(qapp: QApplication) -> Iterator[qasync.QEventLoop]:
    """One qasync loop for every desktop test, as the app has one for its whole life.

    It is created "already running": whoever processes Qt events (qtbot.waitUntil, or pytest-qt
    between test phases) also runs asyncio callbacks. Stopping it calls QApplication.exit(),
    after which every QEventLoop.exec() (pytest-qt's waits) returns at once, so it is stopped
    only when the session ends.
    """
    configure(qapp)  # as in the app: closing the last window must not quit Qt
    ev = qasync.QEventLoop(qapp, already_running=True)
    asyncio.events._set_running_loop(None)  # "running" only inside desktop tests: see loop()
    try:
        yield ev
    finally:
        ev.stop()
        ev.close()


@pytest.fixture
def loop(qt_loop: qasync.QEventLoop, qtbot: QtBot) -> Iterator[qasync.QEventLoop]:
    """The shared loop, marked running for this test only; the test's leftover tasks are cancelled.

    Other test folders run pytest-asyncio loops in the same process, which refuse to start
    while another loop counts as running in this thread.
    """
    asyncio.set_event_loop(qt_loop)
    asyncio.events._set_running_loop(qt_loop)
    try:
        yield qt_loop
    finally:
        pending = [t for t in asyncio.all_tasks(qt_loop) if not t.done()]
        for task in pending:
            task.cancel()
        qtbot.waitUntil(lambda: all(t.done() for t in pending), timeout=5000)
        asyncio.events._set_running_loop(None)
        asyncio.set_event_loop(None)


@pytest.fixture
def run(loop: qasync.QEventLoop, qtbot: QtBot) -> Run:
    """run(coro, timeout=10): let Qt and asyncio run until coro is done, and return its result."""

    def _run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        task = loop.create_task(asyncio.wait_for(coro, timeout))
        qtbot.waitUntil(task.done, timeout=int(timeout * 1000) + 1000)
        return task.result()

    return _run


async def until(pred: Callable[[], object], what: str = "condition", timeout: float = 8.0) -> None:
    """Wait for a condition while the loop (and Qt) keep running; fail with its name on timeout."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Cores:
    """The test's core; restartable on the same port and data dir, optionally refusing /ws/client."""

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        self.data_dir = data_dir
        self.settings = {**CORE_SETTINGS, **settings}  # tls="on": served over HTTPS/WSS
        self.core: RunningCore | None = None
        self.block_ws = False
        self.requests: list[str] = []  # path and query of every request the core got, in order

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        # Like a proxy that does not pass WebSockets: REST works, the live socket does not.
        if self.block_ws and request.path == p.CLIENT_WS_PATH:
            raise web.HTTPBadGateway(text="websockets blocked by the test")
        return await handler(request)

    async def start(self, port: int | None = None) -> RunningCore:
        core = RunningCore(self.data_dir, port=port, **self.settings)
        core.app.middlewares.append(self._gate)
        # The core closes agent sockets on shutdown but leaves client sockets to the server's
        # shutdown timeout (5 s in `servermanager core`); keep that short here.
        core.runner = web.AppRunner(core.app, handle_signals=False, shutdown_timeout=0.3)
        self.core = await core.start()
        return core

    async def stop(self) -> None:
        if self.core is not None:
            await self.core.stop()

    async def restart(self) -> RunningCore:
        assert self.core is not None
        port = self.core.port
        await self.core.stop()
        return await self.start(port)

    @property
    def c(self) -> RunningCore:
        assert self.core is not None
        return self.core


@pytest.fixture
def cores(run: Run, tmp_path: Path) -> Iterator[Cores]:
    box = Cores(tmp_path / "core")
    run(box.start())
    try:
        yield box
    finally:
        run(close_agents())
        run(box.stop())


@pytest.fixture
def core(cores: Cores) -> RunningCore:
    return cores.c


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    return tmp_path / "desktop.ini"


def make_ctx(qapp: QApplication, settings_file: Path) -> AppContext:
    store = QSettings(str(settings_file), QSettings.Format.IniFormat)
    return AppContext.create(qapp, store, backoff=(0.1, 0.5), ping_every=0.3, request_timeout=3.0)


@pytest.fixture
def ctx(qapp: QApplication, run: Run, settings_file: Path, cores: Cores) -> Iterator[AppContext]:
    # Depends on cores so that the app closes its sockets before the core stops.
    context = make_ctx(qapp, settings_file)
    try:
        yield context
    finally:
        run(context.close())


@pytest.fixture
def window(ctx: AppContext, run: Run) -> Iterator[MainWindow]:
    win = MainWindow(ctx)
    win.resize(1200, 700)
    try:
        yield win
    finally:
        win._quitting = True
        win.close()
        win.deleteLater()


def admin_password(core: RunningCore) -> str:
    return initial_admin_password(core.data_dir)


def profile_for(core: RunningCore, username: str = "admin", name: str = "Test core") -> Profile:
    return Profile(name=name, url=core.url, auth="password", username=username)


async def sign_in(ctx: AppContext, core: RunningCore, *, remember: bool = True) -> Session:
    """Sign in as admin and wait until the live socket has delivered its snapshot."""
    session = await ctx.signin.sign_in(profile_for(core), admin_password(core), remember=remember)
    await until(lambda: ctx.live.state == LinkState.CONNECTED, "the live socket")
    return session


# Every RawAgent a test connects; the cores fixture closes them, so no socket outlives its test.
_AGENTS: list[RawAgent] = []


async def enrolled(core: RunningCore, name: str, cpu: float = 10.0, **metrics: Any) -> RawAgent:
    agent = RawAgent(core, name)
    _AGENTS.append(agent)
    await agent.hello(token=await core.enroll_token())
    await agent.send_samples(agent.make(1, cpu=cpu, **metrics))
    return agent


async def reconnected(core: RunningCore, agent: RawAgent) -> RawAgent:
    """The same node coming back (to this core) with the credential it enrolled with."""
    again = RawAgent(core, agent.name)
    _AGENTS.append(again)
    again.credential = agent.credential
    await again.hello()
    return again


async def close_agents() -> None:
    while _AGENTS:
        await _AGENTS.pop().close()


# ------------------------------------------------------------------ one more row of the metric table
#
# What adding a scalar metric looks like to the desktop: a table row that names a chart family, a
# fleet column and a meter, and readings from an agent that sends it.

GPU = mt.Field(
    "gpu_pct", mt.Unit.PERCENT, 2, "GPU", "GPU busy, percent", family="cpu", column="GPU", meter=True
)
WITH_GPU = (*mt.FIELDS, GPU)


class GpuMetrics(mt.Metrics, frozen=True, gc=False):
    """A reading from an agent that knows the extra row."""

    gpu_pct: float | None = None


def with_gpu(m: mt.MetricsBase, gpu_pct: float | None) -> GpuMetrics:
    return GpuMetrics(**{f: getattr(m, f) for f in mt.Metrics.__struct_fields__}, gpu_pct=gpu_pct)
