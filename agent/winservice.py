"""The agent as a real Windows service (pywin32): the service host, and the service control manager calls."""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

# How long stop() waits for the service to report it has stopped.
STOP_TIMEOUT = 30.0


class AgentThreadRunner:
    """Runs an agent on an asyncio loop of its own in the calling thread; stop() from any other thread.

    The Windows service's SvcDoRun runs it; SvcStop, called by the service control manager in
    another thread, stops it. Platform-neutral, so it is tested on Linux with a real core.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._loop: asyncio.AbstractEventLoop | None = None
        self._agent: Any = None
        self._stopping = False
        self._lock = threading.Lock()
        self.started = threading.Event()

    def run(self) -> int:
        """Load the settings, run the agent until stop(); the exit code `servermanager agent` would give."""
        from servermanager.agent.cli import EXIT_FATAL
        from servermanager.agent.lazyimports import defer_imports

        defer_imports()
        from servermanager.agent.link.connection import AgentError
        from servermanager.agent.main import Agent, setup_logging
        from servermanager.agent.settings import load_agent_settings
        from servermanager.common.settings import SettingsError

        args = self._args
        try:
            settings = load_agent_settings(
                config_file=args.config,
                overrides={
                    "core": args.core,
                    "core_fingerprint": args.core_fingerprint,
                    "ca_file": args.ca_file,
                    "state_dir": args.state_dir,
                    "interval": args.interval,
                },
            )
            setup_logging(settings.log_level)
            agent = Agent(settings)
        except (SettingsError, OSError) as exc:
            log.error("%s", exc)
            self.started.set()
            return EXIT_FATAL
        loop = asyncio.new_event_loop()
        with self._lock:
            self._loop, self._agent = loop, agent
            stop_now = self._stopping
        self.started.set()
        if stop_now:
            agent.stop()
        try:
            loop.run_until_complete(agent.run())
        except AgentError as exc:
            log.error("%s", exc)
            return exc.exit_code
        finally:
            agent.close()
            loop.close()
        log.info("agent stopped cleanly")
        return 0

    @property
    def agent(self) -> Any:
        """The running Agent, once run() has made it (for tests to observe)."""
        return self._agent

    def stop(self) -> None:
        """Ask run() to finish (thread-safe, idempotent); before run() started it, run() stops at once."""
        with self._lock:
            self._stopping = True
            loop, agent = self._loop, self._agent
        if loop is not None and agent is not None and not loop.is_closed():
            loop.call_soon_threadsafe(agent.stop)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The agent's flags, as `servermanager agent` takes them (the service is registered with them)."""
    from servermanager.agent.cli import add_arguments

    parser = argparse.ArgumentParser(prog="servermanager.agent.winservice")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.service:
        parser.error("the service runs the agent; install-service and uninstall-service are for the CLI")
    return args


def host(argv: Sequence[str]) -> int:  # pragma: no cover - Windows only, started by the SCM
    """Hand this process to the service control manager, which calls SvcDoRun / SvcStop."""
    import servicemanager
    import win32service
    import win32serviceutil

    from servermanager.agent.service import WINDOWS_NAME

    args = parse_args(argv)

    class AgentService(win32serviceutil.ServiceFramework):
        _svc_name_ = WINDOWS_NAME

        def __init__(self, service_args: Any) -> None:
            super().__init__(service_args)
            self.runner = AgentThreadRunner(args)
            self.code = 0

        def SvcStop(self) -> None:  # pywin32's name
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
            self.runner.stop()

        def SvcDoRun(self) -> None:  # pywin32's name
            self.ReportServiceStatus(win32service.SERVICE_RUNNING)
            self.code = self.runner.run()
            if self.code:
                # A non-zero exit makes the SCM apply the recovery actions (restart).
                raise SystemExit(self.code)

    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(AgentService)
    servicemanager.StartServiceCtrlDispatcher()
    return 0


class Win32Services:  # pragma: no cover - Windows only
    """The service control manager through pywin32's win32serviceutil."""

    def is_admin(self) -> bool:
        import ctypes

        if sys.platform == "win32":
            return bool(ctypes.windll.shell32.IsUserAnAdmin())
        return False

    def exists(self, name: str) -> bool:
        import pywintypes
        import win32serviceutil

        try:
            win32serviceutil.QueryServiceStatus(name)
        except pywintypes.error:
            return False
        return True

    def create(
        self, name: str, display_name: str, description: str, program: str, args: Sequence[str]
    ) -> None:
        import win32service
        import win32serviceutil

        win32serviceutil.InstallService(
            None,
            name,
            display_name,
            startType=win32service.SERVICE_AUTO_START,
            exeName=program,
            exeArgs=subprocess.list2cmdline(list(args)),
            description=description,
        )

    def restart_on_failure(self, name: str) -> None:
        # Restart 5 s after each of the first failures, 30 s after later ones; count anew daily.
        # failureflag 1: a non-zero exit (SvcDoRun raising) counts as a failure, not only a crash.
        actions = "restart/5000/restart/5000/restart/30000"
        for argv in (
            ["sc.exe", "failure", name, "reset=", "86400", "actions=", actions],
            ["sc.exe", "failureflag", name, "1"],
        ):
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise OSError(f"{' '.join(argv[:3])}: {done.stdout.strip()}")

    def start(self, name: str) -> None:
        import win32serviceutil

        win32serviceutil.StartService(name)

    def stop(self, name: str) -> None:
        import win32service
        import win32serviceutil

        if win32serviceutil.QueryServiceStatus(name)[1] == win32service.SERVICE_STOPPED:
            return
        win32serviceutil.StopService(name)
        deadline = time.monotonic() + STOP_TIMEOUT
        while win32serviceutil.QueryServiceStatus(name)[1] != win32service.SERVICE_STOPPED:
            if time.monotonic() > deadline:
                raise OSError(f"the service {name} did not stop within {STOP_TIMEOUT:g} s")
            time.sleep(0.2)

    def remove(self, name: str) -> None:
        import win32serviceutil

        win32serviceutil.RemoveService(name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(host(sys.argv[1:]))
