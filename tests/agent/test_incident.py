"""Incident snapshots on the agent: real processes measured, the journal through a real executable,
every size bounded, refusals when [incident] is off or the core asks too often, and the answer
travelling over a real link."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from servermanager.agent.incident import BUSY, DISABLED, Snapshots, read_journal, take, top_processes
from servermanager.agent.main import Agent
from servermanager.agent.settings import IncidentSettings, load_agent_settings
from servermanager.common.incidents import (
    MAX_CMD,
    MAX_JOURNAL_BYTES,
    MAX_JOURNAL_LINES,
    MAX_LINE,
    MAX_NAME,
    MAX_SNAPSHOT_BYTES,
    MAX_TOP,
    problems,
    summary,
)
from servermanager.common.protocol import IncidentRequest
from servermanager.common.settings import SettingsError
from tests.agent.fakes import AgentRunner, FakeCore, FakeTool, fast_settings

BURN = "print('ready', flush=True)\nwhile True: pass"
HOG = "import sys; b = b'x' * (256 << 20); print('ready', flush=True); sys.stdin.read()"


def spawn(code: str, *args: str, exe: str = sys.executable) -> subprocess.Popen[str]:
    """A child running `code`, returned once it says it is ready."""
    proc = subprocess.Popen(
        [exe, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        p.kill()
        p.communicate()  # reaps it and closes its pipes


@pytest.fixture
def journalctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bin dir first on PATH; tests put a fake journalctl in it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir


def test_a_busy_process_and_a_big_one_are_on_top(children: list[subprocess.Popen[str]]) -> None:
    burner = spawn(BURN)
    hog = spawn(HOG)
    children += [burner, hog]
    by_cpu, by_rss = top_processes(MAX_TOP)
    cpu = {p.pid: p for p in by_cpu}
    rss = {p.pid: p for p in by_rss}
    assert burner.pid in cpu, [(p.name, p.cpu_pct) for p in by_cpu]
    # One core of the machine's, whatever else runs beside it: 100 % / CPUs at most.
    assert 5.0 < cpu[burner.pid].cpu_pct <= 100.0 / (os.cpu_count() or 1) + 5
    assert hog.pid in rss and rss[hog.pid].rss >= 256 << 20
    assert [p.cpu_pct for p in by_cpu] == sorted((p.cpu_pct for p in by_cpu), reverse=True)
    assert [p.rss for p in by_rss] == sorted((p.rss for p in by_rss), reverse=True)
    me = cpu[burner.pid]
    assert me.user and me.name.startswith("python")
    assert me.read_bps is not None and me.write_bps is not None  # our own child: I/O is readable
    assert all(p.cmd is None for p in (*by_cpu, *by_rss))  # hidden unless [incident] cmdline
    # The summary names the busiest for a CPU alert, the largest for a memory one.
    snap = take(IncidentSettings(top=MAX_TOP), None)
    assert summary(snap, "cpu_pct").startswith("top: ")
    assert summary(snap, "mem_pct").startswith("top: ")


def test_names_and_command_lines_are_cut_and_lists_bounded(
    tmp_path: Path, children: list[subprocess.Popen[str]]
) -> None:
    long_exe = tmp_path / ("n" * 100)
    long_exe.symlink_to(sys.executable)
    burner = spawn(BURN, "x" * 1000, exe=str(long_exe))
    children.append(burner)
    [me] = [p for p in top_processes(MAX_TOP, cmdline=True)[0] if p.pid == burner.pid]
    assert me.name == "n" * (MAX_NAME - 1) + "…"
    assert me.cmd is not None and len(me.cmd) == MAX_CMD and me.cmd.startswith(str(long_exe))
    assert len(top_processes(2)[0]) == 2 and len(top_processes(2)[1]) == 2
    assert len(top_processes(500)[0]) <= MAX_TOP  # capped, whatever is asked


def test_the_journal_is_off_by_default(journalctl: Path) -> None:
    tool = FakeTool(journalctl, "journalctl", "*) echo 'Jan 01 sshd[1]: session opened';;")
    snap = take(IncidentSettings(), lookback=300)
    assert snap.journal is None and snap.note is None
    assert tool.calls == []  # not even run
    snap = take(IncidentSettings(journal=True, journal_lines=20), lookback=300)
    assert snap.journal == ["Jan 01 sshd[1]: session opened"]
    # The core asks for the alert's minutes before; the agent's journal_since caps it.
    take(IncidentSettings(journal=True, journal_since=600), lookback=7200)
    assert [c[0] for c in tool.calls] == ["--since=-5min", "--since=-10min"]
    assert tool.calls[0][1:] == ["-n", "20", "-o", "short-iso", "--no-pager", "-q"]


def test_the_journal_is_bounded_and_keeps_the_newest_lines(journalctl: Path) -> None:
    FakeTool(
        journalctl,
        "journalctl",
        "*) pad=$(printf '%1000s' '' | tr ' ' x); i=0\n"
        "   while [ $i -lt 2000 ]; do printf 'line %d %s\\n' $i \"$pad\"; i=$((i+1)); done;;",
    )
    lines, note = read_journal(MAX_JOURNAL_LINES, 600)
    assert all(len(line) == MAX_LINE and line.endswith("…") for line in lines)
    assert sum(len(line.encode()) + 1 for line in lines) <= MAX_JOURNAL_BYTES
    per_line = len(lines[0].encode()) + 1  # the cut mark is 3 bytes of UTF-8, and the newline
    assert lines[-1].startswith("line 1999 ") and len(lines) == MAX_JOURNAL_BYTES // per_line
    assert note == f"journal: only the last {len(lines)} of {MAX_JOURNAL_LINES} lines fit"
    # Everything at its limit still makes a snapshot the core keeps.
    snap = take(
        IncidentSettings(top=MAX_TOP, cmdline=True, journal=True, journal_lines=MAX_JOURNAL_LINES), None
    )
    assert problems(snap) is None
    assert len(msgspec.json.encode(snap)) < MAX_SNAPSHOT_BYTES


def test_journal_failures_become_notes(journalctl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeTool(journalctl, "journalctl", "*) echo 'No journal files were found.' >&2; exit 1;;")
    assert read_journal(10, 600) == ([], "journal: journalctl exited with 1: No journal files were found.")
    FakeTool(journalctl, "journalctl", "*) exec sleep 30;;")
    assert read_journal(10, 600, timeout=0.3) == ([], "journal: journalctl took longer than 0.3s")
    monkeypatch.setenv("PATH", str(journalctl.parent / "nowhere"))
    snap = take(IncidentSettings(journal=True), None)
    assert (snap.journal, snap.note) == ([], "journal: journalctl not found on this host")


async def test_off_in_the_config_refuses_with_the_reason() -> None:
    snaps = Snapshots(IncidentSettings(enabled=False))
    answer = await snaps.answer(IncidentRequest(request_id="r1"))
    assert (answer.request_id, answer.snapshot, answer.error) == ("r1", None, DISABLED)
    assert (snaps.taken, snaps.refused) == (0, 1)


async def test_one_at_a_time_and_not_too_often() -> None:
    now = [1000.0]
    snaps = Snapshots(IncidentSettings(top=3), min_gap=10.0, clock=lambda: now[0])
    first, second = await asyncio.gather(
        snaps.answer(IncidentRequest(request_id="a")), snaps.answer(IncidentRequest(request_id="b"))
    )
    assert first.snapshot is not None and len(first.snapshot.top_cpu) == 3
    assert (second.snapshot, second.error) == (None, BUSY)
    now[0] += 9.5
    again = await snaps.answer(IncidentRequest(request_id="c"))
    assert again.error == "asked too often: at most one snapshot every 10s (the last began 9.5s ago)"
    now[0] += 0.5
    assert (await snaps.answer(IncidentRequest(request_id="d"))).snapshot is not None
    assert (snaps.taken, snaps.refused) == (2, 2)


def test_the_incident_table_is_validated_and_read_from_the_environment() -> None:
    s = load_agent_settings(
        environ={"SM_AGENT_INCIDENT_TOP": "8", "SM_AGENT_INCIDENT_JOURNAL": "yes",
                 "SM_AGENT_INCIDENT_JOURNAL_SINCE": "30m"}
    )  # fmt: skip
    assert (s.incident.enabled, s.incident.top, s.incident.journal, s.incident.journal_since) == (
        True, 8, True, 1800.0
    )  # fmt: skip
    defaults = load_agent_settings(environ={}).incident
    assert (defaults.enabled, defaults.top, defaults.cmdline, defaults.journal) == (True, 5, False, False)
    for env, why in [
        ({"SM_AGENT_INCIDENT_TOP": "0"}, "incident.top must be 1 to 20 (got 0)"),
        ({"SM_AGENT_INCIDENT_TOP": "21"}, "incident.top must be 1 to 20 (got 21)"),
        ({"SM_AGENT_INCIDENT_JOURNAL_LINES": "501"}, "incident.journal_lines must be 1 to 500"),
        ({"SM_AGENT_INCIDENT_JOURNAL_SINCE": "10s"}, "incident.journal_since must be 1m to 24h"),
    ]:
        with pytest.raises(SettingsError, match=why.replace("(", r"\(").replace(")", r"\)")):
            load_agent_settings(environ=env)


async def test_a_request_over_the_link_is_answered_once(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    agent = Agent(fast_settings(tmp_path / "a", fake_core.url), "token")
    runner.start(agent)
    await fake_core.wait_until(lambda: fake_core.ws is not None and len(fake_core.batches) >= 1)
    await fake_core.send(IncidentRequest(request_id="r1", lookback=120))
    await fake_core.send(IncidentRequest(request_id="r2"))  # right behind it: refused
    await fake_core.wait_until(lambda: {"r1", "r2"} <= fake_core.incidents.keys())
    r1, r2 = fake_core.incidents["r1"], fake_core.incidents["r2"]
    assert r1.error is None and r1.snapshot is not None
    assert 1 <= len(r1.snapshot.top_cpu) <= 5 and r1.snapshot.journal is None
    assert r2.snapshot is None and r2.error == BUSY
    assert agent.snapshots.taken == 1
    n = len(fake_core.batches)
    await fake_core.wait_until(lambda: len(fake_core.batches) > n)  # and the samples flow on


async def test_an_agent_with_snapshots_off_says_so_over_the_link(
    tmp_path: Path, fake_core: FakeCore, runner: AgentRunner
) -> None:
    settings = fast_settings(tmp_path / "a", fake_core.url, incident=IncidentSettings(enabled=False))
    runner.start(Agent(settings, "token"))
    await fake_core.wait_until(lambda: fake_core.ws is not None)
    await fake_core.send(IncidentRequest(request_id="r1"))
    await fake_core.wait_until(lambda: "r1" in fake_core.incidents)
    assert fake_core.incidents["r1"].error == DISABLED
