"""A command leaves nothing behind: background, setsid and daemonized processes end with it, its
orphans are reaped, and its result says what was stopped only once it is gone (real processes)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from servermanager.agent.exec.runner import CommandRunner
from servermanager.agent.exec.tree import Outcome, Proc
from servermanager.common.protocol import Command
from tests.agent.exec.test_runner import Collector, settings
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="a command's whole process tree is tracked on Linux only"
)


def alive_with(arg: str) -> list[psutil.Process]:
    """Live (not zombie) processes with `arg` as one of their arguments."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if arg in (p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def zombies_named(name: str) -> list[psutil.Process]:
    """Zombies anywhere on the system whose name is `name` (a zombie keeps its name)."""
    return [
        p
        for p in psutil.process_iter(["name", "status"])
        if p.info["name"] == name and p.info["status"] == psutil.STATUS_ZOMBIE
    ]


def running_named(name: str) -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["name", "status"])
        if p.info["name"] == name and p.info["status"] != psutil.STATUS_ZOMBIE
    ]


def own_foreign_zombies() -> list[int]:
    """Zombie children of this process outside its session: orphans nobody reaped."""
    me, sid = os.getpid(), os.getsid(0)
    out = []
    for child in psutil.Process(me).children():
        try:
            if child.status() == psutil.STATUS_ZOMBIE and os.getsid(child.pid) != sid:
                out.append(child.pid)
        except (psutil.Error, OSError):
            pass
    return out


@pytest.fixture
def tag() -> Iterator[str]:
    """A unique `sleep` argument (300.<random>) that finds a test's leftovers; they are killed after."""
    value = f"300.{secrets.randbelow(10**9):09d}"
    try:
        yield value
    finally:
        for p in alive_with(value):
            with contextlib.suppress(psutil.Error):
                p.kill()


@pytest.fixture
async def make() -> AsyncIterator[Any]:
    made: list[tuple[CommandRunner, Collector]] = []

    def build(**kw: Any) -> tuple[CommandRunner, Collector]:
        kw.setdefault("services", None)
        kw.setdefault("grace", 0.5)
        runner = CommandRunner(settings(), **kw)
        collector = Collector(runner)
        made.append((runner, collector))
        return runner, collector

    yield build
    for runner, collector in made:
        await runner.shutdown()
        await collector.close()


DAEMON = (
    "import os, sys\n"
    "if os.fork(): os._exit(0)\n"
    "os.setsid()\n"
    "if os.fork(): os._exit(0)\n"
    "fd = os.open(os.devnull, os.O_RDWR)\n"
    "[os.dup2(fd, i) for i in (0, 1, 2)]\n"
    "os.execvp('sleep', ['sleep', sys.argv[1]])\n"
)

LEAVERS = {
    "nohup": "nohup sleep {tag} >/dev/null 2>&1 &",
    "setsid": "setsid sleep {tag} >/dev/null 2>&1 &",
    "setsid holding the output": "setsid sleep {tag} &",
    "double fork in the shell": "(setsid sleep {tag} >/dev/null 2>&1 &) &",
    "double-fork daemon": f"{sys.executable} -c {shlex.quote(DAEMON)} {{tag}}",
    "env cleared": "env -i setsid sleep {tag} >/dev/null 2>&1 &",
}


@pytest.mark.parametrize("shell", LEAVERS.values(), ids=LEAVERS.keys())
async def test_what_a_command_leaves_running_is_stopped_before_its_result(
    make: Any, tag: str, shell: str
) -> None:
    runner, _ = make(linger=0.3)
    r = await runner.execute(Command("c1", 30, shell=shell.format(tag=tag)))
    # Already gone when the result says so, not some time later.
    assert alive_with(tag) == []
    assert (r.status, r.exit_code) == ("ok", 0), r
    assert r.message is not None
    # One, or a moment earlier also the parent that was about to exit (the daemon's first child).
    assert re.fullmatch(
        r"(1 leftover process \(\w+\) was|[23] leftover processes \([\w, ]+\) were) "
        r"stopped after the command ended",
        r.message,
    ), r.message


async def test_timeout_stops_the_whole_tree_and_says_what(make: Any, tag: str) -> None:
    runner, col = make()
    runner.submit(
        Command("c1", 0.5, shell=f"setsid sleep {tag} >/dev/null 2>&1 & (setsid sleep {tag} &) ; sleep 30")
    )
    r = await col.wait_result("c1")
    assert alive_with(tag) == []
    assert (r.status, r.signal) == ("timeout", signal.SIGTERM)
    # The two that left its process group; its group going down with it is no news.
    assert r.message is not None
    assert re.fullmatch(
        r"timed out after 0\.5s; 2 processes that had left the command's process group "
        r"\((2 sleep|setsid, sleep|2 setsid)\) were stopped too",
        r.message,
    ), r.message


