"""Service control: the three managers' parsers on canned text, and their tool calls against fake
executables on PATH (real scripts that record their argv and print canned output)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from servermanager.agent.exec.runner import CommandRunner
from servermanager.agent.exec.services import (
    LaunchdManager,
    ServiceError,
    SystemdManager,
    WindowsServiceManager,
    default_service_manager,
    parse_launchctl_disabled,
    parse_launchctl_list,
    parse_launchctl_print,
    parse_sc_qc,
    parse_sc_query,
    parse_systemd_show,
    parse_systemd_unit_files,
    parse_systemd_units,
    systemd_unit,
    validate_service_name,
)
from servermanager.agent.exec.subproc import ToolNotFoundError
from servermanager.agent.settings import ExecSettings
from servermanager.common.protocol import Command, ServiceInfo, ServiceRequest, encode
from tests.agent.fakes import FakeTool, canned
from tests.helpers.wait import wait_for

# ---------------------------------------------------------------- canned tool output

SYSTEMD_UNITS = """\
cron.service                 loaded    active   running Regular background program processing daemon
nginx.service                loaded    failed   failed  A high performance web server
\u25cf auditd.service             not-found inactive dead    auditd.service
getty@tty1.service           loaded    active   running Getty on tty1
ssh.service                  loaded    inactive dead    OpenBSD Secure Shell server
"""
SYSTEMD_UNIT_FILES = """\
cron.service                 enabled  enabled
getty@.service               enabled  enabled
nginx.service                enabled  enabled
postgresql.service           masked   enabled
ssh.service                  disabled enabled
"""
SYSTEMD_SHOW_NGINX = """\
Id=nginx.service
LoadState=loaded
ActiveState=failed
UnitFileState=enabled
Description=A high performance web server
"""

SC_QUERY = """
SERVICE_NAME: AdobeARMservice
DISPLAY_NAME: Adobe Acrobat Update Service
        TYPE               : 10  WIN32_OWN_PROCESS
        STATE              : 4  RUNNING
                                (STOPPABLE, NOT_PAUSABLE, ACCEPTS_SHUTDOWN)
        WIN32_EXIT_CODE    : 0  (0x0)
        SERVICE_EXIT_CODE  : 0  (0x0)
        CHECKPOINT         : 0x0
        WAIT_HINT          : 0x0

SERVICE_NAME: Spooler
DISPLAY_NAME: Print Spooler
        TYPE               : 110  WIN32_OWN_PROCESS  (interactive)
        STATE              : 1  STOPPED
        WIN32_EXIT_CODE    : 1077  (0x435)
        SERVICE_EXIT_CODE  : 0  (0x0)
        CHECKPOINT         : 0x0
        WAIT_HINT          : 0x0

SERVICE_NAME: wuauserv
DISPLAY_NAME: Windows Update
        TYPE               : 20  WIN32_SHARE_PROCESS
        STATE              : 3  STOP_PENDING
                                (NOT_STOPPABLE, NOT_PAUSABLE, IGNORES_SHUTDOWN)
        WIN32_EXIT_CODE    : 0  (0x0)
        SERVICE_EXIT_CODE  : 0  (0x0)
        CHECKPOINT         : 0x1
        WAIT_HINT          : 0x7530
"""
SC_QUERY_SPOOLER_STOPPED = """
SERVICE_NAME: Spooler
        TYPE               : 110  WIN32_OWN_PROCESS  (interactive)
        STATE              : 1  STOPPED
        WIN32_EXIT_CODE    : 0  (0x0)
        SERVICE_EXIT_CODE  : 0  (0x0)
        CHECKPOINT         : 0x0
        WAIT_HINT          : 0x0
"""
SC_QC_SPOOLER = """[SC] QueryServiceConfig SUCCESS

SERVICE_NAME: Spooler
        TYPE               : 110  WIN32_OWN_PROCESS (interactive)
        START_TYPE         : 2   AUTO_START
        ERROR_CONTROL      : 1   NORMAL
        BINARY_PATH_NAME   : C:\\Windows\\System32\\spoolsv.exe
        LOAD_ORDER_GROUP   : SpoolerGroup
        TAG                : 0
        DISPLAY_NAME       : Print Spooler
        DEPENDENCIES       : RPCSS
                           : http
        SERVICE_START_NAME : LocalSystem
