"""`servermanager agent install-service` / `uninstall-service` against a real core, with typed fakes for launchd and the SCM."""

from __future__ import annotations

import argparse
import asyncio
import plistlib
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from devkit.cores import RunningCore
from devkit.ports import free_port
from servermanager.agent import service
from servermanager.agent.settings import AgentSettings, load_agent_settings
from servermanager.agent.winservice import AgentThreadRunner, parse_args
from servermanager.cli import build_parser
from tests.helpers.wait import wait_for

PLIST = Path("Library/LaunchDaemons/servermanager.agent.plist")


class FakeLaunchd:
    """launchctl as a list of the calls made; each answers 0 unless `codes` says otherwise."""

    def __init__(self, admin: bool = True, codes: dict[str, tuple[int, str]] | None = None) -> None:
        self.admin = admin
        self.codes = codes or {}
        self.calls: list[tuple[str, ...]] = []

    def is_admin(self) -> bool:
        return self.admin

    def launchctl(self, *args: str) -> tuple[int, str]:
        self.calls.append(args)
        return self.codes.get(args[0], (0, ""))


class FakeWindowsServices:
    """The service control manager as a dict of registered services and a list of calls."""

    def __init__(self, admin: bool = True, existing: bool = False, refuse: str | None = None) -> None:
        self.admin = admin
        self.services: dict[str, tuple[str, str, str, tuple[str, ...]]] = {}
        if existing:
            self.services[service.WINDOWS_NAME] = ("old", "", "", ())
        self.calls: list[str] = []
        self.refuse = refuse

    def is_admin(self) -> bool:
        return self.admin

    def exists(self, name: str) -> bool:
        return name in self.services

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if what == self.refuse:
            raise OSError(5, "Access is denied")

    def create(
        self, name: str, display_name: str, description: str, program: str, args: Sequence[str]
    ) -> None:
        self._call("create")
        self.services[name] = (display_name, description, program, tuple(args))

    def restart_on_failure(self, name: str) -> None:
        self._call("restart_on_failure")

    def start(self, name: str) -> None:
        self._call("start")

    def stop(self, name: str) -> None:
        self._call("stop")

    def remove(self, name: str) -> None:
        self._call("remove")
        del self.services[name]


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[RunningCore]:
    server = await RunningCore(tmp_path / "core").start()
    try:
        yield server
    finally:
        await server.stop()


def cli_args(*argv: str) -> argparse.Namespace:
    """The flags as `servermanager agent ...` parses them."""
    return build_parser().parse_args(["agent", *argv])


async def install(argv: Sequence[str], **kw: object) -> int:
    # In a thread: install-service runs its own event loop to enroll, while this one serves the core.
    args = cli_args(*argv)
    return await asyncio.to_thread(lambda: service.run(args.service, args, **kw))  # type: ignore[arg-type]


# ---------------------------------------------------------------- macOS


