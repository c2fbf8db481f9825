"""The [exec] policy: allow and deny patterns, shell metacharacters, risky env variables."""

from __future__ import annotations

import fnmatch

from servermanager.common.exec_policy import Policy, compile_patterns

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