"""
SC_NOT_INSTALLED = """[SC] OpenService FAILED 1060:

The specified service does not exist as an installed service.
"""

LAUNCHCTL_LIST = """PID\tStatus\tLabel
-\t0\tcom.apple.SafariHistoryServiceAgent
327\t0\tcom.example.web
-\t-9\tcom.example.crashy
-\t78\tcom.example.failed
"""
LAUNCHCTL_DISABLED = """disabled services = {
\t"com.example.crashy" => disabled
\t"com.example.web" => enabled
\t"com.apple.old" => true
}
login item associations = {
}
"""
LAUNCHCTL_PRINT_WEB = """system/com.example.web = {
\tactive count = 1
\tpath = /Library/LaunchDaemons/com.example.web.plist
\ttype = LaunchDaemon
\tstate = running

\tprogram = /usr/local/bin/web
\targuments = {
\t\t/usr/local/bin/web
\t}

\tpid = 327
\tendpoints = {
\t\t"com.example.web.port" = {
\t\t\tport = 0
\t\t\tstate = active
\t\t}
\t}
}
"""

# ---------------------------------------------------------------- fake executables


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ.get('PATH', '')}")
    return d


@pytest.fixture
def systemctl(bin_dir: Path) -> FakeTool:
    cases = f"""
  *list-units*) {canned(SYSTEMD_UNITS)} ;;
  *list-unit-files*) {canned(SYSTEMD_UNIT_FILES)} ;;
  "show nginx.service "*) {canned(SYSTEMD_SHOW_NGINX)} ;;
  "show "*) printf 'Id=%s\\nLoadState=not-found\\nActiveState=inactive\\n' "$2" ;;
  *"start broken.service") echo "Job for broken.service failed because the control process exited." >&2; exit 1 ;;
  *"start slow.service") exec sleep 30 ;;
  *) exit 0 ;;
