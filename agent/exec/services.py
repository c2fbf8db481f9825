"""Service control behind one interface, with systemd, Windows SCM and launchd implementations.

Every action is one or more calls of the platform's own tool (systemctl, sc.exe, launchctl) as an
asyncio subprocess without a shell, so nothing blocks the event loop and a service name can never
be read as shell syntax. Names are validated before any tool sees them. The parsers are plain
functions of the tool's text output, testable on canned text.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import re
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from servermanager.agent.exec.subproc import ToolRun, run_tool
from servermanager.common.protocol import CommandStatus, ServiceInfo, ServiceRequest

# Letters, digits and . _ @ : + - (systemd templates, launchd labels, Windows names);
# no whitespace, quotes, slashes or shell metacharacters, and no leading '-' (not an option).
_NAME = re.compile(r"[A-Za-z0-9_.@:+][A-Za-z0-9_.@:+-]{0,255}")
# Per tool call; the command's own timeout (capped by [exec] max_runtime) bounds the whole action.
TOOL_TIMEOUT = 60.0


class ServiceError(Exception):
    """A service query or action the tool could not carry out; the message is for the operator."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def validate_service_name(name: str | None) -> str:
    """The name itself, or ValueError saying why it cannot be a service name."""
    if not name:
        raise ValueError("a service name is required for this action")
    if name.startswith("-"):
        raise ValueError(f"invalid service name {name[:100]!r}: must not start with '-'")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid service name {name[:100]!r}: only letters, digits and . _ @ : + - are allowed"
        )
    return name


@dataclass(frozen=True)
class ServiceOutcome:
    """What a service request came to, before the runner adds id, duration and counts."""

    status: CommandStatus
    exit_code: int | None = None
    message: str | None = None
    services: list[ServiceInfo] | None = None


def _outcome(run: ToolRun) -> ServiceOutcome:
    if run.ok:
        return ServiceOutcome("ok", exit_code=0)
    return ServiceOutcome("failed", exit_code=run.exit_code, message=run.message)


class ServiceManager(abc.ABC):
    """list/status/start/stop/restart/enable/disable through the platform's service tool.

    list() and status() raise ServiceError when the tool fails; the actions return the tool run,
    whose exit code and stderr say how it went. `path` is the PATH the tool is looked up on (None:
    the agent's own), `timeout` bounds each tool call.
    """

    tool: ClassVar[str]

    def __init__(self, *, timeout: float = TOOL_TIMEOUT, path: str | None = None) -> None:
        self.timeout = timeout
        self.path = path

    async def _run(self, *args: str) -> ToolRun:
        return await run_tool([self.tool, *args], timeout=self.timeout, path=self.path)

    async def _query(self, *args: str) -> ToolRun:
        run = await self._run(*args)
        if not run.ok:
            raise ServiceError(run.message, run.exit_code)
        return run

    @abc.abstractmethod
    async def list(self) -> builtins.list[ServiceInfo]: ...

    @abc.abstractmethod
    async def status(self, name: str) -> ServiceInfo: ...

    @abc.abstractmethod
    async def start(self, name: str) -> ToolRun: ...

    @abc.abstractmethod
    async def stop(self, name: str) -> ToolRun: ...

    @abc.abstractmethod
    async def restart(self, name: str) -> ToolRun: ...

    @abc.abstractmethod
    async def enable(self, name: str) -> ToolRun: ...

    @abc.abstractmethod
    async def disable(self, name: str) -> ToolRun: ...

    async def perform(self, request: ServiceRequest) -> ServiceOutcome:
        """Carry out one request; ServiceError (and ToolNotFoundError, an OSError) propagate."""
        if request.action == "list":
            return ServiceOutcome("ok", exit_code=0, services=await self.list())
        name = validate_service_name(request.name)
        if request.action == "status":
            return ServiceOutcome("ok", exit_code=0, services=[await self.status(name)])
        actions: dict[str, Callable[[str], Coroutine[Any, Any, ToolRun]]] = {
            "start": self.start,
            "stop": self.stop,
            "restart": self.restart,
            "enable": self.enable,
            "disable": self.disable,
        }
        return _outcome(await actions[request.action](name))


# ---------------------------------------------------------------- systemd

_SYSTEMD_SUFFIXES = (
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".path",
    ".mount",
    ".automount",
    ".swap",
    ".slice",
    ".scope",
    ".device",
)


def systemd_unit(name: str) -> str:
    """nginx -> nginx.service; a name that already names a unit type is kept."""
    return name if name.endswith(_SYSTEMD_SUFFIXES) else f"{name}.service"


