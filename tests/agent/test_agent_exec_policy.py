"""The [exec] settings and policy, command lines, run-as resolution, output capture and the outbox."""

from __future__ import annotations

import asyncio
import fnmatch
import os
import pwd
from pathlib import Path

import pytest

from servermanager.agent.execution import (
    DISABLED_MESSAGE,
    Capture,
    Outbox,
    Policy,
    RefusedError,
    command_line,
    compile_patterns,
    resolve_run_as,
)
from servermanager.agent.settings import AgentSettings, ExecSettings, load_agent_settings
from servermanager.common.protocol import Command, CommandOutput, CommandResult, ServiceRequest
from servermanager.common.settings import SettingsError

# ---------------------------------------------------------------- settings


def test_exec_defaults_are_secure() -> None:
    s = load_agent_settings(environ={})
    assert s.exec.enabled is False
    assert s.exec.allow == [] and s.exec.deny == []
    assert s.exec.user == ""
    assert s.exec.max_runtime == 3600.0
    assert s.exec.max_output == 1 << 20
    assert s.exec.max_concurrent == 8
    assert "disabled" in DISABLED_MESSAGE and "[exec] enabled = false" in DISABLED_MESSAGE


def test_exec_from_toml_table_and_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        '[exec]\nenabled = true\nallow = ["uptime", "service restart *"]\ndeny = ["rm *"]\n'
        'max_runtime = "10m"\nmax_output = 4096\n'
    )
    s = load_agent_settings(
        config_file=cfg, environ={"SM_AGENT_EXEC_DENY": "reboot*, shutdown*", "SM_AGENT_EXEC_USER": "nobody"}
    )
    assert s.exec.enabled is True
    assert s.exec.allow == ["uptime", "service restart *"]
    assert s.exec.deny == ["reboot*", "shutdown*"]  # env beats file
    assert s.exec.max_runtime == 600.0
    assert s.exec.max_output == 4096
    assert s.exec.user == "nobody"
    env_only = load_agent_settings(environ={"SM_AGENT_EXEC_ENABLED": "yes", "SM_AGENT_EXEC_ALLOW": "df -h"})
    assert env_only.exec.enabled and env_only.exec.allow == ["df -h"]


@pytest.mark.parametrize(
    ("toml", "why"),
    [
        ("[exec]\nmax_runtime = 0\n", "exec.max_runtime must be above 0"),
        ("[exec]\nmax_concurrent = 0\n", "exec.max_concurrent must be at least 1"),
        ("[exec]\nmax_output = -1\n", "exec.max_output must be 0 or more"),
        ('[exec]\nallow = [" "]\n', "exec.allow: empty pattern"),
        ('[exec]\ndeny = ["[z-a]"]\n', "exec.deny: bad pattern"),
        ("[exec]\nsudo = true\n", "unknown setting exec.'sudo'"),
    ],
)
def test_exec_validation(tmp_path: Path, toml: str, why: str) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(toml)
    with pytest.raises(SettingsError, match=why.replace("(", r"\(").replace("[", r"\[")):
        load_agent_settings(config_file=cfg, environ={})


def test_exec_doc_fields_cover_every_field() -> None:
    assert set(ExecSettings.__doc_fields__) == set(ExecSettings.__struct_fields__)
    assert "exec" in AgentSettings.__doc_fields__


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


# ---------------------------------------------------------------- policy


def test_empty_allow_list_allows_nothing() -> None:
    assert (
        Policy([], []).check("uptime")
        == "command not allowed: the [exec] allow list is empty, so nothing may run"
    )


def test_allow_and_deny() -> None:
    p = Policy(["echo *", "service restart *", "uptime"], ["* --force*", "service restart sshd"])
    assert p.check("uptime") is None
    assert p.check("echo hello") is None
    assert p.check("uptime -p") == "command not allowed by [exec] allow list"
    assert p.check("service restart nginx") is None
    assert p.check("service restart sshd") == "command matches [exec] deny pattern 'service restart sshd'"
    assert p.check("echo --force") == "command matches [exec] deny pattern '* --force*'"  # deny wins


def test_argv_lines_use_plain_fnmatch() -> None:
    patterns = ["echo *", "ls -?", "cat /etc/[!s]*", "x[a-c]y", "*"]
    lines = ["echo a; b", "ls -l", "cat /etc/hosts", "cat /etc/shadow", "xby", "xdy", "anything | at all"]
    for pattern in patterns:
        ((_, rx),) = compile_patterns([pattern])
        for line in lines:
            assert bool(rx.match(line)) == fnmatch.fnmatchcase(line, pattern), (pattern, line)


