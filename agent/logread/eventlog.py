"""The Windows Event Log through pywin32's win32evtlog: records as log entries, the journal's filters
applied to them, the bounded newest-first read and the follow's poll.

Blocking calls, run in a thread by the log service. win32evtlog is reached only through the
EvtLogApi protocol below (the module itself on Windows), so the logic runs and is tested anywhere.
"""

from __future__ import annotations

import fnmatch
import importlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from servermanager.agent.logread.config import LogRefused
from servermanager.common.protocol import MAX_LOG_MESSAGE, LogEntry, LogQuery

# How far one read looks back for entries that pass its filters: a filter that matches nothing must
# not walk a million records of a busy Application log.
SCAN_LIMIT = 50_000
# The event types of the classic Event Log, as the journal's syslog priorities (0 emerg .. 7 debug),
# so one priority filter serves both: error -> err, warning -> warning, information -> info.
ERROR, WARNING, INFORMATION, AUDIT_SUCCESS, AUDIT_FAILURE = 1, 2, 4, 8, 16
PRIORITY = {ERROR: 3, WARNING: 4, INFORMATION: 6, AUDIT_SUCCESS: 6, AUDIT_FAILURE: 4}


class EventRecord(Protocol):
    """What a win32evtlog record (PyEventLogRecord) carries that an entry uses."""

    RecordNumber: int
    TimeGenerated: Any  # a pywintypes datetime: .timestamp()
    EventType: int
    EventID: int
    SourceName: str
    StringInserts: tuple[str, ...] | None


class EvtLogApi(Protocol):
    """The part of pywin32's win32evtlog module read here."""

    EVENTLOG_BACKWARDS_READ: int
    EVENTLOG_FORWARDS_READ: int
    EVENTLOG_SEEK_READ: int
    EVENTLOG_SEQUENTIAL_READ: int

    def OpenEventLog(self, server: str | None, source: str) -> Any: ...
    def ReadEventLog(self, handle: Any, flags: int, offset: int) -> list[EventRecord]: ...
    def GetOldestEventLogRecord(self, handle: Any) -> int: ...
    def GetNumberOfEventLogRecords(self, handle: Any) -> int: ...
    def CloseEventLog(self, handle: Any) -> None: ...


Formatter = Callable[[EventRecord, str], str]


def load_api() -> tuple[EvtLogApi, Formatter] | None:
    """pywin32's win32evtlog and its message formatter, or None where the agent is not on Windows
    or pywin32 is missing."""
    if sys.platform != "win32":
        return None
    try:
        api = importlib.import_module("win32evtlog")
        util = importlib.import_module("win32evtlogutil")
    except ImportError:
        return None

    def formatted(record: EventRecord, channel: str) -> str:
        # The message DLL of the event's source fills its text; without one, the inserts alone.
        return str(util.SafeFormatMessage(record, channel) or "") or inserts_text(record)

    return cast(EvtLogApi, api), formatted


def inserts_text(record: EventRecord) -> str:
    return " ".join(record.StringInserts or ())


def to_entry(record: EventRecord, channel: str, fmt: Formatter = lambda r, _c: inserts_text(r)) -> LogEntry:
    """One record as a log entry: its time, priority by event type, its source as the unit, and
    "event <id>: <message>" (the id's low 16 bits, as Event Viewer shows it)."""
    when = record.TimeGenerated
    ts = float(when.timestamp()) if when is not None else None
    text = " ".join(fmt(record, channel).split())  # one line: messages carry CR LF and tabs
    message = f"event {record.EventID & 0xFFFF}: {text}" if text else f"event {record.EventID & 0xFFFF}"
    if len(message) > MAX_LOG_MESSAGE:
        message = message[: MAX_LOG_MESSAGE - 1] + "…"
    return LogEntry(ts, PRIORITY.get(record.EventType, 6), (record.SourceName or "")[:256] or None, message)


def passes(entry: LogEntry, q: LogQuery) -> bool:
    """The journal's filters on an entry: priority (that level or more urgent), since, until, unit
    (the event's source; globs as journalctl -u takes them) and match (message contains)."""
    if q.priority is not None and (entry.priority is None or entry.priority > q.priority):
        return False
    if entry.ts is not None:
        if q.since is not None and entry.ts < q.since:
            return False
        if q.until is not None and entry.ts > q.until:
            return False
    if q.unit is not None and not fnmatch.fnmatchcase(entry.unit or "", q.unit):
        return False
    return q.match is None or q.match in entry.message