def _short(unit: str) -> str:
    return unit.removesuffix(".service")


_BULLETS = ("\u25cf", "*", "\u25cb", "\u00d7")  # systemd's status bullets


def parse_systemd_units(text: str) -> builtins.list[ServiceInfo]:
    """`systemctl list-units --type=service --all --no-legend --no-pager --plain`.

    Columns UNIT LOAD ACTIVE SUB DESCRIPTION; units whose file does not exist (LOAD not-found)
    are references, not installed services, and are left out.
    """
    out: builtins.list[ServiceInfo] = []
    for raw in text.splitlines():
        line = raw.strip()
        # A failed or not-found unit may carry a bullet even with --plain on some versions.
        while line.startswith(_BULLETS):
            line = line[1:].lstrip()
        fields = line.split(None, 4)
        if len(fields) < 4 or not fields[0].endswith(".service"):
            continue
        unit, load, active = fields[0], fields[1], fields[2]
        if load == "not-found":
            continue
        description = fields[4].strip() if len(fields) == 5 else ""
        out.append(ServiceInfo(name=_short(unit), active=active, description=description))
    return out


def parse_systemd_unit_files(text: str) -> dict[str, str]:
    """`systemctl list-unit-files --type=service --no-legend`: unit -> state (enabled, static ...)."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].endswith(".service"):
            states[fields[0]] = fields[1]
    return states


def parse_systemd_show(text: str) -> dict[str, str]:
    """`systemctl show UNIT --property=...`: KEY=VALUE lines."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    return props


class SystemdManager(ServiceManager):
    """Linux with systemd: systemctl, never asking for a password interactively."""

    tool = "systemctl"

    async def list(self) -> builtins.list[ServiceInfo]:
        units = await self._query(
            "list-units", "--type=service", "--all", "--no-legend", "--no-pager", "--plain"
        )
        files = await self._run("list-unit-files", "--type=service", "--no-legend", "--no-pager")
        states = parse_systemd_unit_files(files.stdout) if files.ok else {}
        found = {s.name: s for s in parse_systemd_units(units.stdout)}
        result = {
            name: ServiceInfo(
                name=name, active=s.active, enabled=states.get(systemd_unit(name)), description=s.description
            )
            for name, s in found.items()
        }
        for unit, state in states.items():
            name = _short(unit)
            if name not in result and not name.endswith("@"):  # foo@.service is a template
                result[name] = ServiceInfo(name=name, active="inactive", enabled=state)
        return [result[k] for k in sorted(result)]

    async def status(self, name: str) -> ServiceInfo:
        unit = systemd_unit(validate_service_name(name))
        run = await self._query(
            "show", unit, "--no-pager", "--property=Id,LoadState,ActiveState,UnitFileState,Description"
        )
        props = parse_systemd_show(run.stdout)
        if props.get("LoadState") == "not-found":
            raise ServiceError(f"no such service: {name}")
        return ServiceInfo(
            name=_short(props.get("Id") or unit),
            active=props.get("ActiveState") or "unknown",
            enabled=props.get("UnitFileState") or None,
            description=props.get("Description", ""),
        )

    async def _action(self, verb: str, name: str) -> ToolRun:
        return await self._run("--no-ask-password", verb, systemd_unit(validate_service_name(name)))

    async def start(self, name: str) -> ToolRun:
        return await self._action("start", name)

    async def stop(self, name: str) -> ToolRun:
        return await self._action("stop", name)

    async def restart(self, name: str) -> ToolRun:
        return await self._action("restart", name)

    async def enable(self, name: str) -> ToolRun:
        return await self._action("enable", name)

    async def disable(self, name: str) -> ToolRun:
        return await self._action("disable", name)


# ---------------------------------------------------------------- Windows SCM

_SC_STATES = {
    "RUNNING": "active",
    "STOPPED": "inactive",
    "START_PENDING": "activating",
    "STOP_PENDING": "deactivating",
    "CONTINUE_PENDING": "activating",
    "PAUSE_PENDING": "deactivating",
    "PAUSED": "paused",
}
_SC_START_TYPES = {
    "AUTO_START": "enabled",
    "BOOT_START": "enabled",
    "SYSTEM_START": "enabled",
    "DEMAND_START": "manual",
    "DISABLED": "disabled",
}
_SC_FIELD = re.compile(r"^\s*([A-Z_0-9]+)\s*:\s*(.*?)\s*$")
SC_NOT_ACTIVE = 1062  # ERROR_SERVICE_NOT_ACTIVE: stop on a stopped service
SC_STOPPED = "STOPPED"