"""
    return FakeTool(bin_dir, "systemctl", cases)


# ---------------------------------------------------------------- names


def test_service_names_are_validated() -> None:
    for good in ("nginx", "getty@tty1", "php7.4-fpm", "com.apple.foo", "Spooler", "a_b:c+d"):
        assert validate_service_name(good) == good
    for bad in ("", "-x", "--now", "a b", "a;b", "a|b", "$(x)", "a/b", "`x`", "a\nb", "x" * 300, "'a'"):
        with pytest.raises(ValueError, match="service name"):
            validate_service_name(bad)


def test_default_manager_by_platform() -> None:
    assert isinstance(default_service_manager("linux"), SystemdManager)
    assert isinstance(default_service_manager("win32"), WindowsServiceManager)
    assert isinstance(default_service_manager("darwin"), LaunchdManager)
    assert default_service_manager("sunos5") is None


# ---------------------------------------------------------------- systemd


def test_systemd_parsers() -> None:
    units = parse_systemd_units(SYSTEMD_UNITS)
    assert [u.name for u in units] == ["cron", "nginx", "getty@tty1", "ssh"]  # not-found left out
    assert units[1] == ServiceInfo(name="nginx", active="failed", description="A high performance web server")
    assert parse_systemd_unit_files(SYSTEMD_UNIT_FILES)["ssh.service"] == "disabled"
    assert parse_systemd_show(SYSTEMD_SHOW_NGINX)["ActiveState"] == "failed"
    assert systemd_unit("nginx") == "nginx.service"
    assert systemd_unit("nginx.service") == "nginx.service"
    assert systemd_unit("fstrim.timer") == "fstrim.timer"
    assert systemd_unit("php7.4-fpm") == "php7.4-fpm.service"


async def test_systemd_list_and_status(systemctl: FakeTool) -> None:
    mgr = SystemdManager()
    services = await mgr.list()
    assert services == [
        ServiceInfo("cron", "active", "enabled", "Regular background program processing daemon"),
        ServiceInfo("getty@tty1", "active", None, "Getty on tty1"),
        ServiceInfo("nginx", "failed", "enabled", "A high performance web server"),
        ServiceInfo("postgresql", "inactive", "masked", ""),
        ServiceInfo("ssh", "inactive", "disabled", "OpenBSD Secure Shell server"),
    ]
    assert await mgr.status("nginx") == ServiceInfo(
        "nginx", "failed", "enabled", "A high performance web server"
    )
    with pytest.raises(ServiceError, match="no such service: nope"):
        await mgr.status("nope")
    assert systemctl.calls == [
        ["list-units", "--type=service", "--all", "--no-legend", "--no-pager", "--plain"],
        ["list-unit-files", "--type=service", "--no-legend", "--no-pager"],
        [
            "show",
            "nginx.service",
            "--no-pager",
            "--property=Id,LoadState,ActiveState,UnitFileState,Description",
        ],
        [
            "show",
            "nope.service",
            "--no-pager",
            "--property=Id,LoadState,ActiveState,UnitFileState,Description",
        ],
    ]


async def test_systemd_actions(systemctl: FakeTool) -> None:
    mgr = SystemdManager()
    for action in ("start", "stop", "restart", "enable", "disable"):
        outcome = await mgr.perform(ServiceRequest(action, "nginx"))
        assert (outcome.status, outcome.exit_code, outcome.message) == ("ok", 0, None)
    assert systemctl.calls == [
        ["--no-ask-password", verb, "nginx.service"]
        for verb in ("start", "stop", "restart", "enable", "disable")
    ]
    failed = await mgr.perform(ServiceRequest("start", "broken"))
    assert (failed.status, failed.exit_code) == ("failed", 1)
    assert failed.message == "Job for broken.service failed because the control process exited."


async def test_missing_tool_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ToolNotFoundError, match="systemctl not found on PATH"):
        await SystemdManager(path=str(tmp_path)).list()


# ---------------------------------------------------------------- through the runner (policy applies)


async def _drain(runner: CommandRunner) -> asyncio.Task[None]:
    runner.outbox.set_online(True)

    async def drain() -> None:
        while True:
            await runner.outbox.get()

    return asyncio.create_task(drain())


def svc(cid: str, action: str, name: str | None = None, timeout: float = 10) -> Command:
    return Command(cid, timeout, service=ServiceRequest(action, name))  # type: ignore[arg-type]


async def test_runner_applies_the_allow_list_to_services(systemctl: FakeTool) -> None:
    settings = ExecSettings(enabled=True, allow=["service restart nginx", "service list", "service status *"])
    runner = CommandRunner(settings, services=SystemdManager())
    r = await runner.execute(svc("c1", "stop", "nginx"))
    assert (r.status, r.message) == ("refused", "command not allowed by [exec] allow list")
    r = await runner.execute(svc("c2", "restart", "sshd"))
    assert r.status == "refused"
    assert systemctl.calls == []  # refused before any tool ran
    r = await runner.execute(svc("c3", "restart", "nginx"))
    assert (r.status, r.exit_code) == ("ok", 0)
    assert systemctl.calls == [["--no-ask-password", "restart", "nginx.service"]]
    r = await runner.execute(svc("c4", "list"))
    assert r.status == "ok" and r.services is not None
    assert [s.name for s in r.services] == ["cron", "getty@tty1", "nginx", "postgresql", "ssh"]
    r = await runner.execute(svc("c5", "status", "nginx"))
    assert r.status == "ok" and r.services == [
        ServiceInfo("nginx", "failed", "enabled", "A high performance web server")
    ]
    r = await runner.execute(svc("c6", "status", "nope"))
    assert (r.status, r.message) == ("failed", "no such service: nope")
    r = await runner.execute(svc("c7", "status", "a;reboot"))
    assert r.status == "error" and "invalid service name" in (r.message or "")


async def test_runner_service_deny_failure_timeout_and_missing_tool(
    systemctl: FakeTool, tmp_path: Path
) -> None:
    settings = ExecSettings(enabled=True, allow=["service *"], deny=["service * ssh*"])
    runner = CommandRunner(settings, services=SystemdManager())
    r = await runner.execute(svc("c1", "stop", "sshd"))
    assert (r.status, r.message) == ("refused", "command matches [exec] deny pattern 'service * ssh*'")
    r = await runner.execute(svc("c2", "start", "broken"))
    assert (r.status, r.exit_code) == ("failed", 1) and "control process exited" in (r.message or "")
    r = await runner.execute(svc("c3", "start", "slow", timeout=0.3))
    assert r.status == "timeout"
    r = await CommandRunner(settings, services=SystemdManager(path=str(tmp_path))).execute(svc("c4", "list"))
    assert (r.status, r.message) == ("error", "systemctl not found on PATH")
    r = await CommandRunner(settings, services=None).execute(svc("c5", "list"))
    assert r.status == "error" and "not supported" in (r.message or "")


async def test_service_action_can_be_cancelled(systemctl: FakeTool) -> None:
    runner = CommandRunner(ExecSettings(enabled=True, allow=["*"]), services=SystemdManager())
    drain = await _drain(runner)
    try:
        task = runner.submit(svc("c1", "start", "slow", timeout=60))
        assert task is not None
        await wait_for(lambda: len(systemctl.calls) == 1, 5, "systemctl to start")
        runner.cancel("c1")
        r = await asyncio.wait_for(task, 5)
        assert r.status == "cancelled"
    finally:
        drain.cancel()


# ---------------------------------------------------------------- Windows SCM (sc.exe)


def test_sc_parsers() -> None:
    services = parse_sc_query(SC_QUERY)
    assert services == [
        ServiceInfo("AdobeARMservice", "active", None, "Adobe Acrobat Update Service"),
        ServiceInfo("Spooler", "inactive", None, "Print Spooler"),
        ServiceInfo("wuauserv", "deactivating", None, "Windows Update"),
    ]
    assert parse_sc_qc(SC_QC_SPOOLER) == ("enabled", "Print Spooler")
    assert parse_sc_qc(SC_QC_SPOOLER.replace("2   AUTO_START", "3   DEMAND_START"))[0] == "manual"
    assert parse_sc_qc(SC_QC_SPOOLER.replace("2   AUTO_START", "4   DISABLED"))[0] == "disabled"
    assert parse_sc_qc(SC_QC_SPOOLER.replace("AUTO_START", "AUTO_START  (DELAYED)"))[0] == "enabled"
    assert parse_sc_query(SC_NOT_INSTALLED) == []


async def test_sc_exe_calls(bin_dir: Path) -> None:
    cases = f"""
  "query type= service state= all") {canned(SC_QUERY)} ;;
  "query Spooler") {canned(SC_QUERY_SPOOLER_STOPPED)} ;;
  "qc Spooler") {canned(SC_QC_SPOOLER)} ;;
  *Missing*) {canned(SC_NOT_INSTALLED)} exit 36 ;;
  *) exit 0 ;;
