"""Shared fixtures: a real core on loopback with a real SQLite file, or just its database.

With SM_DEVKIT_POSTGRESQL set to a PostgreSQL server's URL (postgresql://postgres@127.0.0.1:5432),
every RunningCore (devkit/cores.py) and the `db` fixture are on a fresh PostgreSQL database of their
own instead, so the tests using them run on the other backend unchanged.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import threading
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.cores import RunningCore
from servermanager.core.store.db import Database
from tests.helpers.pg import create_database, drop_database

# Seconds before pytest-timeout's limit at which a test still running has its asyncio tasks printed.
TASK_DUMP_LEAD = 10.0


def _await_chain(task: asyncio.Task[object]) -> list[str]:
    """Where a task waits, outermost first: each coroutine it awaits, down to the last future (the
    task's own stack shows only the outermost frame)."""
    out: list[str] = []
    aw: object = task.get_coro()
    while aw is not None and len(out) < 40:
        frame = (
            getattr(aw, "cr_frame", None) or getattr(aw, "gi_frame", None) or getattr(aw, "ag_frame", None)
        )
        if frame is None:
            out.append(f"  awaiting {aw!r:.200}")
            break
        out.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        aw = (
            getattr(aw, "cr_await", None)
            or getattr(aw, "gi_yieldfrom", None)
            or getattr(aw, "ag_await", None)
        )
    return out


def _print_tasks(loop: asyncio.AbstractEventLoop, nodeid: str) -> None:
    """Every task of `loop` and where each waits: pytest-timeout's thread stacks show only that the
    loop is idle in select(), not which await never ends."""
    tasks = asyncio.all_tasks(loop)
    print(f"\n+++ {nodeid}: {len(tasks)} asyncio tasks near the timeout +++", file=sys.stderr)
    for task in sorted(tasks, key=lambda t: t.get_name()):
        print(f"--- {task!r:.300}", file=sys.stderr)
        print("\n".join(_await_chain(task)), file=sys.stderr)


def _dump_running_loops(nodeid: str) -> None:
    # Runs in a timer thread while the test's loop is blocked in select(): the loop is found among
    # live objects and asked, thread-safely, to print its own tasks.
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.AbstractEventLoop) and obj.is_running():
            obj.call_soon_threadsafe(_print_tasks, obj, nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    # The whole item, as pytest-timeout counts it: setup, call and teardown (a fixture's teardown
    # that stops two cores can hang as well).
    marker = item.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout") or 0)
    timer = None
    if limit > TASK_DUMP_LEAD:
        timer = threading.Timer(limit - TASK_DUMP_LEAD, _dump_running_loops, args=(item.nodeid,))
        timer.daemon = True
        timer.start()
    try:
        return (yield)
    finally:
        if timer is not None:
            timer.cancel()


def _qt_application() -> Any:
    """This worker's QApplication, if a desktop test made one (Qt is never imported here)."""
    widgets = sys.modules.get("PySide6.QtWidgets")
    return widgets.QApplication.instance() if widgets is not None else None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    """No automatic cycle collection in a desktop test, nor in any test after one on this worker,
    as in the app (desktop.main).

    The collector runs wherever Python allocates: in a worker thread (a core's scrypt, SQLite and
    to_thread workers) it can destroy a Qt object there, and inside a paint or a timer dispatch it
    can destroy pyqtgraph items the scene is still walking. Both crash Qt. A desktop test's Qt
    objects can also become garbage after it: a core test that ran next on the same worker crashed
    in pytest-qt's event processing (CI, 2026-12-03). The app collects on a timer in the GUI
    thread; a test collects when it ends (pytest_runtest_teardown).
    """
    if item.nodeid.startswith("tests/desktop/") or _qt_application() is not None:
        gc.disable()
    return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    """Free the test's Qt objects at one known point, on the main thread; automatic collection
    comes back only on a worker that has no QApplication.

    Collected first: widgets only reference cycles keep alive are destroyed by their owner, Python,
    before pytest-qt closes and deleteLater()s the widgets it was given. Deferred deletes are then
    run here: outside an event loop nothing runs them, and left pending they would run inside a
    later test's wait, deleting objects whose Python side is still reachable.
    """
    if gc.isenabled():
        return (yield)
    gc.collect()
    try:
        return (yield)
    finally:
        app = _qt_application()
        if app is not None:
            app.sendPostedEvents(None, sys.modules["PySide6.QtCore"].QEvent.Type.DeferredDelete)
        _collect_as_this_tests(item.nodeid)
        if app is None:
            gc.enable()


def _collect_as_this_tests(nodeid: str) -> None:
    """A full collection whose finalizer errors (an unclosed socket's ResourceWarning) fail this test.

    This collection runs after pytest's own check of the teardown, which would report them in the
    next test on the worker instead (CI, 2026-12-03: an unclosed TLS server transport of some earlier
    test failed tests/agent/link/test_wire.py, which uses no TLS).
    """
    caught: list[str] = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: caught.append(f"{u.exc_type.__name__}: {u.exc_value}")
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook
    if caught:
        raise AssertionError(f"{nodeid} left objects that failed to finalize: " + "; ".join(caught))


# Test files whose tests share one costly fixture, each kept on one xdist worker (`dev.py test` runs
# one worker per CPU): a module- or session-scoped fixture is set up once per worker, so the deb
# packages (built once for every packaging file), the desktop bundle and the extras' venvs would
# otherwise be built twice, side by side, in the same cache directories.
_ONE_WORKER = {
    "tests/packaging/test_desktop_bundle.py": "desktop-bundle",
    "tests/packaging/": "packaging",
    "tests/test_extras.py": "extras",
    "tests/core/alerts/test_mail.py": "mail",
    "tests/agent/test_containers.py": "containers",
    "tests/desktop/test_containers.py": "containers",
}


def one_worker_group(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]
    return next((group for prefix, group in _ONE_WORKER.items() if path.startswith(prefix)), None)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Each test is a unit of its own, except those of a `_ONE_WORKER` group, which go together.

    Not xdist's `--dist loadgroup` with `xdist_group` marks: it renames each test by setting
    `item._nodeid`, which pytest 9.2 no longer reads, so the marks group nothing.
    """
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return one_worker_group(nodeid) or nodeid

        def remove_node(self, node: Any) -> str | None:
            """A crashed worker's unfinished units go back to the queue, and only those.

            xdist 3.8's own version re-queues every unit the worker ever ran, finished ones too;
            its replacement is then sent an empty batch, never reports back and the run hangs
            (seen after a Qt crash in a desktop test). The crashed test is reported failed by
            xdist and, as under `--dist load`, not run again.
            """
            workload = self.assigned_work.pop(node)
            unfinished = {scope: unit for scope, unit in workload.items() if not all(unit.values())}
            if not unfinished:
                return None
            unit = next(iter(unfinished.values()))
            crashitem = next(nodeid for nodeid, done in unit.items() if not done)
            unit[crashitem] = True
            self.workqueue.update(
                (scope, unit) for scope, unit in unfinished.items() if not all(unit.values())
            )
            for other in self.assigned_work:
                self._reschedule(other)
            return crashitem

    return GroupScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def _drop_postgresql_databases() -> Iterator[None]:
    """The PostgreSQL databases of the session's cores (SM_DEVKIT_POSTGRESQL), dropped at its end."""
    yield
    if os.environ.get("SM_DEVKIT_POSTGRESQL"):
        from devkit.cores import drop_postgresql_databases

        asyncio.run(drop_postgresql_databases())


@pytest.fixture
async def core_server(tmp_path: Path) -> AsyncIterator[RunningCore]:
    server = await RunningCore(tmp_path / "core").start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def real_core(tmp_path: Path) -> AsyncIterator[RunningCore]:
    """A core for real agents: agent_interval=0 lets each agent keep its own (fast) interval."""
    server = await RunningCore(tmp_path / "core", agent_interval=0.0).start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """The core's database, migrated and open, on a file of its own."""
    if not os.environ.get("SM_DEVKIT_POSTGRESQL"):
        database = Database(tmp_path / "core.db")
        await database.open()
        try:
            yield database
        finally:
            await database.close()
        return
    from servermanager.core.store.pg import PgDatabase

    url = await create_database()
    pg = PgDatabase(url)
    try:
        await pg.open()
        yield pg
    finally:
        await pg.close()
        await drop_database(url)


@pytest.fixture(scope="session")
def agent_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The agent package as a core without `agent_package` builds it (pip wheel of this tree), once per
    session; cores in tests get it through the setting, so each does not build its own."""
    from concurrent.futures import ThreadPoolExecutor

    from servermanager.core.install.package import PackageSource

    source = PackageSource("", tmp_path_factory.mktemp("agent-package"))
    # A thread of its own: the desktop tests' loop may count as running in this one.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, source.get()).result().path