def _sc_blocks(text: str) -> builtins.list[dict[str, str]]:
    """sc.exe output: one block per service, starting at SERVICE_NAME, of KEY : VALUE lines."""
    blocks: builtins.list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        m = _SC_FIELD.match(line)
        if not m:
            continue
        key, value = m.groups()
        if key == "SERVICE_NAME":
            current = {}
            blocks.append(current)
        if current is not None and key not in current:
            current[key] = value
    return blocks


def _sc_state(value: str) -> str:
    """'4  RUNNING' -> 'active'."""
    word = value.split()[-1] if value.split() else ""
    return _SC_STATES.get(word, word.lower() or "unknown")


def parse_sc_query(text: str) -> builtins.list[ServiceInfo]:
    """`sc.exe query type= service state= all` (or `sc.exe query NAME`)."""
    out: builtins.list[ServiceInfo] = []
    for block in _sc_blocks(text):
        name = block.get("SERVICE_NAME", "")
        if not name:
            continue
        out.append(
            ServiceInfo(
                name=name, active=_sc_state(block.get("STATE", "")), description=block.get("DISPLAY_NAME", "")
            )
        )
    return out


def parse_sc_qc(text: str) -> tuple[str | None, str]:
    """`sc.exe qc NAME` -> (enabled, display name); START_TYPE '2   AUTO_START  (DELAYED)' -> enabled."""
    blocks = _sc_blocks(text)
    if not blocks:
        return None, ""
    start = blocks[0].get("START_TYPE", "")
    words = [w for w in start.split() if not w.isdigit() and not w.startswith("(")]
    enabled = _SC_START_TYPES.get(words[0], words[0].lower()) if words else None
    return enabled, blocks[0].get("DISPLAY_NAME", "")


class WindowsServiceManager(ServiceManager):
    """Windows: the Service Control Manager through sc.exe (which reports errors on stdout)."""

    tool = "sc.exe"
    poll_every = 0.5  # while waiting for a service to stop during restart

    async def list(self) -> builtins.list[ServiceInfo]:
        run = await self._query("query", "type=", "service", "state=", "all")
        return sorted(parse_sc_query(run.stdout), key=lambda s: s.name.lower())

    async def status(self, name: str) -> ServiceInfo:
        name = validate_service_name(name)
        found = parse_sc_query((await self._query("query", name)).stdout)
        if not found:
            raise ServiceError(f"no such service: {name}")
        qc = await self._run("qc", name)
        enabled, display = parse_sc_qc(qc.stdout) if qc.ok else (None, "")
        info = found[0]
        return ServiceInfo(
            name=info.name, active=info.active, enabled=enabled, description=display or info.description
        )

    async def start(self, name: str) -> ToolRun:
        return await self._run("start", validate_service_name(name))

    async def stop(self, name: str) -> ToolRun:
        return await self._run("stop", validate_service_name(name))

    async def restart(self, name: str) -> ToolRun:
        """sc.exe has no restart: stop, wait until STOPPED (sc stop returns at STOP_PENDING), start."""
        name = validate_service_name(name)
        stop = await self._run("stop", name)
        if not stop.ok and stop.exit_code != SC_NOT_ACTIVE:
            return stop
        deadline = time.monotonic() + self.timeout
        while True:
            query = await self._run("query", name)
            if not query.ok:
                return query
            states = [b.get("STATE", "") for b in _sc_blocks(query.stdout)]
            if states and states[0].split()[-1:] == [SC_STOPPED]:
                break
            if time.monotonic() > deadline:
                return ToolRun(query.argv, 1, query.stdout, f"{name} did not stop within {self.timeout:g}s")
            await asyncio.sleep(self.poll_every)
        return await self._run("start", name)

    async def enable(self, name: str) -> ToolRun:
        return await self._run("config", validate_service_name(name), "start=", "auto")

    async def disable(self, name: str) -> ToolRun:
        return await self._run("config", validate_service_name(name), "start=", "disabled")


# ---------------------------------------------------------------- macOS launchd


def parse_launchctl_list(text: str) -> builtins.list[ServiceInfo]:
    """`launchctl list`: PID, last exit status and label, tab-separated, under a header line."""
    out: builtins.list[ServiceInfo] = []
    for line in text.splitlines():
        fields = line.split(None, 2)
        if len(fields) != 3 or fields[0] == "PID":
            continue
        pid, status, label = fields
        if pid != "-" and pid.isdigit():
            active = "active"
        elif status in ("0", "-"):
            active = "inactive"
        else:
            active = "failed"  # not running and its last exit was non-zero (or a signal)
        out.append(ServiceInfo(name=label.strip(), active=active))
    return out