async def test_cancel_stops_a_daemon_the_command_started(make: Any, tag: str) -> None:
    runner, col = make()
    runner.submit(
        Command("c1", 60, shell=f"{sys.executable} -c {shlex.quote(DAEMON)} {tag}; echo started; sleep 30")
    )
    await wait_for(lambda: col.text("c1") == "started\n" and alive_with(tag), 10, "the daemon to start")
    daemon = alive_with(tag)[0]
    assert daemon.ppid() == os.getpid()  # re-parented to the agent, not to PID 1
    runner.cancel("c1")
    r = await col.wait_result("c1")
    assert alive_with(tag) == []
    assert (r.status, r.signal) == ("cancelled", signal.SIGTERM)
    assert r.message == "1 process that had left the command's process group (sleep) was stopped too"


async def test_sigterm_is_not_the_end_of_it(make: Any, tag: str, tmp_path: Path) -> None:
    runner, _ = make(grace=0.3, linger=0.2)
    ready = tmp_path / "ready"
    # A leftover in a session of its own that ignores SIGTERM, and its child; ready before exit.
    shell = (
        f"setsid sh -c 'trap \"\" TERM; sleep {tag} & : >{ready}; wait' >/dev/null 2>&1 & "
        f"while [ ! -e {ready} ]; do :; done"
    )
    r = await runner.execute(Command("c1", 30, shell=shell))
    assert alive_with(tag) == []
    assert r.message == "2 leftover processes (sh, sleep) were stopped after the command ended"


async def test_output_written_after_the_main_process_exits_is_still_collected(make: Any) -> None:
    runner, col = make(linger=2.0)
    r = await runner.execute(Command("c1", 30, shell="echo a; (sleep 0.2; echo b) &"))
    await col.settle()
    assert (r.status, r.message) == ("ok", None)
    assert col.text("c1") == "a\nb\n"


async def test_another_commands_orphan_is_left_to_it(make: Any, tag: str) -> None:
    """An orphan that cleared its marker belongs to the command running when it started."""
    runner, col = make()
    runner.submit(
        Command("long", 60, shell=f"(env -i setsid sleep {tag} >/dev/null 2>&1 &); echo started; sleep 30")
    )
    await wait_for(lambda: col.text("long") == "started\n" and alive_with(tag), 10, "the orphan to start")
    r = await runner.execute(Command("short", 10, argv=["true"]))
    assert (r.status, r.message) == ("ok", None)
    assert len(alive_with(tag)) == 1
    runner.cancel("long")
    r = await col.wait_result("long")
    assert alive_with(tag) == []
    assert r.status == "cancelled"
    assert r.message == "1 process that had left the command's process group (sleep) was stopped too"


async def test_no_zombies_pile_up_after_many_commands(make: Any, tmp_path: Path) -> None:
    name = f"smz{secrets.token_hex(4)}"
    (tmp_path / name).symlink_to("/bin/true")
    runner, _ = make()
    before = set(own_foreign_zombies())
    for i in range(20):
        # The subshell exits at once, so its child is an orphan; it exits soon after.
        r = await runner.execute(Command(f"c{i}", 10, shell=f"({tmp_path / name} &)", cwd=str(tmp_path)))
        assert r.status == "ok", r
    assert zombies_named(name) == []
    assert set(own_foreign_zombies()) - before == set()


async def test_orphans_are_reaped_while_their_command_still_runs(make: Any, tmp_path: Path) -> None:
    name = f"smz{secrets.token_hex(4)}"
    (tmp_path / name).symlink_to("/bin/sleep")
    runner, col = make()
    # Ten orphans (their subshell exits at once) that end on their own while the command runs on.
    shell = f"i=0; while [ $i -lt 10 ]; do ({tmp_path / name} 2 &); i=$((i+1)); done; echo spawned; sleep 30"
    runner.submit(Command("c1", 60, shell=shell))
    await wait_for(lambda: col.text("c1") == "spawned\n", 10, "the orphans to be started")
    orphans = running_named(name)
    assert len(orphans) == 10
    assert {p.ppid() for p in orphans} == {os.getpid()}  # the agent's now, not PID 1's
    await wait_for(lambda: not running_named(name), 10, "the orphans to exit")
    await wait_for(lambda: zombies_named(name) == [], 5, "the agent to reap them")
    assert runner.running == ["c1"]
    runner.cancel("c1")
    assert (await col.wait_result("c1")).status == "cancelled"


def test_a_process_that_still_runs_is_never_called_stopped() -> None:
    """The words for what could not be stopped (a process that switched to a user the agent may
    not signal cannot be made here, where the tests run as root or as one user)."""
    out = Outcome(
        stopped=[Proc(10, "sleep", "root")],
        running=[
            Proc(11, "sleep", "bob", "permission denied"),
            Proc(12, "backupd", "root", "still running after SIGKILL"),
        ],
    )
    assert out.describe(ended=True) == (
        "1 leftover process (sleep) was stopped after the command ended; "
        "2 processes of the command could not be stopped and still run: "
        "pid 11 sleep (user bob): permission denied; pid 12 backupd (user root): still running after SIGKILL"
    )
    assert Outcome(stopped=[Proc(10, "sh", "", grouped=True)]).describe(ended=False) is None
