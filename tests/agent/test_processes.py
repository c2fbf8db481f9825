"""The top-processes collector against real processes: a CPU burner, a memory hog, hidden command lines."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psutil
import pytest

from servermanager.agent.collectors import MetricsCollector
from servermanager.agent.processes import PF_KTHREAD, ProcessCollector, _LinuxScan
from servermanager.agent.settings import ProcessesSettings
from servermanager.common.metrics import MAX_PROC_CMD, Metrics, ProcInfo, Sample
from servermanager.common.protocol import AgentToCore, Samples, decode, decoder, encode
from servermanager.common.settings import SettingsError
from tests.helpers.wait import wait_sync

# A marker in the command line, so a test can tell its own child apart from everything else.
BURN = "import sys; sys.argv; x = 0\nwhile True: x += 1  # sm-test-burner"
HOG = (
    "import sys, time; b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); "
    "print('ready', flush=True); time.sleep(600)  # sm-test-hog"
)


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def hog() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", HOG], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _top_until(collector: ProcessCollector, ok: object, what: str, timeout: float = 20.0) -> list[ProcInfo]:
    """Collect every 0.2 s until `ok(list)` holds: waits on the condition, never a fixed sleep."""
    last: list[ProcInfo] = []

    def probe() -> bool:
        nonlocal last
        time.sleep(0.2)  # a rate needs elapsed time between two readings
        last = collector.collect()
        return bool(ok(last))  # type: ignore[operator]

    wait_sync(probe, timeout=timeout, what=what)
    return last


def test_cpu_burner_tops_the_cpu_list(burner: subprocess.Popen[bytes]) -> None:
    collector = ProcessCollector(top=5)
    top = _top_until(
        collector,
        lambda ps: ps and ps[0].pid == burner.pid and (ps[0].cpu_pct or 0) > 20,
        "the burner first by CPU",
    )
    first = top[0]
    assert first.cmd is not None and "sm-test-burner" in first.cmd
    assert first.name.startswith("python")
    assert first.user  # this test's own user, by name
    assert first.rss > 0
    # Sorted busiest first: CPU values of the CPU ranking never increase.
    cpus = [p.cpu_pct for p in top if p.cpu_pct]
    assert cpus[0] == max(cpus)


def test_memory_hog_tops_the_memory_list(hog: subprocess.Popen[str]) -> None:
    collector = ProcessCollector(top=20)
    top = collector.collect()
    hog_entry = next((p for p in top if p.pid == hog.pid), None)
    assert hog_entry is not None, [(p.pid, p.name, p.rss) for p in top]
    assert hog_entry.rss >= 200 << 20
    # Other tests on this machine may hold more; every process clearly larger than the hog (read
    # apart, through psutil) is listed too, so the hog is ranked where it belongs.
    larger = {
        p.pid
        for p in psutil.process_iter(["memory_info"])
        if p.info["memory_info"] is not None and p.info["memory_info"].rss > hog_entry.rss * 1.2
    }
    assert len(larger) < 19, "too many large processes on this machine for the check"
    assert larger <= {p.pid for p in top}


def test_first_sight_has_no_rate(burner: subprocess.Popen[bytes]) -> None:
    collector = ProcessCollector(top=20)
    first = collector.collect()
    # No baseline yet: nothing can be ranked by CPU or I/O, and no process shows a made-up rate.
    assert first, "the memory ranking needs no baseline"
    assert all(p.cpu_pct is None and p.read_bps is None and p.write_bps is None for p in first)
    second = _top_until(
        collector, lambda ps: any(p.pid == burner.pid and p.cpu_pct for p in ps), "a rate for the burner"
    )
    assert any(p.cpu_pct is not None for p in second)


def test_a_new_process_has_no_rate_on_first_sight(burner: subprocess.Popen[bytes]) -> None:
    collector = ProcessCollector(top=20)
    collector.collect()
    time.sleep(0.2)  # a rate needs elapsed time between two readings
    late = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        top = collector.collect()
        seen = next((p for p in top if p.pid == late.pid), None)
        # It may not even rank (no CPU % yet, little memory); if it does, it has no rate yet.
        assert seen is None or seen.cpu_pct is None
        # It ranks once it has a baseline.
        _top_until(collector, lambda ps: any(p.pid == late.pid and p.cpu_pct for p in ps), "the late burner")
    finally:
        late.kill()
        late.wait()


def _fds() -> set[str]:
    return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if _readable(fd)}


def _path_of(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None  # closed


def _readable(fd: str) -> bool:
    try:
        os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False  # the listing's own descriptor, closed by now
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the /proc scan is Linux's")
def test_the_scan_keeps_descriptors_only_for_living_processes_and_within_its_budget() -> None:
    collector = ProcessCollector(top=5)
    scan = collector._scan
    assert isinstance(scan, _LinuxScan)
    child = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        wait_sync(
            lambda: bool(collector.collect()) and child.pid in scan._open, timeout=10, what="the child kept"
        )
        assert f"/proc/{child.pid}/stat" in _fds()
        assert 0 < scan._used <= _LinuxScan.kept_in_process <= scan.budget and scan.count >= len(scan._open)
        _top_until(
            collector, lambda ps: any(p.pid == child.pid and p.cpu_pct for p in ps), "the child's rate"
        )
    finally:
        child.kill()
        child.wait()
    collector.collect()
    # Ended: its descriptors are closed, not kept for a pid the next process may get.
    assert child.pid not in scan._open and f"/proc/{child.pid}/stat" not in _fds()
    held = {fd: os.readlink(f"/proc/self/fd/{fd}") for fds in scan._open.values() for fd in fds if fd >= 0}
    assert held
    collector.close()
    # Every descriptor it kept is closed (other collectors of this test process may hold their own).
    assert scan._used == 0 and scan._open == {}
    assert all(_path_of(fd) != path for fd, path in held.items())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the /proc scan is Linux's")
def test_kernel_threads_are_scanned_without_their_io() -> None:
    scan = _LinuxScan(budget=64)
    try:
        raws = {raw[0][0]: raw for raw in scan()}
    finally:
        scan.close()
    me = raws[os.getpid()]
    assert me[4] is not None and me[5] is not None  # this process's own I/O counters
    kernel = [pid for pid in raws if _flags(pid) & PF_KTHREAD]
    assert kernel, "no kernel thread in /proc: not a whole machine's view"
    assert all(raws[pid][4] is None and raws[pid][5] is None for pid in kernel)


def _flags(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0  # ended since
    return int(stat[stat.rindex(b")") + 2 :].split()[6])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the /proc scan is Linux's")
def test_processes_past_the_descriptor_budget_are_read_all_the_same(burner: subprocess.Popen[bytes]) -> None:
    collector = ProcessCollector(top=5)
    scan = collector._scan
    assert isinstance(scan, _LinuxScan)
    scan.budget = 0  # nothing kept open: every file opened, read and closed
    _top_until(
        collector, lambda ps: ps and ps[0].pid == burner.pid and (ps[0].cpu_pct or 0) > 20, "the burner first"
    )
    assert scan._open == {} and scan._used == 0


def test_a_sample_with_a_list_counts_processes_by_its_scan() -> None:
    processes = ProcessCollector(top=5)
    m = MetricsCollector(processes=processes).collect()
    assert m.procs_top and m.procs == processes.count and m.procs > 1


def test_command_lines_hidden_when_configured(burner: subprocess.Popen[bytes]) -> None:
    collector = ProcessCollector(top=20, cmdline=False)
    top = _top_until(collector, lambda ps: any(p.pid == burner.pid for p in ps), "the burner listed")
    assert all(p.cmd is None for p in top)
    assert "sm-test-burner" not in msgspec.json.encode(top).decode()


def test_command_lines_are_cut() -> None:
    long_arg = "a" * 1000
    proc = subprocess.Popen([sys.executable, "-c", BURN, long_arg])
    try:
        collector = ProcessCollector(top=20)
        top = _top_until(collector, lambda ps: any(p.pid == proc.pid for p in ps), "the burner listed")
        cmd = next(p.cmd for p in top if p.pid == proc.pid)
        assert cmd is not None and len(cmd) == MAX_PROC_CMD and cmd.endswith("…")
    finally:
        proc.kill()
        proc.wait()


def test_interval_spaces_the_lists_out() -> None:
    now = [0.0]
    collector = ProcessCollector(top=3, clock=lambda: now[0], every=5.0)
    assert collector.collect()
    now[0] = 1.0
    assert collector.collect() == []
    now[0] = 5.0
    assert collector.collect()


def test_metrics_carry_the_list_and_it_travels(burner: subprocess.Popen[bytes]) -> None:
    collector = MetricsCollector(processes=ProcessCollector(top=5))

    def burner_listed() -> bool:
        time.sleep(0.2)  # a rate needs elapsed time between two readings
        return any(p.pid == burner.pid and p.cpu_pct for p in collector.collect().procs_top)

    wait_sync(burner_listed, what="the burner in a sample")
    m = collector.collect()
    frame = decode(decoder(AgentToCore), encode(Samples(samples=[_sample(m)])))
    assert isinstance(frame, Samples)
    assert frame.samples[0].metrics.procs_top == m.procs_top
    # Without a process collector the field is left out of the frame entirely.
    bare = MetricsCollector().collect()
    assert bare.procs_top == [] and b"procs_top" not in encode(Samples(samples=[_sample(bare)]))


def _sample(m: Metrics) -> Sample:
    return Sample(seq=1, ts=time.time(), metrics=m)


def test_settings_are_checked() -> None:
    ProcessesSettings(top=20).validate()
    with pytest.raises(SettingsError, match=r"processes\.top must be 1 to 20 \(got 0\)"):
        ProcessesSettings(top=0).validate()
    with pytest.raises(SettingsError, match=r"processes\.top must be 1 to 20 \(got 21\)"):
        ProcessesSettings(top=21).validate()
    with pytest.raises(SettingsError, match=r"processes\.interval must be 0 to 1h"):
        ProcessesSettings(interval=-1).validate()
    assert ProcessesSettings(enabled=False).collector() is None
    made = ProcessesSettings(top=7, cmdline=False).collector()
    assert made is not None and made.top == 7 and not made.cmdline