_DISABLED_LINE = re.compile(r'^\s*"([^"]+)"\s*=>\s*(\S+)\s*$')


def parse_launchctl_disabled(text: str) -> dict[str, str]:
    """`launchctl print-disabled DOMAIN`: label -> 'enabled'/'disabled' (old macOS says true/false)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _DISABLED_LINE.match(line)
        if m:
            label, value = m.groups()
            out[label] = "disabled" if value in ("disabled", "true") else "enabled"
    return out


_PRINT_FIELD = re.compile(r"^\t(\w[\w ]*?) = (.*)$")


def parse_launchctl_print(text: str) -> dict[str, str]:
    """`launchctl print DOMAIN/LABEL`: the service's own top-level `key = value` lines."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _PRINT_FIELD.match(line)  # exactly one tab: nested sections are indented deeper
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2).strip()
    return out


_LAUNCHD_STATES = {
    "running": "active",
    "not running": "inactive",
    "waiting": "inactive",
    "spawn scheduled": "activating",
}


class LaunchdManager(ServiceManager):
    """macOS: launchctl in the system domain (the agent runs as a LaunchDaemon).

    stop is `bootout` (so KeepAlive does not bring it straight back); start bootstraps the plist
    again from `plist_dirs` when the job is not loaded, then kickstarts it.
    """

    tool = "launchctl"

    def __init__(
        self,
        *,
        domain: str = "system",
        plist_dirs: tuple[str, ...] = ("/Library/LaunchDaemons",),
        timeout: float = TOOL_TIMEOUT,
        path: str | None = None,
    ) -> None:
        super().__init__(timeout=timeout, path=path)
        self.domain = domain
        self.plist_dirs = plist_dirs

    def _target(self, name: str) -> str:
        return f"{self.domain}/{validate_service_name(name)}"

    async def _disabled(self) -> dict[str, str]:
        run = await self._run("print-disabled", self.domain)
        return parse_launchctl_disabled(run.stdout) if run.ok else {}

    async def list(self) -> builtins.list[ServiceInfo]:
        listed = parse_launchctl_list((await self._query("list")).stdout)
        enabled = await self._disabled()
        out = [ServiceInfo(name=s.name, active=s.active, enabled=enabled.get(s.name)) for s in listed]
        return sorted(out, key=lambda s: s.name)

    async def status(self, name: str) -> ServiceInfo:
        run = await self._run("print", self._target(name))
        if not run.ok:
            raise ServiceError(f"no such service (or not loaded): {name}: {run.message}", run.exit_code)
        props = parse_launchctl_print(run.stdout)
        state = props.get("state", "unknown")
        return ServiceInfo(
            name=name,
            active=_LAUNCHD_STATES.get(state, state),
            enabled=(await self._disabled()).get(name),
            description=props.get("program") or props.get("path", ""),
        )

    def _plist(self, name: str) -> Path | None:
        for d in self.plist_dirs:
            p = Path(d) / f"{name}.plist"
            if p.is_file():
                return p
        return None

    async def start(self, name: str) -> ToolRun:
        target = self._target(name)
        if not (await self._run("print", target)).ok:
            plist = self._plist(name)
            if plist is None:
                dirs = ", ".join(self.plist_dirs)
                return ToolRun(
                    [self.tool, "bootstrap"], 1, "", f"{name} is not loaded and no {name}.plist in {dirs}"
                )
            boot = await self._run("bootstrap", self.domain, str(plist))
            if not boot.ok:
                return boot
        return await self._run("kickstart", target)

    async def stop(self, name: str) -> ToolRun:
        return await self._run("bootout", self._target(name))

    async def restart(self, name: str) -> ToolRun:
        return await self._run("kickstart", "-k", self._target(name))

    async def enable(self, name: str) -> ToolRun:
        return await self._run("enable", self._target(name))

    async def disable(self, name: str) -> ToolRun:
        return await self._run("disable", self._target(name))


# ---------------------------------------------------------------- selection

MANAGERS: dict[str, type[ServiceManager]] = {
    "systemd": SystemdManager,
    "windows": WindowsServiceManager,
    "launchd": LaunchdManager,
}


def default_service_manager(platform: str | None = None) -> ServiceManager | None:
    """The manager for this platform, or None where the agent has no service control."""
    plat = platform or sys.platform
    if plat.startswith("linux"):
        return SystemdManager()
    if plat == "win32":
        return WindowsServiceManager()
    if plat == "darwin":
        return LaunchdManager()
    return None