def entry_size(e: LogEntry) -> int:
    return len(e.message.encode()) + 40


@dataclass
class Recent:
    entries: list[LogEntry]  # oldest first
    truncated: bool = False
    note: str | None = None


def _open(api: EvtLogApi, channel: str) -> Any:
    try:
        return api.OpenEventLog(None, channel)
    except Exception as exc:  # pywintypes.error: (code, function, text)
        raise LogRefused(f"cannot open the {channel} event log: {_why(exc)}", "failed") from None


def _why(exc: Exception) -> str:
    args = exc.args
    return str(args[2]) if len(args) >= 3 else str(exc)


def _backwards(api: EvtLogApi, handle: Any) -> Iterator[EventRecord]:
    flags = api.EVENTLOG_BACKWARDS_READ | api.EVENTLOG_SEQUENTIAL_READ
    while True:
        batch = api.ReadEventLog(handle, flags, 0)
        if not batch:
            return
        yield from batch


def read_recent(
    api: EvtLogApi,
    channel: str,
    q: LogQuery,
    lines: int,
    max_bytes: int,
    fmt: Formatter,
    upto: int | None = None,
) -> Recent:
    """The newest `lines` entries of `channel` that pass the query's filters, oldest first, within
    `max_bytes`; read newest first and stopped at `since`, so a short time range reads little.
    `upto`: records past this number are left out (a follow's poll sends those)."""
    handle = _open(api, channel)
    try:
        kept: list[LogEntry] = []
        used = scanned = 0
        notes: list[str] = []
        truncated = False
        for record in _backwards(api, handle):
            if upto is not None and record.RecordNumber > upto:
                continue
            scanned += 1
            if scanned > SCAN_LIMIT:
                notes.append(f"looked at the newest {SCAN_LIMIT} records only")
                truncated = True
                break
            e = to_entry(record, channel, fmt)
            if q.since is not None and e.ts is not None and e.ts < q.since:
                break  # newest first: everything after this is older still
            if not passes(e, q):
                continue
            if used + entry_size(e) > max_bytes:
                notes.append(f"older entries left out: over max_bytes_per_request = {max_bytes}")
                truncated = True
                break
            kept.append(e)
            used += entry_size(e)
            if len(kept) >= lines:
                break
        kept.reverse()
        return Recent(kept, truncated, "; ".join(notes) or None)
    finally:
        api.CloseEventLog(handle)


@dataclass
class Follower:
    """New records of one channel since the last poll (by record number), in order."""

    api: EvtLogApi
    channel: str
    fmt: Formatter
    handle: Any = None
    last: int = 0  # the newest record number already seen
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.handle = _open(self.api, self.channel)
        self.last = self._newest()

    def _newest(self) -> int:
        # An empty log's newest is just before its oldest: the number the next record will take.
        count = self.api.GetNumberOfEventLogRecords(self.handle)
        return self.api.GetOldestEventLogRecord(self.handle) + count - 1

    def poll(self, limit: int) -> tuple[list[LogEntry], int]:
        """Entries of the records written since the last poll, at most `limit` (the rest are skipped
        and counted: a flood is not queued), and how many were skipped."""
        newest = self._newest()
        if newest < self.last:
            # Cleared (or wrapped): start again from what is there now.
            self.notes.append(f"the {self.channel} event log was cleared")
            self.last = self.api.GetOldestEventLogRecord(self.handle) - 1
        if newest <= self.last:
            return [], 0
        out: list[LogEntry] = []
        start = self.last + 1
        oldest = self.api.GetOldestEventLogRecord(self.handle)
        if oldest > start:
            # A full log overwrites its oldest records: those written and gone between two polls.
            if self.last > 0:
                self.notes.append(f"{oldest - start} records were overwritten before they could be read")
            start = oldest
        flags = self.api.EVENTLOG_FORWARDS_READ | self.api.EVENTLOG_SEEK_READ
        skipped = 0
        while self.last < newest:
            batch = self.api.ReadEventLog(self.handle, flags, start)
            flags = self.api.EVENTLOG_FORWARDS_READ | self.api.EVENTLOG_SEQUENTIAL_READ
            if not batch:
                break
            for record in batch:
                if record.RecordNumber > newest:
                    break
                self.last = record.RecordNumber
                if len(out) < limit:
                    out.append(to_entry(record, self.channel, self.fmt))
                else:
                    skipped += 1
        return out, skipped

    def take_notes(self) -> list[str]:
        notes, self.notes = self.notes, []
        return notes

    def close(self) -> None:
        self.api.CloseEventLog(self.handle)
