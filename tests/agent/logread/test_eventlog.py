"""The Windows Event Log reader against a typed fake of pywin32's win32evtlog (it cannot run here):
records as entries, the journal's filters, the newest-first bounded read, the follow's poll (a
cleared log included), the [logs] eventlogs setting, and the log service serving it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from servermanager.agent.logread import eventlog as ev
from servermanager.agent.logread.config import LogsSettings
from servermanager.agent.logread.service import LogService
from servermanager.agent.settings import load_agent_settings
from servermanager.common.protocol import MAX_LOG_MESSAGE, LogQuery, LogsCancel, LogsRequest
from servermanager.common.settings import SettingsError
from tests.agent.logread.test_journal import Collector

T0 = 1_780_000_000.0


@dataclass
class Record:
    """A PyEventLogRecord's fields that the reader uses."""

    RecordNumber: int
    TimeGenerated: datetime
    EventType: int
    EventID: int
    SourceName: str
    StringInserts: tuple[str, ...] | None


class FakeError(Exception):
    """pywintypes.error: (winerror, funcname, strerror)."""


@dataclass
class Handle:
    channel: str
    cursor: int | None = None  # the next record number a sequential read returns
    closed: bool = False


@dataclass
class FakeEvtLog:
    """win32evtlog as far as the reader uses it: record numbers grow from `oldest`, reads return
    batches of `batch` records the way ReadEventLog fills its buffer, and a seek to a number that is
    not there fails as Windows does (ERROR_INVALID_PARAMETER)."""

    EVENTLOG_SEQUENTIAL_READ = 0x0001
    EVENTLOG_SEEK_READ = 0x0002
    EVENTLOG_FORWARDS_READ = 0x0004
    EVENTLOG_BACKWARDS_READ = 0x0008

    logs: dict[str, list[Record]] = field(default_factory=dict)
    batch: int = 7
    handles: list[Handle] = field(default_factory=list)
    reads: int = 0

    def add(self, channel: str, at: float, etype: int, event_id: int, source: str, *inserts: str) -> None:
        records = self.logs.setdefault(channel, [])
        number = records[-1].RecordNumber + 1 if records else 1
        when = datetime.fromtimestamp(at, UTC)
        records.append(Record(number, when, etype, event_id, source, tuple(inserts) or None))

    def clear(self, channel: str) -> None:
        # Clearing keeps numbering going on Windows; the oldest becomes the next one written.
        records = self.logs[channel]
        self.logs[channel] = []
        self._next_after_clear = records[-1].RecordNumber + 1 if records else 1

    def OpenEventLog(self, server: str | None, source: str) -> Handle:
        assert server is None
        if source not in self.logs:
            raise FakeError(1722, "OpenEventLog", "The RPC server is unavailable.")
        h = Handle(source)
        self.handles.append(h)
        return h

    def _records(self, h: Handle) -> list[Record]:
        assert not h.closed
        return self.logs[h.channel]

    def GetOldestEventLogRecord(self, h: Handle) -> int:
        records = self._records(h)
        return records[0].RecordNumber if records else getattr(self, "_next_after_clear", 1)

    def GetNumberOfEventLogRecords(self, h: Handle) -> int:
        return len(self._records(h))

    def ReadEventLog(self, h: Handle, flags: int, offset: int) -> list[Record]:
        self.reads += 1
        records = self._records(h)
        by_number = {r.RecordNumber: i for i, r in enumerate(records)}
        forwards = bool(flags & self.EVENTLOG_FORWARDS_READ)
        assert forwards != bool(flags & self.EVENTLOG_BACKWARDS_READ), "one direction"
        if flags & self.EVENTLOG_SEEK_READ:
            if offset not in by_number:
                raise FakeError(87, "ReadEventLog", "The parameter is incorrect.")
            i = by_number[offset]
        elif h.cursor is None:
            i = 0 if forwards else len(records) - 1
        elif h.cursor in by_number:
            i = by_number[h.cursor]
        else:
            return []
        if forwards:
            out = records[i : i + self.batch]
            h.cursor = out[-1].RecordNumber + 1 if out else h.cursor
        else:
            out = records[max(0, i - self.batch + 1) : i + 1][::-1]
            h.cursor = out[-1].RecordNumber - 1 if out else h.cursor
        return out

    def CloseEventLog(self, h: Handle) -> None:
        h.closed = True


def formatter(record: Any, channel: str) -> str:
    # What SafeFormatMessage gives: the source's message text with the inserts, over lines.
    return f"{record.SourceName} says:\r\n\t" + " / ".join(record.StringInserts or ())


def fake_with(n: int = 0) -> FakeEvtLog:
    api = FakeEvtLog()
    api.logs = {"System": [], "Application": []}
    types = (ev.INFORMATION, ev.WARNING, ev.ERROR, ev.AUDIT_SUCCESS)
    for i in range(n):
        api.add("System", T0 + i, types[i % 4], 7036 | (0x4000 << 16), f"Service{i % 3}", f"line {i}")
    return api