"""
    sc = FakeTool(bin_dir, "sc.exe", cases)
    mgr = WindowsServiceManager()
    assert [s.name for s in await mgr.list()] == ["AdobeARMservice", "Spooler", "wuauserv"]
    assert await mgr.status("Spooler") == ServiceInfo("Spooler", "inactive", "enabled", "Print Spooler")
    for action in ("start", "stop", "restart", "enable", "disable"):
        outcome = await mgr.perform(ServiceRequest(action, "Spooler"))
        assert outcome.status == "ok", outcome
    assert sc.calls == [
        ["query", "type=", "service", "state=", "all"],
        ["query", "Spooler"],
        ["qc", "Spooler"],
        ["start", "Spooler"],
        ["stop", "Spooler"],
        ["stop", "Spooler"],  # restart: stop, wait for STOPPED, start
        ["query", "Spooler"],
        ["start", "Spooler"],
        ["config", "Spooler", "start=", "auto"],
        ["config", "Spooler", "start=", "disabled"],
    ]
    failed = await mgr.perform(ServiceRequest("start", "Missing"))
    assert failed.status == "failed"
    assert failed.message is not None and "FAILED 1060" in failed.message  # sc.exe says it on stdout
    with pytest.raises(ServiceError, match="FAILED 1060"):
        await mgr.status("Missing")


# ---------------------------------------------------------------- macOS launchd (launchctl)


def test_launchctl_parsers() -> None:
    assert parse_launchctl_list(LAUNCHCTL_LIST) == [
        ServiceInfo("com.apple.SafariHistoryServiceAgent", "inactive"),
        ServiceInfo("com.example.web", "active"),
        ServiceInfo("com.example.crashy", "failed"),
        ServiceInfo("com.example.failed", "failed"),
    ]
    assert parse_launchctl_disabled(LAUNCHCTL_DISABLED) == {
        "com.example.crashy": "disabled",
        "com.example.web": "enabled",
        "com.apple.old": "disabled",
    }
    props = parse_launchctl_print(LAUNCHCTL_PRINT_WEB)
    assert props["state"] == "running"  # the service's own, not the endpoint's nested 'state = active'
    assert props["pid"] == "327" and props["program"] == "/usr/local/bin/web"


async def test_launchctl_calls(bin_dir: Path, tmp_path: Path) -> None:
    plists = tmp_path / "LaunchDaemons"
    plists.mkdir()
    (plists / "com.example.off.plist").write_text("<plist/>")
    cases = f"""
  "list") {canned(LAUNCHCTL_LIST)} ;;
  "print-disabled system") {canned(LAUNCHCTL_DISABLED)} ;;
  "print system/com.example.web") {canned(LAUNCHCTL_PRINT_WEB)} ;;
  "print "*) echo "Could not find service in domain for port" >&2; exit 113 ;;
  *) exit 0 ;;
