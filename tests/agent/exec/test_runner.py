"""The command runner: command lines, output capture, and real processes (output, exit codes,
timeouts, cancel, groups, limits)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from servermanager.agent.exec.runner import Capture, CommandRunner, command_line
from servermanager.agent.settings import ExecSettings
from servermanager.common.protocol import Command, CommandOutput, CommandResult, ServiceRequest, encode
from tests.agent.fakes import pid_gone
from tests.helpers.wait import wait_for

# ---------------------------------------------------------------- command lines


def test_command_lines() -> None:
    assert (
        command_line(Command("a", 5, argv=["echo", "hello world", "it's"]))
        == "echo 'hello world' 'it'\"'\"'s'"
    )
    assert command_line(Command("a", 5, shell="ls -l | wc -l")) == "ls -l | wc -l"
    assert (
        command_line(Command("a", 5, service=ServiceRequest("restart", "nginx"))) == "service restart nginx"
    )
    assert command_line(Command("a", 5, service=ServiceRequest("list"))) == "service list"


@pytest.mark.parametrize(
    ("cmd", "why"),
    [
        (Command("a", 5), "exactly one of argv, shell or service"),
        (Command("a", 5, argv=["ls"], shell="ls"), "exactly one of argv, shell or service"),
        (Command("a", 5, argv=[]), "argv is empty"),
        (Command("a", 5, shell="  "), "shell command is empty"),
        (Command("a", 5, service=ServiceRequest("start")), "service name is required"),
        (Command("a", 5, service=ServiceRequest("start", "x;reboot")), "invalid service name"),
        (Command("a", 5, service=ServiceRequest("stop", "--force")), "must not start with '-'"),
        (Command("a", 5, service=ServiceRequest("stop", "a b")), "invalid service name"),
    ],
)
def test_malformed_commands(cmd: Command, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        command_line(cmd)


# ---------------------------------------------------------------- capture


async def test_capture_keeps_limit_counts_all_and_decodes_split_characters() -> None:
    cap = Capture("stdout", limit=8)
    snowman = "☃".encode()  # 3 bytes
    cap.feed(b"ab" + snowman[:1], 0.0)
    cap.feed(snowman[1:] + b"cd", 0.0)
    assert cap.take() == ("ab☃cd", 7)
    cap.feed(b"ef" * 1000, 0.0)
    cap.finish()
    text, n = cap.take()
    assert (text, n) == ("e", 1)
    assert cap.total == 7 + 2000 and cap.kept == 8 and cap.truncated


async def test_capture_cut_inside_a_character_becomes_a_replacement_char() -> None:
    cap = Capture("stderr", limit=4)
    cap.feed(b"abc" + "é".encode(), 0.0)
    cap.finish()
    assert cap.take()[0] == "abc\ufffd"
    assert cap.truncated


class Collector:
    """Drains a runner's outbox as the connection would, keeping every frame in order."""

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner
        self.frames: list[CommandOutput | CommandResult] = []
        runner.outbox.set_online(True)
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            self.frames.append(await self.runner.outbox.get())

    def outputs(self, cid: str, stream: str | None = None) -> list[CommandOutput]:
        return [
            f
            for f in self.frames
            if isinstance(f, CommandOutput) and f.command_id == cid and stream in (None, f.stream)
        ]

    def text(self, cid: str, stream: str = "stdout") -> str:
        return "".join(f.data for f in self.outputs(cid, stream))

    def result(self, cid: str) -> CommandResult | None:
        return next((f for f in self.frames if isinstance(f, CommandResult) and f.command_id == cid), None)

    async def wait_result(self, cid: str, timeout: float = 10.0) -> CommandResult:
        await wait_for(lambda: self.result(cid) is not None, timeout, f"result of {cid}")
        r = self.result(cid)
        assert r is not None
        return r

    async def settle(self) -> None:
        """Wait until the outbox is empty (everything queued so far has been collected)."""
        await wait_for(lambda: len(self.runner.outbox) == 0, 5, "outbox drained")

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def settings(**over: Any) -> ExecSettings:
    values: dict[str, Any] = {"enabled": True, "allow": ["*"]}
    values.update(over)
    return ExecSettings(**values)


