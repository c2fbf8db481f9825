"""The agent as a real Windows service (pywin32): what the service control manager starts and stops."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


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
        with self._lock:
            if self._stopping:  # the SCM asked to stop while the settings were loading
                agent.close()
                self.started.set()
                return 0
            self._loop, self._agent = loop, agent = asyncio.new_event_loop(), agent
        self.started.set()
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
    # A service has no console: the agent's log lines (stderr) go to agent.log in its state dir.
    if args.state_dir:
        os.makedirs(args.state_dir, exist_ok=True)
        sys.stderr = open(os.path.join(args.state_dir, "agent.log"), "a", buffering=1, encoding="utf-8")  # noqa: SIM115

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(host(sys.argv[1:]))