def test_a_record_reads_as_one_entry() -> None:
    api = fake_with(3)
    err = api.logs["System"][2]
    e = ev.to_entry(err, "System", formatter)
    # Time, syslog priority of an error, the source as the unit, the id's low 16 bits, one line.
    assert (e.ts, e.priority, e.unit) == (T0 + 2, 3, "Service2")
    assert e.message == "event 7036: Service2 says: line 2"
    assert [ev.to_entry(r, "System").priority for r in api.logs["System"]] == [6, 4, 3]
    bare = Record(9, datetime.fromtimestamp(T0, UTC), ev.AUDIT_FAILURE, 4625, "Security-Auditing", None)
    assert ev.to_entry(bare, "Security").message == "event 4625" and ev.to_entry(bare, "S").priority == 4
    long = Record(10, datetime.fromtimestamp(T0, UTC), ev.INFORMATION, 1, "App", ("x" * 20_000,))
    assert len(ev.to_entry(long, "Application").message) == MAX_LOG_MESSAGE


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        (LogQuery(source="eventlog:System"), [0, 1, 2, 3, 4, 5]),
        (LogQuery(source="eventlog:System", priority=4), [1, 2, 5]),  # warning or worse
        (LogQuery(source="eventlog:System", priority=3), [2]),
        (LogQuery(source="eventlog:System", since=T0 + 2, until=T0 + 4), [2, 3, 4]),
        (LogQuery(source="eventlog:System", unit="Service1"), [1, 4]),
        (LogQuery(source="eventlog:System", unit="Service[02]"), [0, 2, 3, 5]),  # a glob, as journalctl -u
        (LogQuery(source="eventlog:System", match="line 5"), [5]),
    ],
)
def test_the_journals_filters_apply(query: LogQuery, kept: list[int]) -> None:
    api = fake_with(6)
    entries = [ev.to_entry(r, "System", formatter) for r in api.logs["System"]]
    assert [i for i, e in enumerate(entries) if ev.passes(e, query)] == kept
    got = ev.read_recent(api, "System", query, 100, 1 << 20, formatter)
    assert [e.message.rsplit(" ", 1)[-1] for e in got.entries] == [str(i) for i in kept]
    assert not got.truncated and all(h.closed for h in api.handles)


def test_the_newest_lines_oldest_first_and_a_short_range_reads_little() -> None:
    api = fake_with(1000)
    got = ev.read_recent(api, "System", LogQuery(source="eventlog:System"), 5, 1 << 20, formatter)
    assert [e.ts for e in got.entries] == [T0 + i for i in range(995, 1000)]
    api.reads = 0
    since = LogQuery(source="eventlog:System", since=T0 + 990, priority=3)
    got = ev.read_recent(api, "System", since, 100, 1 << 20, formatter)
    assert [e.ts for e in got.entries] == [T0 + 990, T0 + 994, T0 + 998]
    assert api.reads <= 3  # newest first, stopped at `since`: 11 records in batches of 7
    cut = ev.read_recent(api, "System", LogQuery(source="eventlog:System"), 1000, 4096, formatter)
    assert cut.truncated and "max_bytes_per_request = 4096" in (cut.note or "")
    assert cut.entries[-1].ts == T0 + 999 and sum(ev.entry_size(e) for e in cut.entries) <= 4096


def test_a_filter_that_matches_nothing_stops_at_the_scan_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "SCAN_LIMIT", 50)
    api = fake_with(200)
    got = ev.read_recent(
        api, "System", LogQuery(source="eventlog:System", match="nope"), 10, 1 << 20, formatter
    )
    assert got.entries == [] and got.truncated and got.note == "looked at the newest 50 records only"


def test_the_follower_sends_what_is_new_and_survives_a_clear() -> None:
    api = fake_with(10)
    f = ev.Follower(api, "System", formatter)
    assert f.last == 10 and f.poll(100) == ([], 0)
    for i in range(10, 30):
        api.add("System", T0 + i, ev.INFORMATION, 1, "App", f"line {i}")
    got, skipped = f.poll(100)
    assert [e.message.rsplit(" ", 1)[-1] for e in got] == [str(i) for i in range(10, 30)] and skipped == 0
    for i in range(30, 40):
        api.add("System", T0 + i, ev.INFORMATION, 1, "App", f"line {i}")
    got, skipped = f.poll(4)  # a flood past the limit is skipped and counted, not queued
    assert len(got) == 4 and skipped == 6 and f.poll(100) == ([], 0)
    api.clear("System")
    assert f.poll(100) == ([], 0) and f.take_notes() == []  # cleared, numbering going on: nothing lost
    api.add("System", T0 + 50, ev.ERROR, 2, "Disk", "after the clear")
    got, _ = f.poll(100)
    assert [e.message for e in got] == ["event 2: Disk says: after the clear"]
    f.close()
    assert all(h.closed for h in api.handles)