def test_shell_wildcards_do_not_cross_metacharacters() -> None:
    p = Policy(["echo *", "systemctl status *", "uptime | head -?"], [], windows=False)
    assert p.check("echo hello world", shell=True) is None
    assert p.check("uptime | head -1", shell=True) is None  # literal | in the pattern matches itself
    for sneaky in (
        "echo hi; rm -rf /",
        "echo hi && reboot",
        "echo $(reboot)",
        "echo `reboot`",
        "echo hi > /etc/passwd",
        "echo hi\nreboot",
        "systemctl status x | sh",
    ):
        assert p.check(sneaky, shell=True) == "command not allowed by [exec] allow list", sneaky
        # The same text as argv is harmless (no shell), so plain fnmatch applies there.
    assert p.check("echo 'hi; rm -rf /'") is None
    assert Policy(["*"], []).check("a | b && c; d", shell=True) is None  # '*' alone: everything


def test_deny_applies_to_each_simple_command_of_a_shell_line() -> None:
    p = Policy(["*"], ["rm *", "reboot"])
    assert p.check("cd /tmp && rm -rf x", shell=True) == "command matches [exec] deny pattern 'rm *'"
    assert p.check("echo $(reboot)", shell=True) == "command matches [exec] deny pattern 'reboot'"
    assert p.check("ls; reboot", shell=True) == "command matches [exec] deny pattern 'reboot'"
    assert p.check("echo rm -rf x", shell=True) is None


def test_env_that_changes_what_runs_needs_full_trust() -> None:
    p = Policy(["uptime"], [])
    assert p.check_env({"LANG": "C", "MY_SETTING": "1"}) is None
    for risky in (
        "PATH",
        "LD_PRELOAD",
        "DYLD_INSERT_LIBRARIES",
        "BASH_ENV",
        "PYTHONPATH",
        "NODE_OPTIONS",
        "path",
    ):
        why = p.check_env({"LANG": "C", risky: "/tmp/evil"})
        assert why == (
            f"env variable {risky!r} is not allowed: it changes which program runs or what it loads "
            "(only an [exec] allow list of '*' permits it)"
        )
    assert Policy(["*"], []).check_env({"LD_PRELOAD": "x.so", "PATH": "/opt/bin"}) is None


# ---------------------------------------------------------------- run as


def test_run_as_nobody_needs_root_and_an_existing_user() -> None:
    assert resolve_run_as("") is None
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert resolve_run_as(me) is None  # already that user: no switch
    with pytest.raises(RefusedError, match="'no-such-user-xyz' does not exist on this host"):
        resolve_run_as("no-such-user-xyz")
    with pytest.raises(RefusedError, match=r"cannot switch users \(that needs root\)"):
        resolve_run_as("nobody", euid=pwd.getpwnam("nobody").pw_uid + 1)
    ra = resolve_run_as("nobody", euid=0)
    assert ra is not None and ra.name == "nobody" and ra.uid == pwd.getpwnam("nobody").pw_uid


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


# ---------------------------------------------------------------- outbox


def _out(cid: str, data: str = "x") -> CommandOutput:
    return CommandOutput(command_id=cid, stream="stdout", data=data)


async def test_outbox_orders_frames_and_holds_results_while_offline() -> None:
    box = Outbox(max_output=2, max_results=2)
    assert not await box.put_output(_out("a"))  # offline: dropped, counted
    assert box.outputs_dropped == 1
    box.put_result(CommandResult(command_id="a", status="ok"))
    box.set_online(True)
    assert await box.put_output(_out("b", "1"))
    box.put_result(CommandResult(command_id="b", status="ok"))
    got = [await box.get(), await box.get(), await box.get()]
    assert [(type(f).__name__, f.command_id) for f in got] == [
        ("CommandResult", "a"),
        ("CommandOutput", "b"),
        ("CommandResult", "b"),
    ]


async def test_outbox_back_pressure_and_disconnect() -> None:
    box = Outbox(max_output=2, max_results=2)
    box.set_online(True)
    assert await box.put_output(_out("a", "1"))
    assert await box.put_output(_out("a", "2"))
    blocked = asyncio.create_task(box.put_output(_out("a", "3")))
    await asyncio.sleep(0)
    assert not blocked.done()  # full: the reader waits
    first = await box.get()
    assert isinstance(first, CommandOutput) and first.data == "1"
    assert await blocked  # room again
    box.put_result(CommandResult(command_id="a", status="ok"))
    box.set_online(False)  # the connection dropped: output goes, the result stays
    assert box.outputs_dropped == 2 and len(box) == 1 and box.held_results == 1
    box.requeue(_out("a", "lost"))
    assert box.outputs_dropped == 3
    # Too many results while offline: the oldest goes.
    box.put_result(CommandResult(command_id="b", status="ok"))
    box.put_result(CommandResult(command_id="c", status="ok"))
    assert box.results_dropped == 1
    box.set_online(True)
    assert [(await box.get()).command_id for _ in range(2)] == ["b", "c"]
