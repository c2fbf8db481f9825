"""Incident snapshots: what a node was doing when one of its alerts fired, and its one-line summary.

The agent takes a snapshot when the core asks (an `incident_request` frame, sent once per firing
alert): the top processes by CPU and by memory, measured read-only, and, where the agent's own
config allows it, the last lines of the system journal. The limits below bound what an agent
sends and what the core keeps; an agent's own settings may ask for less, never for more.
"""

from __future__ import annotations

import msgspec

MAX_TOP = 20  # processes in each list, at most
MAX_JOURNAL_LINES = 500
MAX_JOURNAL_BYTES = 64 << 10  # the journal lines together, UTF-8
MAX_NAME = 64  # characters of a process name
MAX_USER = 32
MAX_CMD = 256  # characters of a command line
MAX_LINE = 512  # characters of one journal line
MAX_NOTE = 1000
# A whole snapshot as JSON, at most: the lists and lines above at their limits fit well inside it.
MAX_SNAPSHOT_BYTES = 128 << 10
SUMMARY_PROCESSES = 3  # processes named in a notification's summary


class ProcessInfo(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One process as measured over a short window: general enough for any top-processes list."""

    pid: int
    name: str
    cpu_pct: float  # percent of the whole machine (all CPUs together), like the cpu_pct metric
    rss: int  # resident memory, bytes
    user: str | None = None  # None where the owner could not be read
    read_bps: float | None = None  # disk I/O, bytes/s; None where the OS does not tell (or may not)
    write_bps: float | None = None
    cmd: str | None = None  # the command line, truncated; None unless the agent's config shows them


class IncidentSnapshot(msgspec.Struct, frozen=True, gc=False):
    """What a node was doing when an alert fired: its top processes and, if allowed, journal lines."""

    ts: float  # when the measurement ended, on the agent's clock
    window: float  # seconds the CPU and I/O rates were measured over
    top_cpu: list[ProcessInfo]  # the busiest first
    top_memory: list[ProcessInfo]  # the largest resident set first
    journal: list[str] | None = None  # oldest first; None when the agent's config does not allow it
    note: str | None = None  # what the agent could not do, in plain words (e.g. "journalctl not found")


def problems(s: IncidentSnapshot) -> str | None:
    """Why the core would not keep a snapshot (too big for the limits above), or None."""
    if len(s.top_cpu) > MAX_TOP or len(s.top_memory) > MAX_TOP:
        return f"more than {MAX_TOP} processes in a list"
    if s.journal is not None and len(s.journal) > MAX_JOURNAL_LINES:
        return f"more than {MAX_JOURNAL_LINES} journal lines"
    size = len(msgspec.json.encode(s))
    if size > MAX_SNAPSHOT_BYTES:
        return f"{size} bytes, more than the {MAX_SNAPSHOT_BYTES} a snapshot may take"
    return None


def _pct(v: float) -> str:
    return f"{v:.0f} %" if v >= 9.5 else f"{v:.1f} %"


def _bytes(v: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    raise AssertionError("unreachable")


def summary(s: IncidentSnapshot, metric: str) -> str:
    """'top: postgres 71 %, nginx 12 %': the processes that matter most for the alert's metric.

    Memory and swap alerts name the largest resident sets, disk I/O alerts the busiest readers or
    writers, every other metric the busiest CPU users. Processes at zero are left out; a snapshot
    with none to name says so.
    """
    if metric.startswith(("mem_", "swap_")):
        named = [(p.name, _bytes(p.rss)) for p in s.top_memory if p.rss > 0]
        what = "by memory"
    elif metric.startswith("disk_read") or metric.startswith("disk_write"):
        key = "read_bps" if metric.startswith("disk_read") else "write_bps"
        seen: dict[int, ProcessInfo] = {p.pid: p for p in (*s.top_cpu, *s.top_memory)}
        busy = sorted(
            (p for p in seen.values() if (getattr(p, key) or 0) > 0),
            key=lambda p: getattr(p, key) or 0,
            reverse=True,
        )
        named = [(p.name, _bytes(getattr(p, key) or 0) + "/s") for p in busy]
        what = "by disk I/O"
    else:
        named = [(p.name, _pct(p.cpu_pct)) for p in s.top_cpu if p.cpu_pct >= 0.05]
        what = "by CPU"
    if not named:
        return f"top {what}: nothing busy"
    return "top: " + ", ".join(f"{name} {value}" for name, value in named[:SUMMARY_PROCESSES])