def test_the_follower_notices_a_log_cleared_and_refilled_between_polls() -> None:
    api = fake_with(0)
    api.logs["System"] = []
    for i in range(5):
        api.add("System", T0 + i, ev.INFORMATION, 1, "App", f"old {i}")
    f = ev.Follower(api, "System", formatter)
    # Cleared, then renumbered from 1 (a log whose file was replaced): fewer records than seen.
    api.logs["System"] = []
    api.add("System", T0 + 10, ev.WARNING, 3, "App", "new 0")
    got, _ = f.poll(100)
    assert [e.message for e in got] == ["event 3: App says: new 0"]
    assert f.take_notes() == ["the System event log was cleared"]


def test_the_follower_says_when_records_were_overwritten_unread() -> None:
    api = fake_with(10)
    f = ev.Follower(api, "System", formatter)
    for i in range(10, 20):
        api.add("System", T0 + i, ev.INFORMATION, 1, "App", f"line {i}")
    del api.logs["System"][:15]  # a full log: the oldest overwritten, 11..15 among them, unread
    got, _ = f.poll(100)
    assert [e.message.rsplit(" ", 1)[-1] for e in got] == ["15", "16", "17", "18", "19"]
    assert f.take_notes() == ["5 records were overwritten before they could be read"]


def test_an_unknown_channel_is_refused_precisely() -> None:
    api = fake_with(1)
    with pytest.raises(ev.LogRefused) as info:
        ev.read_recent(api, "Nope", LogQuery(source="eventlog:Nope"), 10, 1 << 20, formatter)
    assert str(info.value) == "cannot open the Nope event log: The RPC server is unavailable."


def test_the_eventlogs_setting(tmp_path: Path) -> None:
    assert LogsSettings().eventlogs == ["System", "Application"]
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "s"}"\n[logs]\neventlogs = ["System", "Microsoft-Windows-PowerShell/Operational"]\n'
    )
    assert load_agent_settings(config_file=cfg, environ={}).logs.eventlogs[1].endswith("/Operational")
    cfg.write_text(f'state_dir = "{tmp_path / "s"}"\n[logs]\neventlogs = ["--System"]\n')
    with pytest.raises(SettingsError, match=r"logs.eventlogs: '--System' is not an event log name"):
        load_agent_settings(config_file=cfg, environ={})


def test_elsewhere_than_windows_no_event_log_is_offered() -> None:
    svc = LogService(LogsSettings())
    assert ev.load_api() is None  # this machine is not Windows
    assert svc.sources().eventlogs == []


async def test_the_service_refuses_without_pywin32_and_outside_the_setting() -> None:
    out = Collector()
    LogService(LogsSettings()).handle(
        LogsRequest(request_id="a", query=LogQuery(source="eventlog:System")), out.send
    )
    await out.until(lambda: any(c.eof for c in out.chunks))
    assert out.chunks[-1].code == "refused"
    assert (
        out.chunks[-1].error
        == "the Windows Event Log can be read only where the agent runs on Windows (with pywin32)"
    )
    svc = LogService(LogsSettings(eventlogs=["System"]), eventlog=(fake_with(3), formatter))
    assert svc.sources().eventlogs == ["System"]
    out = Collector()
    svc.handle(LogsRequest(request_id="b", query=LogQuery(source="eventlog:Security")), out.send)
    await out.until(lambda: any(c.eof for c in out.chunks))
    assert out.chunks[-1].error == "the 'Security' event log is not in this agent's [logs] eventlogs"


async def test_the_service_reads_and_follows_the_event_log() -> None:
    api = fake_with(20)
    svc = LogService(LogsSettings(max_bytes_per_second=2048), poll_every=0.05, eventlog=(api, formatter))
    out = Collector()
    svc.handle(
        LogsRequest(request_id="one", query=LogQuery(source="eventlog:System", priority=3, lines=2)), out.send
    )
    await out.until(lambda: any(c.eof for c in out.chunks))
    assert out.messages() == ["event 7036: Service2 says: line 14", "event 7036: Service0 says: line 18"]

    follow = Collector()
    q = LogQuery(source="eventlog:System", lines=1, match="svc")
    svc.handle(LogsRequest(request_id="f", query=q, follow=True), follow.send)
    await follow.until(lambda: svc.following == 1 and bool(follow.chunks))
    assert follow.messages() == []  # nothing old says "svc"
    api.add("System", T0 + 100, ev.INFORMATION, 1, "App", "svc started")
    api.add("System", T0 + 101, ev.INFORMATION, 1, "App", "other")
    await follow.until(lambda: "event 1: App says: svc started" in follow.messages())
    for i in range(300):  # 300 x ~70 bytes at once: over 2048 per second
        api.add("System", T0 + 200, ev.INFORMATION, 1, "App", f"svc flood {i} " + "x" * 40)
    await follow.until(lambda: any(c.truncated for c in follow.chunks))
    cut = next(c for c in follow.chunks if c.truncated)
    assert "entries skipped: over max_bytes_per_second = 2048" in (cut.note or "")
    assert sum(ev.entry_size(e) for c in follow.chunks for e in c.entries) <= 2 * 2048
    svc.handle(LogsCancel(request_id="f"), follow.send)
    await follow.until(lambda: svc.following == 0)
    await follow.until(lambda: all(h.closed for h in api.handles))
