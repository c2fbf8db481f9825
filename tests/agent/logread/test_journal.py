"""The journal reader: parsing real `journalctl -o json` lines, and the real journalctl reading a real
journal file (written by systemd-journal-remote, as no journald runs here) once and in follow mode."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from servermanager.agent.logread.config import LogRefused, LogsSettings
from servermanager.agent.logread.journal import journal_argv, parse_entry
from servermanager.agent.logread.service import LogService
from servermanager.common.protocol import LogEntry, LogQuery, LogsCancel, LogsChunk, LogsRequest
from tests.helpers.wait import wait_until

# Captured from `journalctl -o json` (systemd 252): a text message, a binary one (byte array), one without a unit.
CAPTURED = [
    b'{"MESSAGE":"hello from test","PRIORITY":"3","__CURSOR":"s=81;i=1","__REALTIME_TIMESTAMP":"1700000000000000",'
    b'"_SYSTEMD_UNIT":"nginx.service","_BOOT_ID":"0123456789abcdef0123456789abcdef","__MONOTONIC_TIMESTAMP":"1"}',
    b'{"MESSAGE":[104,105,255],"PRIORITY":"6","__REALTIME_TIMESTAMP":"1700000001500000","SYSLOG_IDENTIFIER":"kernel"}',
    b'{"MESSAGE":null,"__REALTIME_TIMESTAMP":"x"}',
]
REMOTE = "/usr/lib/systemd/systemd-journal-remote"


def test_parse_captured_lines() -> None:
    assert parse_entry(CAPTURED[0]) == LogEntry(1700000000.0, 3, "nginx.service", "hello from test")
    assert parse_entry(CAPTURED[1]) == LogEntry(1700000001.5, 6, "kernel", "hi\ufffd")
    assert parse_entry(CAPTURED[2]) == LogEntry(None, None, None, "")
    assert parse_entry(b"not json") is None
    assert parse_entry(b"[1, 2]") is None


def test_argv_never_lets_a_value_be_an_option() -> None:
    q = LogQuery(unit="nginx.service", priority=3, since=1700000000.0, until=1700000060.0, lines=50)
    argv = journal_argv("journalctl", q, 50, follow=True, directory="/j")
    assert argv == [
        "journalctl",
        "--output=json",
        "--no-pager",
        "--quiet",
        "--lines=50",
        "--directory=/j",
        "--unit=nginx.service",
        "--priority=3",
        "--since=@1700000000.000000",
        "--until=@1700000060.000000",
        "--follow",
    ]
    for bad in ("-f", "--all", "a b", "x;reboot"):
        with pytest.raises(LogRefused, match="invalid unit"):
            journal_argv("journalctl", LogQuery(unit=bad), 10, follow=False)


def write_journal(directory: Path, name: str, entries: list[tuple[int, int, str, str]]) -> None:
    """A real journal file: export format through systemd-journal-remote."""
    export = b"".join(
        f"__REALTIME_TIMESTAMP={ts}\n__MONOTONIC_TIMESTAMP={i + 1}\n_BOOT_ID={'ab' * 16}\n"
        f"PRIORITY={prio}\n_SYSTEMD_UNIT={unit}\nMESSAGE={msg}\n\n".encode()
        for i, (ts, prio, unit, msg) in enumerate(entries)
    )
    subprocess.run(
        [REMOTE, f"--output={directory / name}", "-"],
        input=export,
        check=True,
        capture_output=True,
        timeout=30,
    )


needs_journal_tools = pytest.mark.skipif(
    shutil.which("journalctl") is None or not Path(REMOTE).exists(),
    reason="needs journalctl and systemd-journal-remote (Debian: systemd, systemd-journal-remote)",
)


class Collector:
    """Where the service sends its chunks: kept in order, with a condition to wait on."""

    def __init__(self) -> None:
        self.chunks: list[LogsChunk] = []

    async def send(self, chunk: LogsChunk) -> None:
        self.chunks.append(chunk)

    async def until(self, pred: Callable[[], object], timeout: float = 10.0) -> None:
        await wait_until(lambda: asyncio.sleep(0, pred()), bool, timeout=timeout, what="the chunks")

    def messages(self) -> list[str]:
        return [e.message for c in self.chunks for e in c.entries]


@needs_journal_tools
async def test_real_journalctl_reads_filters_and_follows(tmp_path: Path) -> None:
    jdir = tmp_path / "journal"
    jdir.mkdir()
    base = 1_700_000_000_000_000
    write_journal(
        jdir,
        "one.journal",
        [
            (base, 6, "nginx.service", "nginx started"),
            (base + 1_000_000, 3, "nginx.service", "nginx failed to bind"),
            (base + 2_000_000, 6, "cron.service", "cron ran a job"),
        ],
    )
    svc = LogService(LogsSettings(journal=True, journal_directory=str(jdir)))
    out = Collector()
    svc.handle(LogsRequest(request_id="a", query=LogQuery(lines=10)), out.send)
    await out.until(lambda: any(c.eof for c in out.chunks))
    assert out.messages() == ["nginx started", "nginx failed to bind", "cron ran a job"]
    assert out.chunks[-1].error is None
    assert out.chunks[0].entries[0] == LogEntry(1_700_000_000.0, 6, "nginx.service", "nginx started")

    for query, want in [
        (LogQuery(unit="nginx.service"), ["nginx started", "nginx failed to bind"]),
        (LogQuery(priority=3), ["nginx failed to bind"]),
        (LogQuery(since=1_700_000_000.5, until=1_700_000_001.5), ["nginx failed to bind"]),
        (LogQuery(lines=1), ["cron ran a job"]),
        (LogQuery(match="cron"), ["cron ran a job"]),
    ]:
        out = Collector()
        svc.handle(LogsRequest(request_id="b", query=query), out.send)
        await out.until(lambda out=out: any(c.eof for c in out.chunks))
        assert out.messages() == want, query

    # Follow: the last line first, then what is appended to the journal file.
    out = Collector()
    svc.handle(LogsRequest(request_id="f", query=LogQuery(lines=1), follow=True), out.send)
    await out.until(lambda: "cron ran a job" in out.messages())
    assert svc.following == 1
    await asyncio.to_thread(
        write_journal, jdir, "one.journal", [(base + 3_000_000, 4, "app.service", "a new entry")]
    )
    await out.until(lambda: "a new entry" in out.messages())
    svc.handle(LogsCancel(request_id="f"), out.send)
    await out.until(lambda: svc.following == 0)
    await svc.close()


async def test_journal_off_is_refused_with_the_reason(tmp_path: Path) -> None:
    svc = LogService(LogsSettings(journal=False))
    out = Collector()
    svc.handle(LogsRequest(request_id="a", query=LogQuery()), out.send)
    await out.until(lambda: bool(out.chunks))
    [chunk] = out.chunks
    assert chunk.eof and chunk.code == "refused"
    assert (
        chunk.error
        == "the journal cannot be read: the journal is off in this agent's config ([logs] journal = false)"
    )