@pytest.fixture
async def make() -> AsyncIterator[Any]:
    made: list[tuple[CommandRunner, Collector]] = []

    def build(s: ExecSettings | None = None, **kw: Any) -> tuple[CommandRunner, Collector]:
        kw.setdefault("services", None)
        kw.setdefault("grace", 0.5)
        runner = CommandRunner(s or settings(), **kw)
        collector = Collector(runner)
        made.append((runner, collector))
        return runner, collector

    yield build
    for runner, collector in made:
        await runner.shutdown()
        await collector.close()


# ---------------------------------------------------------------- output and status


async def test_echo_argv(make: Any) -> None:
    runner, col = make()
    r = await runner.execute(Command("c1", 10, argv=["echo", "hello"]))
    await col.settle()
    assert (r.status, r.exit_code, r.signal) == ("ok", 0, None)
    assert col.text("c1") == "hello\n"
    assert r.stdout_bytes == 6 and r.stderr_bytes == 0 and not r.truncated
    assert r.duration > 0


async def test_shell_mode_and_separate_stderr(make: Any) -> None:
    runner, col = make()
    r = await runner.execute(Command("c1", 10, shell="echo $((6 * 7)); echo err >&2; exit 3"))
    await col.settle()
    assert (r.status, r.exit_code) == ("failed", 3)
    assert col.text("c1", "stdout") == "42\n"
    assert col.text("c1", "stderr") == "err\n"
    r2 = await runner.execute(Command("c2", 10, argv=["sh", "-c", "echo err >&2"]))
    await col.settle()
    assert r2.status == "ok" and (r2.stdout_bytes, r2.stderr_bytes) == (0, 4)
    assert col.text("c2", "stderr") == "err\n" and col.outputs("c2", "stdout") == []


async def test_argv_is_never_a_shell(make: Any, tmp_path: Path) -> None:
    runner, col = make()
    marker = tmp_path / "pwned"
    r = await runner.execute(Command("c1", 10, argv=["echo", f"x; touch {marker}", "$(id)"]))
    await col.settle()
    assert r.status == "ok"
    assert col.text("c1") == f"x; touch {marker} $(id)\n"
    assert not marker.exists()


async def test_killed_by_a_signal(make: Any) -> None:
    runner, _ = make()
    r = await runner.execute(Command("c1", 10, shell="kill -KILL $$"))
    assert (r.status, r.exit_code, r.signal) == ("failed", None, signal.SIGKILL)


async def test_cannot_start(make: Any, tmp_path: Path) -> None:
    runner, _ = make()
    r = await runner.execute(Command("c1", 10, argv=["no-such-program-xyz"]))
    assert r.status == "error"
    assert r.message == "cannot start 'no-such-program-xyz': No such file or directory"
    r = await runner.execute(Command("c2", 10, argv=["ls"], cwd=str(tmp_path / "missing")))
    assert (
        r.status == "error"
        and "working directory" in (r.message or "")
        and "does not exist" in (r.message or "")
    )


