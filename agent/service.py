"""`servermanager agent install-service` / `uninstall-service`: the agent as a Windows service or macOS LaunchDaemon."""

from __future__ import annotations

import argparse
import asyncio
import os
import plistlib
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PureWindowsPath
from typing import Protocol

from servermanager.agent.settings import AgentSettings

EXIT_FATAL = 2
# How long uninstall waits for the Windows service to report it has stopped.
STOP_TIMEOUT = 30.0
# How long install-service waits for the core to welcome a new enrollment.
ENROLL_TIMEOUT = 30.0

WINDOWS_NAME = "ServerManagerAgent"
WINDOWS_DISPLAY_NAME = "Server Manager agent"
WINDOWS_DESCRIPTION = "Sends this machine's metrics to a Server Manager core and runs its allowed commands."
LAUNCHD_LABEL = "servermanager.agent"
LAUNCHD_PLIST = PurePath("/Library/LaunchDaemons") / f"{LAUNCHD_LABEL}.plist"
MACOS_HOME = PurePath("/Library/Application Support/ServerManager")
MACOS_LOG = PurePath("/Library/Logs/ServerManager/agent.log")
LINUX_HINT = (
    "on Linux the agent runs under systemd from the servermanager-agent .deb: "
    "sudo apt install ./servermanager-agent_*.deb, then set core in /etc/servermanager/agent.toml "
    "and run: sudo systemctl enable --now servermanager-agent"
)


class ServiceError(Exception):
    """What went wrong, as the one line the operator sees."""


@dataclass(frozen=True)
class ServiceSpec:
    """What the service runs: the program and its arguments, and where its state lives."""

    program: str
    args: tuple[str, ...]
    state_dir: str


# ---------------------------------------------------------------- the OS calls, behind small interfaces


class Launchd(Protocol):
    """macOS: the root check and launchctl."""

    def is_admin(self) -> bool: ...

    def launchctl(self, *args: str) -> tuple[int, str]:
        """Run launchctl with args; its exit code and output."""
        ...


class WindowsServices(Protocol):
    """Windows: the administrator check and the service control manager (pywin32)."""

    def is_admin(self) -> bool: ...

    def exists(self, name: str) -> bool: ...

    def create(
        self, name: str, display_name: str, description: str, program: str, args: Sequence[str]
    ) -> None:
        """Register an automatic-start service running `program args` as LocalSystem."""
        ...

    def restart_on_failure(self, name: str) -> None: ...

    def start(self, name: str) -> None: ...

    def stop(self, name: str) -> None:
        """Stop it and wait until it has stopped; nothing if it is not running."""
        ...

    def remove(self, name: str) -> None: ...


class SystemLaunchd:
    """The real launchd: euid 0 and /bin/launchctl."""

    def is_admin(self) -> bool:
        return os.geteuid() == 0

    def launchctl(self, *args: str) -> tuple[int, str]:
        done = subprocess.run(["/bin/launchctl", *args], capture_output=True, text=True, check=False)
        return done.returncode, (done.stdout + done.stderr).strip()


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


# ---------------------------------------------------------------- what the service runs


def default_state_dir(platform: str = sys.platform) -> str:
    """A system-wide state dir: services run as LocalSystem or root, whose per-user dirs are odd."""
    if platform == "win32":
        program_data = os.environ.get("PROGRAMDATA", r"C:\ProgramData")
        return str(PureWindowsPath(program_data, "ServerManager", "agent"))
    return str(MACOS_HOME / "agent")


def service_spec(
    args: argparse.Namespace, platform: str = sys.platform, python: str = sys.executable
) -> ServiceSpec:
    """The service's command line: this Python running the agent with the given flags, made absolute.

    The enrollment token is never among them: install-service enrolls before it installs.
    """
    state_dir = os.path.abspath(args.state_dir) if args.state_dir else default_state_dir(platform)
    flags: list[str] = []
    for flag, value, is_path in (
        ("--config", args.config, True),
        ("--core", args.core, False),
        ("--core-fingerprint", args.core_fingerprint, False),
        ("--ca-file", args.ca_file, True),
        ("--interval", args.interval, False),
    ):
        if value:
            flags += [flag, os.path.abspath(value) if is_path else value]
    flags += ["--state-dir", state_dir]
    # On Windows the service control manager talks to the program: pywin32's host, not the CLI.
    module = (
        ["-m", "servermanager.agent.winservice"] if platform == "win32" else ["-m", "servermanager", "agent"]
    )
    return ServiceSpec(program=python, args=(*module, *flags), state_dir=state_dir)


