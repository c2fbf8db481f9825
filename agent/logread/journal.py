"""The system journal through `journalctl -o json`, run without a shell: argv, entry parsing, and the
bounded one-shot and follow readers (asyncio subprocesses, so nothing blocks the event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from typing import Any

from servermanager.agent.logread.config import LogRefused
from servermanager.common.protocol import MAX_LOG_MESSAGE, LogEntry, LogQuery

log = logging.getLogger(__name__)

# A systemd unit name (or a glob of them, which journalctl -u accepts); never an option.
_UNIT = re.compile(r"[A-Za-z0-9_.@:\\*?\[\]-]{1,256}")
LINE_LIMIT = 1 << 20  # one JSON entry of journalctl, at most (a longer one ends the read)


def check_unit(unit: str) -> str:
    if unit.startswith("-") or not _UNIT.fullmatch(unit):
        raise LogRefused(
            f"invalid unit {unit[:100]!r}: only letters, digits and . _ @ : - (and * ? [ ]) are allowed",
            "invalid",
        )
    return unit


def journal_argv(exe: str, q: LogQuery, lines: int, *, follow: bool, directory: str = "") -> list[str]:
    """journalctl's argv for `q`; every value in `--opt=value` form, so none can be read as an option."""
    argv = [exe, "--output=json", "--no-pager", "--quiet", f"--lines={lines}"]
    if directory:
        argv.append(f"--directory={directory}")
    if q.unit:
        argv.append(f"--unit={check_unit(q.unit)}")
    if q.priority is not None:
        argv.append(f"--priority={q.priority}")
    if q.since is not None:
        argv.append(f"--since=@{q.since:.6f}")
    if q.until is not None:
        argv.append(f"--until=@{q.until:.6f}")
    # `match` is applied by the agent itself: --grep needs a journalctl built with PCRE2.
    if follow:
        argv.append("--follow")
    return argv


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) for b in value):
        # journalctl writes a message that is not valid UTF-8 as an array of byte values.
        return bytes(b & 0xFF for b in value).decode("utf-8", "replace")
    return None


def parse_entry(line: bytes | str) -> LogEntry | None:
    """One line of `journalctl -o json` as a LogEntry; None for a line that is not an entry."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    message = _text(obj.get("MESSAGE"))
    if message is None:
        message = ""
    if len(message) > MAX_LOG_MESSAGE:
        message = message[: MAX_LOG_MESSAGE - 1] + "…"
    ts: float | None = None
    raw_ts = obj.get("__REALTIME_TIMESTAMP")
    if isinstance(raw_ts, str) and raw_ts.isdigit():
        ts = int(raw_ts) / 1e6
    prio: int | None = None
    raw_prio = obj.get("PRIORITY")
    if isinstance(raw_prio, str) and raw_prio.isdigit() and int(raw_prio) <= 7:
        prio = int(raw_prio)
    unit = _text(obj.get("_SYSTEMD_UNIT")) or _text(obj.get("SYSLOG_IDENTIFIER")) or _text(obj.get("_COMM"))
    return LogEntry(ts, prio, unit[:256] if unit else None, message)


async def _spawn(argv: list[str]) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
            env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"},
        )
    except OSError as exc:
        raise LogRefused(f"could not run journalctl: {exc.strerror or exc}", "failed") from None


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    with contextlib.suppress(Exception):
        await proc.wait()


async def _stderr_tail(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            err = (await proc.stderr.read(4096)).decode("utf-8", "replace").strip()
        return err.splitlines()[-1] if err else ""
    return ""


async def entries(argv: list[str], *, timeout: float | None) -> AsyncIterator[LogEntry]:
    """Entries journalctl prints for `argv`, as they come; the process is killed when the caller
    stops iterating. LogRefused (code failed) if journalctl fails; TimeoutError past `timeout`."""
    proc = await _spawn(argv)
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    try:
        while True:
            # A deadline per read, not a timeout scope around the loop: this generator yields
            # between reads, and a scope would cancel whatever its consumer does meanwhile.
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                async with asyncio.timeout(left):
                    line = await proc.stdout.readline()
            except ValueError:  # asyncio's LimitOverrunError: an entry over LINE_LIMIT
                raise LogRefused(f"journalctl printed an entry over {LINE_LIMIT} bytes", "failed") from None
            if not line:
                break
            entry = parse_entry(line)
            if entry is not None:
                yield entry
        code = await proc.wait()
        if code != 0:
            err = await _stderr_tail(proc)
            raise LogRefused(f"journalctl exited with {code}" + (f": {err}" if err else ""), "failed")
    finally:
        await _end(proc)