async def test_env_is_minimal_and_merged_and_cwd_applies(
    make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_ONLY_SECRET", "s3cret")
    runner, col = make()
    r = await runner.execute(Command("c1", 10, argv=["env"], env={"FOO": "bar"}, cwd=str(tmp_path)))
    await col.settle()
    assert r.status == "ok"
    env = dict(line.split("=", 1) for line in col.text("c1").splitlines())
    assert env["FOO"] == "bar"
    assert {"PATH", "LANG", "HOME"} <= set(env)
    assert "AGENT_ONLY_SECRET" not in env
    r = await runner.execute(Command("c2", 10, argv=["pwd"], cwd=str(tmp_path)))
    await col.settle()
    assert col.text("c2") == f"{tmp_path}\n"


async def test_utf8_split_across_reads_is_decoded_whole(make: Any) -> None:
    runner, col = make()
    # The snowman's first byte arrives alone, well after a flush would have gone out.
    r = await runner.execute(Command("c1", 10, shell=r"printf '\342'; sleep 0.2; printf '\230\203\n'"))
    await col.settle()
    assert r.status == "ok" and r.stdout_bytes == 4
    assert col.text("c1") == "\u2603\n"


async def test_output_is_coalesced_and_frames_fit_the_frame_limit(make: Any) -> None:
    runner, col = make(max_frame_bytes=4096)
    r = await runner.execute(Command("c1", 10, argv=["seq", "1", "20000"]))
    await col.settle()
    assert r.status == "ok" and r.stdout_bytes == len(col.text("c1").encode())
    assert col.text("c1").splitlines()[-1] == "20000"
    assert len(col.outputs("c1")) < 20000 // 10  # chunks, not lines
    # Control characters cost six bytes each in JSON; every frame still fits.
    r = await runner.execute(Command("c2", 10, shell=r"head -c 20000 /dev/zero | tr '\0' '\001'"))
    await col.settle()
    assert r.stdout_bytes == 20000 and col.text("c2") == "\x01" * 20000
    assert all(len(encode(f)) <= 4096 for f in col.outputs("c2"))


async def test_ten_megabytes_are_counted_not_kept(make: Any) -> None:
    runner, col = make(settings(max_output=1 << 20))
    r = await runner.execute(
        Command(
            "c1",
            30,
            shell=r"head -c 10000000 /dev/zero | tr '\0' x; head -c 3000000 /dev/zero | tr '\0' y >&2",
        )
    )
    await col.settle()
    assert r.status == "ok"
    assert (r.stdout_bytes, r.stderr_bytes, r.truncated) == (10_000_000, 3_000_000, True)
    assert col.text("c1", "stdout") == "x" * (1 << 20)
    assert col.text("c1", "stderr") == "y" * (1 << 20)


# ---------------------------------------------------------------- timeouts, cancel, process groups


async def test_timeout_kills_the_whole_group(make: Any) -> None:
    runner, col = make()
    task = runner.submit(Command("c1", 0.5, shell="sleep 30 & echo $!; sleep 30"))
    assert task is not None
    r = await col.wait_result("c1")
    assert (r.status, r.signal, r.exit_code) == ("timeout", signal.SIGTERM, None)
    assert r.message == "timed out after 0.5s"
    child = int(col.text("c1"))
    await wait_for(lambda: pid_gone(child), 5, f"background child {child} to die")


async def test_children_that_ignore_sigterm_get_sigkill(make: Any) -> None:
    runner, col = make(grace=0.3)
    runner.submit(Command("c1", 0.5, shell="trap '' TERM; sleep 30 & echo $!; sleep 30"))
    r = await col.wait_result("c1")
    assert (r.status, r.signal) == ("timeout", signal.SIGKILL)
    child = int(col.text("c1"))
    await wait_for(lambda: pid_gone(child), 5, f"background child {child} to die")


async def test_timeout_is_capped_by_max_runtime(make: Any) -> None:
    runner, col = make(settings(max_runtime=0.3))
    runner.submit(Command("c1", 3600, argv=["sleep", "30"]))
    r = await col.wait_result("c1")
    assert r.status == "timeout" and r.message == "timed out after 0.3s"


async def test_cancel_kills_a_running_command(make: Any) -> None:
    runner, col = make()
    runner.submit(Command("c1", 60, shell="echo started; sleep 30 & sleep 30"))
    await wait_for(lambda: col.text("c1") == "started\n", 5, "command to start")
    assert runner.running == ["c1"]
    assert runner.cancel("c1")
    r = await col.wait_result("c1")
    assert (r.status, r.signal) == ("cancelled", signal.SIGTERM)
    assert runner.running == []
    assert not runner.cancel("c1")  # gone: nothing to cancel


async def test_background_child_holding_the_output_is_terminated_after_exit(make: Any) -> None:
    runner, col = make(linger=0.3)
    r = await runner.execute(Command("c1", 30, shell="sleep 30 & echo $!"))
    await col.settle()
    assert (r.status, r.exit_code) == ("ok", 0)
    assert r.message == (
        "1 leftover process (sleep) was stopped after the command ended"
        if sys.platform.startswith("linux")
        else "processes it started kept its output open; its process group was stopped"
    )
    child = int(col.text("c1"))
    await wait_for(lambda: pid_gone(child), 5, f"background child {child} to die")


async def test_result_comes_after_all_output(make: Any) -> None:
    runner, col = make()
    runner.submit(Command("c1", 10, shell="seq 1 50000; seq 1 50000 >&2"))
    await col.wait_result("c1")
    kinds = [type(f).__name__ for f in col.frames if f.command_id == "c1"]
    assert kinds[-1] == "CommandResult" and kinds.count("CommandResult") == 1
    assert len(kinds) > 3


# ---------------------------------------------------------------- admission


async def test_disabled_agent_refuses(make: Any) -> None:
    runner, col = make(ExecSettings())
    runner.submit(Command("c1", 10, argv=["echo", "hi"]))
    r = await col.wait_result("c1")
    assert r.status == "refused"
    assert r.message == "remote execution is disabled in this agent's config ([exec] enabled = false)"
    assert col.outputs("c1") == []


async def test_allow_and_deny_refusals(make: Any) -> None:
    runner, _ = make(settings(allow=["echo *", "rm *"], deny=["rm *"]))
    r = await runner.execute(Command("c1", 10, argv=["rm", "-rf", "/tmp/x"]))
    assert (r.status, r.message) == ("refused", "command matches [exec] deny pattern 'rm *'")
    r = await runner.execute(Command("c2", 10, argv=["uptime"]))
    assert (r.status, r.message) == ("refused", "command not allowed by [exec] allow list")
    r = await runner.execute(Command("c3", 10, shell="echo hi; uptime"))
    assert r.status == "refused"
    r = await runner.execute(Command("c4", 10, argv=["echo", "hi"]))
    assert r.status == "ok"
    assert runner.refused == 3


async def test_env_cannot_smuggle_in_another_program(make: Any, tmp_path: Path) -> None:
    runner, _ = make(settings(allow=["uptime"]))
    r = await runner.execute(Command("c1", 10, argv=["uptime"], env={"PATH": str(tmp_path)}))
    assert r.status == "refused" and "env variable 'PATH' is not allowed" in (r.message or "")


async def test_malformed_command_is_an_error(make: Any) -> None:
    runner, _ = make()
    r = await runner.execute(Command("c1", 10, argv=["ls"], shell="ls"))
    assert r.status == "error" and "exactly one of argv, shell or service" in (r.message or "")


async def test_concurrency_cap_refuses_and_duplicates_are_ignored(make: Any) -> None:
    runner, col = make(settings(max_concurrent=2))
    for cid in ("a", "b"):
        assert runner.submit(Command(cid, 60, argv=["sleep", "30"])) is not None
    assert runner.submit(Command("a", 60, argv=["sleep", "30"])) is None  # already running
    runner.submit(Command("c", 60, argv=["sleep", "30"]))
    r = await col.wait_result("c")
    assert r.status == "refused"
    assert r.message == (
        "2 commands are already running on this agent ([exec] max_concurrent = 2); "
        "try again when one has finished"
    )
    assert sorted(runner.running) == ["a", "b"]
    runner.cancel("a")
    assert (await col.wait_result("a")).status == "cancelled"
    runner.submit(Command("d", 10, argv=["true"]))
    assert (await col.wait_result("d")).status == "ok"
    await runner.shutdown()
    assert (await col.wait_result("b")).status == "cancelled"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_runs_as_the_configured_user(make: Any) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    home_exists = await asyncio.to_thread(os.path.isdir, nobody.pw_dir)
    runner, col = make(settings(user="nobody"))
    r = await runner.execute(Command("c1", 10, shell="id -u; id -g; echo $HOME $USER; pwd"))
    await col.settle()
    assert r.status == "ok", r
    uid, gid, env, cwd = col.text("c1").splitlines()
    assert (int(uid), int(gid)) == (nobody.pw_uid, nobody.pw_gid)
    assert env == f"{nobody.pw_dir} nobody"
    assert cwd == (nobody.pw_dir if home_exists else "/")


async def test_unknown_run_as_user_is_refused(make: Any) -> None:
    runner, _ = make(settings(user="no-such-user-xyz"))
    r = await runner.execute(Command("c1", 10, argv=["true"]))
    assert (r.status, r.message) == ("refused", "[exec] user 'no-such-user-xyz' does not exist on this host")


async def test_one_log_line_per_command_and_no_env_values(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="servermanager.agent.exec.runner")
    runner, _ = make(settings(deny=["rm *"]))
    await runner.execute(Command("c1", 10, argv=["true"], env={"API_KEY": "supersecret-value"}))
    await runner.execute(Command("c2", 10, shell="rm -rf /tmp/nothing"))
    await runner.execute(Command("c3", 10, shell="echo a\necho b"))
    lines = [r.getMessage() for r in caplog.records if r.name == "servermanager.agent.exec.runner"]
    assert re.fullmatch(r"command c1 true: ok \(exit 0, \d+\.\d\ds, 0\+0 bytes\)", lines[0]), lines[0]
    assert lines[1] == "command c2 rm -rf /tmp/nothing: refused: command matches [exec] deny pattern 'rm *'"
    assert lines[2].startswith("command c3 echo a\\necho b: ok")  # one line, even for a multi-line script
    assert len(lines) == 3
    assert "supersecret-value" not in caplog.text