async def test_macos_install_enrolls_then_writes_and_bootstraps_the_plist(
    core: RunningCore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, launchd = tmp_path / "state", FakeLaunchd()
    argv = ["install-service", "--core", core.url, "--state-dir", str(state), "--enroll-token"]
    code = await install(
        [*argv, await core.enroll_token()], platform="darwin", launchd=launchd, root=tmp_path
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "enrolled as node " in out.out and "installed and started the LaunchDaemon" in out.out
    assert (state / "credential").exists()
    plist = tmp_path / PLIST
    assert plist.stat().st_mode & 0o777 == 0o644
    data = plistlib.loads(plist.read_bytes())
    assert data["Label"] == "servermanager.agent"
    # The service runs this Python with the flags given, never the token.
    assert data["ProgramArguments"] == [
        sys.executable,
        "-m",
        "servermanager",
        "agent",
        "--core",
        core.url,
        "--state-dir",
        str(state),
    ]
    assert data["RunAtLoad"] is True and data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["StandardErrorPath"] == "/Library/Logs/ServerManager/agent.log"
    assert launchd.calls == [
        ("bootout", "system/servermanager.agent"),
        ("enable", "system/servermanager.agent"),
        ("bootstrap", "system", "/Library/LaunchDaemons/servermanager.agent.plist"),
    ]


async def test_macos_install_without_root_changes_nothing(
    core: RunningCore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    launchd, token = FakeLaunchd(admin=False), await core.enroll_token()
    argv = [
        "install-service",
        "--core",
        core.url,
        "--state-dir",
        str(tmp_path / "state"),
        "--enroll-token",
        token,
    ]
    code = await install(argv, platform="darwin", launchd=launchd, root=tmp_path)
    err = capsys.readouterr().err
    assert code == 2
    assert err == "servermanager agent install-service: install-service needs root: run it with sudo\n"
    assert launchd.calls == [] and not (tmp_path / PLIST).exists()
    # The token was not used: it still enrolls.
    assert await service.enroll(settings_for(core, tmp_path / "later"), token) > 0


def settings_for(core: RunningCore, state: Path) -> AgentSettings:
    return load_agent_settings(config_file=None, overrides={"core": core.url, "state_dir": str(state)})


async def test_a_refused_token_is_one_line_and_installs_nothing(
    core: RunningCore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    launchd = FakeLaunchd()
    argv = [
        "install-service",
        "--core",
        core.url,
        "--state-dir",
        str(tmp_path / "s"),
        "--enroll-token",
        "nope",
    ]
    code = await install(argv, platform="darwin", launchd=launchd, root=tmp_path)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("servermanager agent install-service: enrollment failed: ") and err.count("\n") == 1
    assert "Traceback" not in err
    assert launchd.calls == [] and not (tmp_path / PLIST).exists()


async def test_an_unreachable_core_times_out_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "ENROLL_TIMEOUT", 0.5)
    url = f"http://127.0.0.1:{free_port()}"
    argv = ["install-service", "--core", url, "--state-dir", str(tmp_path / "s"), "--enroll-token", "t"]
    code = await install(argv, platform="darwin", launchd=FakeLaunchd(), root=tmp_path)
    err = capsys.readouterr().err
    assert code == 2
    assert "no welcome from the core at ws://127.0.0.1:" in err and "within 0.5 s" in err
    assert err.count("\n") == 1


async def test_without_token_or_credential_it_asks_for_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    argv = ["install-service", "--core", "http://127.0.0.1:1", "--state-dir", str(state)]
    code = await install(argv, platform="darwin", launchd=FakeLaunchd(), root=tmp_path)
    assert code == 2
    assert capsys.readouterr().err == (
        f"servermanager agent install-service: no credential in {state}: give an enrollment token once "
        "(SM_AGENT_ENROLL_TOKEN or --enroll-token)\n"
    )


async def test_macos_bootstrap_failure_is_reported(
    core: RunningCore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    launchd = FakeLaunchd(codes={"bootstrap": (5, "Bootstrap failed: 5: Input/output error")})
    argv = ["install-service", "--core", core.url, "--state-dir", str(tmp_path / "s"), "--enroll-token"]
    code = await install(
        [*argv, await core.enroll_token()], platform="darwin", launchd=launchd, root=tmp_path
    )
    assert code == 2
    assert capsys.readouterr().err.endswith("failed (exit 5): Bootstrap failed: 5: Input/output error\n")


@pytest.mark.parametrize(("bootout", "expect"), [(0, 0), (113, 0), (5, 2)])
def test_macos_uninstall_boots_out_and_removes_the_plist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bootout: int, expect: int
) -> None:
    plist = tmp_path / PLIST
    plist.parent.mkdir(parents=True)
    plist.write_bytes(b"<plist/>")
    launchd = FakeLaunchd(codes={"bootout": (bootout, "")})
    args = cli_args("uninstall-service")
    assert service.run(args.service, args, platform="darwin", launchd=launchd, root=tmp_path) == expect
    assert launchd.calls == [("bootout", "system/servermanager.agent")]
    assert plist.exists() == (expect != 0), capsys.readouterr()


def test_macos_uninstall_needs_root_and_an_installed_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_args("uninstall-service")
    assert (
        service.run(args.service, args, platform="darwin", launchd=FakeLaunchd(admin=False), root=tmp_path)
        == 2
    )
    assert "needs root" in capsys.readouterr().err
    assert service.run(args.service, args, platform="darwin", launchd=FakeLaunchd(), root=tmp_path) == 2
    assert "servermanager.agent.plist does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------- Windows


async def test_windows_install_registers_the_service_host_with_the_flags(
    core: RunningCore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scm, state, config = FakeWindowsServices(existing=True), tmp_path / "state", tmp_path / "agent.toml"
    config.write_text(f'core = "{core.url}"\n')
    argv = ["install-service", "--config", str(config), "--state-dir", str(state), "--enroll-token"]
    code = await install([*argv, await core.enroll_token()], platform="win32", windows=scm)
    assert code == 0, capsys.readouterr().err
    # The old registration goes first (a reinstall); the new one restarts on failure and starts.
    assert scm.calls == ["stop", "remove", "create", "restart_on_failure", "start"]
    display, description, program, args = scm.services["ServerManagerAgent"]
    assert (display, program) == ("Server Manager agent", sys.executable)
    assert "metrics" in description
    assert args == (
        "-m",
        "servermanager.agent.winservice",
        "--config",
        str(config),
        "--state-dir",
        str(state),
    )
    # What the service host parses back is what `servermanager agent` would run with.
    parsed = parse_args(args[2:])
    assert (parsed.config, parsed.state_dir, parsed.service) == (str(config), str(state), None)


async def test_windows_install_needs_an_administrator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scm = FakeWindowsServices(admin=False)
    code = await install(
        ["install-service", "--core", "http://x:1", "--enroll-token", "t"], platform="win32", windows=scm
    )
    assert code == 2
    assert capsys.readouterr().err == (
        "servermanager agent install-service: install-service needs an administrator: run it in an elevated prompt\n"
    )
    assert scm.calls == []


def test_windows_scm_refusal_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = service.ServiceSpec(program="python.exe", args=("-m", "x"), state_dir=str(tmp_path))
    with pytest.raises(
        service.ServiceError, match=r"^the service control manager refused: \[Errno 5\] Access is denied$"
    ):
        service.install_windows(spec, FakeWindowsServices(refuse="create"))


def test_windows_uninstall_stops_and_removes(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli_args("uninstall-service")
    scm = FakeWindowsServices(existing=True)
    assert service.run(args.service, args, platform="win32", windows=scm) == 0
    assert scm.calls == ["stop", "remove"] and not scm.services
    assert service.run(args.service, args, platform="win32", windows=scm) == 2
    assert capsys.readouterr().err.endswith("no Windows service ServerManagerAgent to remove\n")


def test_windows_default_state_dir_is_under_program_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROGRAMDATA", r"D:\ProgramData")
    spec = service.service_spec(cli_args("install-service"), platform="win32", python=r"C:\py\python.exe")
    assert spec.state_dir == r"D:\ProgramData\ServerManager\agent"
    assert spec.args[-2:] == ("--state-dir", r"D:\ProgramData\ServerManager\agent")


# ---------------------------------------------------------------- Linux and the service host


def test_linux_points_to_the_deb_and_systemd(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli_args("install-service")
    assert service.run(args.service, args, platform="linux") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "systemctl enable --now servermanager-agent" in err


async def test_the_service_host_runs_the_agent_until_stopped_from_another_thread(
    core: RunningCore, tmp_path: Path
) -> None:
    state, token = tmp_path / "state", await core.enroll_token()
    node = await asyncio.to_thread(lambda: asyncio.run(service.enroll(settings_for(core, state), token)))

    def online() -> bool:
        found = core.core.nodes.get(node)
        return found is not None and found.online

    runner = AgentThreadRunner(parse_args(["--core", core.url, "--state-dir", str(state)]))
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(runner.run()))
    thread.start()
    try:
        await wait_for(online, 15, "the service host's agent online")
    finally:
        stopping = asyncio.get_running_loop().time()
        runner.stop()  # as SvcStop does, from the SCM's thread
        await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()
    assert asyncio.get_running_loop().time() - stopping < 5
    assert result == [0]


def test_a_stop_before_the_agent_starts_ends_run_at_once(tmp_path: Path) -> None:
    runner = AgentThreadRunner(parse_args(["--core", "http://127.0.0.1:1", "--state-dir", str(tmp_path)]))
    runner.stop()
    assert runner.run() == 0  # not 2: it did not even look for a credential
    assert runner.agent is None and runner.started.is_set()