def launchd_plist(spec: ServiceSpec) -> bytes:
    """The LaunchDaemon: started at boot, restarted after a crash (not after a clean stop)."""
    plist = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [spec.program, *spec.args],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        # A refused credential exits 2 at once: retry at most every 30 s, not in a tight loop.
        "ThrottleInterval": 30,
        "ProcessType": "Background",
        "StandardOutPath": str(MACOS_LOG),
        "StandardErrorPath": str(MACOS_LOG),
        "WorkingDirectory": spec.state_dir,
    }
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=False)


# ---------------------------------------------------------------- install and uninstall


def install_launchd(spec: ServiceSpec, launchd: Launchd, root: Path = Path("/")) -> str:
    """Write the plist (root:wheel 0644, as launchd wants) and bootstrap it; a reinstall replaces it."""
    if not launchd.is_admin():
        raise ServiceError("install-service needs root: run it with sudo")
    plist = root / LAUNCHD_PLIST.relative_to("/")
    log = root / MACOS_LOG.relative_to("/")
    # A loaded old version first: bootstrap refuses a label that is already loaded.
    launchd.launchctl("bootout", f"system/{LAUNCHD_LABEL}")
    try:
        plist.parent.mkdir(parents=True, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        plist.write_bytes(launchd_plist(spec))
        plist.chmod(0o644)
    except OSError as exc:
        raise ServiceError(f"cannot write {plist}: {exc.strerror or exc}") from None
    launchd.launchctl("enable", f"system/{LAUNCHD_LABEL}")
    code, out = launchd.launchctl("bootstrap", "system", str(LAUNCHD_PLIST))
    if code != 0:
        raise ServiceError(f"launchctl bootstrap system {LAUNCHD_PLIST} failed (exit {code}): {out}")
    return f"installed and started the LaunchDaemon {LAUNCHD_LABEL} ({LAUNCHD_PLIST}); log: {MACOS_LOG}"


def uninstall_launchd(launchd: Launchd, root: Path = Path("/")) -> str:
    """bootout and remove the plist; the state dir (credential, spool) stays for a reinstall."""
    if not launchd.is_admin():
        raise ServiceError("uninstall-service needs root: run it with sudo")
    plist = root / LAUNCHD_PLIST.relative_to("/")
    if not plist.exists():
        raise ServiceError(f"no LaunchDaemon to remove: {LAUNCHD_PLIST} does not exist")
    code, out = launchd.launchctl("bootout", f"system/{LAUNCHD_LABEL}")
    # 3 / 113: not loaded (already stopped); anything else is a real failure.
    if code not in (0, 3, 113):
        raise ServiceError(f"launchctl bootout system/{LAUNCHD_LABEL} failed (exit {code}): {out}")
    plist.unlink()
    return f"stopped and removed the LaunchDaemon {LAUNCHD_LABEL}"


def install_windows(spec: ServiceSpec, services: WindowsServices) -> str:
    if not services.is_admin():
        raise ServiceError("install-service needs an administrator: run it in an elevated prompt")
    try:
        if services.exists(WINDOWS_NAME):
            services.stop(WINDOWS_NAME)
            services.remove(WINDOWS_NAME)
        services.create(WINDOWS_NAME, WINDOWS_DISPLAY_NAME, WINDOWS_DESCRIPTION, spec.program, spec.args)
        services.restart_on_failure(WINDOWS_NAME)
        services.start(WINDOWS_NAME)
    except OSError as exc:  # pywin32's error is an OSError subclass
        raise ServiceError(f"the service control manager refused: {exc}") from None
    return f"installed and started the Windows service {WINDOWS_NAME} ({WINDOWS_DISPLAY_NAME})"


def uninstall_windows(services: WindowsServices) -> str:
    if not services.is_admin():
        raise ServiceError("uninstall-service needs an administrator: run it in an elevated prompt")
    if not services.exists(WINDOWS_NAME):
        raise ServiceError(f"no Windows service {WINDOWS_NAME} to remove")
    try:
        services.stop(WINDOWS_NAME)
        services.remove(WINDOWS_NAME)
    except OSError as exc:
        raise ServiceError(f"the service control manager refused: {exc}") from None
    return f"stopped and removed the Windows service {WINDOWS_NAME}"


# ---------------------------------------------------------------- enrollment before install


async def enroll(settings: AgentSettings, token: str, timeout: float | None = None) -> int:
    """Enroll now, in the foreground, so a wrong core URL or token shows here and not in a service log.

    Returns the node id; the credential stays in the state dir for the service.
    """
    from servermanager.agent.link.connection import ConnState, StateWaitError
    from servermanager.agent.main import Agent

    timeout = ENROLL_TIMEOUT if timeout is None else timeout
    agent = Agent(settings, token)
    task = asyncio.create_task(agent.run(), name="enroll")
    try:
        async with asyncio.timeout(timeout):
            await agent.wait_state(ConnState.STREAMING)
    except TimeoutError:
        raise ServiceError(f"no welcome from the core at {settings.core} within {timeout:g} s") from None
    except StateWaitError:
        pass  # run() ended: its own error says why, below
    finally:
        agent.stop()
        try:
            await task
        except Exception as exc:  # AuthFailedError and the like: the core refused
            raise ServiceError(f"enrollment failed: {exc}") from None
        finally:
            agent.close()
    if agent.node_id is None:
        raise ServiceError(f"enrollment at {settings.core} did not complete")
    return agent.node_id


def _prepare(args: argparse.Namespace, spec: ServiceSpec) -> None:
    """Load the settings as the service will; enroll if a token is given, or check a credential is there."""
    from servermanager.agent.credentials import CREDENTIAL_FILE
    from servermanager.agent.settings import enroll_token_from, load_agent_settings
    from servermanager.common.settings import SettingsError

    try:
        settings = load_agent_settings(
            config_file=args.config,
            overrides={
                "core": args.core,
                "core_fingerprint": args.core_fingerprint,
                "ca_file": args.ca_file,
                "state_dir": spec.state_dir,
                "interval": args.interval,
            },
        )
    except SettingsError as exc:
        raise ServiceError(str(exc)) from None
    token = enroll_token_from(args.enroll_token)
    if token:
        node = asyncio.run(enroll(settings, token))
        print(f"enrolled as node {node} at {settings.core}")
    elif not Path(spec.state_dir, CREDENTIAL_FILE).exists():
        raise ServiceError(
            f"no credential in {spec.state_dir}: give an enrollment token once "
            "(SM_AGENT_ENROLL_TOKEN or --enroll-token)"
        )


def run(
    action: str,
    args: argparse.Namespace,
    *,
    platform: str = sys.platform,
    launchd: Launchd | None = None,
    windows: WindowsServices | None = None,
    root: Path = Path("/"),
) -> int:
    """install-service or uninstall-service on this system; one line on stderr and exit 2 on failure.

    launchd, windows and root stand in for the system's own in tests.
    """
    try:
        print(_run(action, args, platform, launchd, windows, root))
    except ServiceError as exc:
        print(f"servermanager agent {action}: {exc}", file=sys.stderr)
        return EXIT_FATAL
    return 0


def _run(
    action: str,
    args: argparse.Namespace,
    platform: str,
    launchd: Launchd | None,
    windows: WindowsServices | None,
    root: Path,
) -> str:
    if platform.startswith("linux"):
        raise ServiceError(LINUX_HINT)
    if platform not in ("win32", "darwin"):
        raise ServiceError(
            f"no service support on {platform}: run `servermanager agent` under your init system"
        )
    spec = service_spec(args, platform)
    if platform == "darwin":
        launchd = launchd or SystemLaunchd()
        if action == "uninstall-service":
            return uninstall_launchd(launchd, root)
        if not launchd.is_admin():  # before enrolling: a refused install must not use up the token
            raise ServiceError("install-service needs root: run it with sudo")
        _prepare(args, spec)
        return install_launchd(spec, launchd, root)
    if windows is None:
        windows = Win32Services()
    if action == "uninstall-service":
        return uninstall_windows(windows)
    if not windows.is_admin():
        raise ServiceError("install-service needs an administrator: run it in an elevated prompt")
    _prepare(args, spec)
    return install_windows(spec, windows)
