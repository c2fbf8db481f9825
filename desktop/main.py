"""Entry point of `servermanager desktop`: a QApplication, then asyncio on a qasync loop until quit."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import qasync
from PySide6.QtCore import QLibraryInfo, QSettings, QTimer, qVersion
from PySide6.QtWidgets import QApplication

from servermanager.common import __version__
from servermanager.desktop.context import AppContext
from servermanager.desktop.fleetcache import FleetCache
from servermanager.desktop.themes import icon
from servermanager.desktop.window import MainWindow

log = logging.getLogger(__name__)

DEMO_PASSWORD_ENV = "SM_DEMO_PASSWORD"
# How long --self-test waits for the window: seconds on a desktop, more on a loaded CI machine.
SELF_TEST_TIMEOUT = 30.0


# Debian and Ubuntu packages of the X11 libraries Qt's xcb platform plugin loads ("Qt for X11
# Requirements"); a desktop install has them, a minimal one or a server with Xvfb may not.
XCB_PACKAGES = (
    "libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 "
    "libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 libxkbcommon-x11-0"
)


def xcb_problem(env: dict[str, str] | None = None, plugin: Path | None = None) -> str | None:
    """Why Qt's X11 (xcb) platform plugin cannot load here, or None.

    Without its libraries Qt aborts the process, with a hint that names libxcb-cursor0 whichever
    library is missing; loading the plugin first gives the loader's own message, which names it.
    """
    env = dict(os.environ) if env is None else env
    wayland = env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") == "wayland"
    platform = env.get("QT_QPA_PLATFORM") or ("" if wayland else "xcb")
    if not sys.platform.startswith("linux") or not platform.startswith("xcb"):
        return None
    if plugin is None:
        plugins = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath))
        plugin = plugins / "platforms" / "libqxcb.so"
    try:
        ctypes.CDLL(str(plugin))
    except OSError as exc:
        return f"Qt's X11 platform plugin cannot load: {exc}. On Debian or Ubuntu: apt-get install {XCB_PACKAGES}"
    return None


def make_app() -> QApplication:
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    configure(app)
    return app


def configure(app: QApplication) -> None:
    """Names (QSettings' location), icon, and explicit quitting; tests configure their app the same way."""
    app.setOrganizationName("ServerManager")
    app.setOrganizationDomain("servermanager.invalid")
    app.setApplicationName("Server Manager")
    app.setDesktopFileName("servermanager")
    app.setWindowIcon(icon("app"))
    # Closing the window may only hide it (tray); quitting is always an explicit request.
    app.setQuitOnLastWindowClosed(False)


async def run(app: QApplication, args: argparse.Namespace, demo_password: str | None) -> int:
    quit_event = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(*_: object) -> None:
        loop.call_soon_threadsafe(quit_event.set)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    # Python runs signal handlers only between bytecodes; a idle timer lets it while Qt waits.
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(300)

    ctx = AppContext.create(app, QSettings(), fleet_cache=FleetCache())
    window = MainWindow(ctx)
    window.quit_requested.connect(quit_event.set)
    window.start(core_url=args.core, demo_password=demo_password)
    try:
        await quit_event.wait()
    finally:
        wake.stop()
        window.save_state()
        window.tray.hide()
        window.hide()
        await window.cores.close()  # the other cores' sockets, before the tasks they run on stop
        await ctx.close()
        window.deleteLater()
    return 0


async def self_test(app: QApplication, timeout: float = SELF_TEST_TIMEOUT) -> str | None:
    """Open the main window as a start does, on throwaway settings, and close it once it is shown.

    It proves that this install runs the app (Qt and its platform plugin, qasync, the keyring,
    every module the window imports) with no core, display or saved sign-in. Returns what went
    wrong, or None.
    """
    loop = asyncio.get_running_loop()
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="servermanager-self-test-") as folder:
        # Not the user's settings: no saved profile to sign in with, and nothing written back.
        store = QSettings(str(Path(folder) / "desktop.ini"), QSettings.Format.IniFormat)
        ctx = AppContext.create(app, store)
        ctx.aio.on_error(lambda name, exc: failures.append(f"task {name} failed: {exc!r}"))
        window = MainWindow(ctx)
        try:
            window.start(core_url=None)
            deadline = loop.time() + timeout
            while not (window.isVisible() and (handle := window.windowHandle()) and handle.isExposed()):
                if loop.time() > deadline:
                    failures.append(f"the main window was not shown within {timeout:g} s")
                    break
                await asyncio.sleep(0.02)
            # A few more turns of the loop for the start-up sign-in (no profile: it asks for one).
            await asyncio.sleep(0.2)
        finally:
            window.tray.hide()
            window.hide()
            await ctx.close()
            window.deleteLater()
    return failures[0] if failures else None


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # Take the demo password out of the environment at once, so no child process inherits it.
    demo_password = os.environ.pop(DEMO_PASSWORD_ENV, None) if getattr(args, "demo_login", False) else None
    if getattr(args, "demo_login", False) and not demo_password:
        log.warning("--demo-login without %s; asking for the password instead", DEMO_PASSWORD_ENV)
    testing = getattr(args, "self_test", False)
    # A self-test checks the install, not the display: it needs none, but keeps a platform asked for
    # (an empty value asks for none: Qt would then try X11 and abort without a display).
    if testing and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    problem = xcb_problem() if QApplication.instance() is None else None
    if problem:
        log.error("%s", problem)
        return 1
    app = make_app()
    # Python's cycle collector runs in whichever thread allocates: in a worker thread (keyring,
    # the loop's executor) it can destroy a Qt object there and crash Qt. Collect on a timer in the
    # GUI thread only (pyqtgraph's collector; kept referenced for the app's life).
    from pyqtgraph.util.garbage_collector import GarbageCollector

    _collector = GarbageCollector(interval=1.0)
    # The QApplication must exist before the loop: qasync's loop drives Qt's event loop.
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        if testing:
            try:
                failure = runner.run(self_test(app))
            except Exception as exc:
                failure = f"{type(exc).__name__}: {exc}"
            if failure:
                print(f"servermanager desktop --self-test failed: {failure}", file=sys.stderr)
                return 1
            shown = f"main window shown ({app.platformName()}, Qt {qVersion()})"
            print(f"servermanager desktop --self-test ok: {shown}")
            return 0
        return runner.run(run(app, args, demo_password))


def cli(argv: Sequence[str] | None = None, prog: str = "servermanager desktop") -> int:
    """The desktop app's own command line: `python -m servermanager.desktop.main` and the frozen
    bundle's executable (packaging/desktop/), with the flags of `servermanager desktop`."""
    parser = argparse.ArgumentParser(prog=prog, description="Server Manager desktop app")
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    parser.add_argument("--core", help="core URL to connect to")
    parser.add_argument("--demo-login", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="open the main window offscreen, then quit: exit 0 when this install can run the app",
    )
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