"""
    lc = FakeTool(bin_dir, "launchctl", cases)
    mgr = LaunchdManager(plist_dirs=(str(plists),))
    listed = await mgr.list()
    assert ServiceInfo("com.example.web", "active", "enabled") in listed
    assert ServiceInfo("com.example.crashy", "failed", "disabled") in listed
    status = await mgr.status("com.example.web")
    assert status == ServiceInfo("com.example.web", "active", "enabled", "/usr/local/bin/web")
    with pytest.raises(ServiceError, match="no such service"):
        await mgr.status("com.example.gone")
    lc.log.unlink()
    for action, name in (
        ("start", "com.example.web"),  # loaded: kickstart
        ("start", "com.example.off"),  # not loaded: bootstrap its plist, then kickstart
        ("stop", "com.example.web"),
        ("restart", "com.example.web"),
        ("enable", "com.example.web"),
        ("disable", "com.example.web"),
    ):
        outcome = await mgr.perform(ServiceRequest(action, name))  # type: ignore[arg-type]
        assert outcome.status == "ok", (action, outcome)
    assert lc.calls == [
        ["print", "system/com.example.web"],
        ["kickstart", "system/com.example.web"],
        ["print", "system/com.example.off"],
        ["bootstrap", "system", str(plists / "com.example.off.plist")],
        ["kickstart", "system/com.example.off"],
        ["bootout", "system/com.example.web"],
        ["kickstart", "-k", "system/com.example.web"],
        ["enable", "system/com.example.web"],
        ["disable", "system/com.example.web"],
    ]
    missing = await mgr.perform(ServiceRequest("start", "com.example.gone"))
    assert missing.status == "failed" and "no com.example.gone.plist" in (missing.message or "")


async def test_a_huge_service_list_is_cut_to_fit_one_frame(bin_dir: Path) -> None:
    cases = """
  *list-units*) i=0; while [ $i -lt 500 ]; do echo "unit$i.service loaded active running Unit number $i"; i=$((i+1)); done ;;
  *) exit 0 ;;
"""
    FakeTool(bin_dir, "systemctl", cases)
    runner = CommandRunner(
        ExecSettings(enabled=True, allow=["service list"]), services=SystemdManager(), max_frame_bytes=8192
    )
    r = await runner.execute(svc("c1", "list"))
    assert r.status == "ok" and r.services is not None
    assert 0 < len(r.services) < 500
    assert r.message == f"service list cut to {len(r.services)} of 500 entries to fit one frame"
    assert len(encode(r)) <= 8192
