"""The [logs] table and its allowlist: which files may be read, checked on the real path of each request.

Only this module and the settings import it at start, so it stays light: the readers (files,
journal) are imported when the first request arrives.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import stat

import msgspec

from servermanager.common.exec_policy import compile_patterns
from servermanager.common.protocol import JOURNAL, MAX_EVENTLOGS, MAX_LOG_FILES, MAX_LOG_LINES, LogSources
from servermanager.common.settings import SettingsError

log = logging.getLogger(__name__)

_GLOB_CHARS = "*?["
# An Event Log channel's name as Event Viewer shows it ("System", "Microsoft-Windows-PowerShell/Operational").
_EVENTLOG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _./-]{0,127}")


class LogRefused(Exception):
    """A request the [logs] config does not allow, or cannot be served; the message is for the operator."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


class LogsSettings(msgspec.Struct, kw_only=True):
    """The [logs] table: read-only access to the journal and allowlisted files (env SM_AGENT_LOGS_<KEY>).

    Independent of [exec]: nothing runs but journalctl, and nothing is read that this table does
    not name. The core cannot widen it.
    """

    journal: bool = True
    journal_directory: str = ""
    files: list[str] = []
    max_lines_per_request: int = 1000
    max_bytes_per_request: int = 512 * 1024
    max_bytes_per_second: int = 64 * 1024
    follow_timeout: float = 3600.0
    max_follows: int = 4
    containers: bool = False
    eventlogs: list[str] = msgspec.field(default_factory=lambda: ["System", "Application"])

    __doc_fields__ = {
        "journal": "let the core read the system journal (through journalctl) where journalctl exists",
        "journal_directory": "read the journal files in this directory (journalctl -D), e.g. a host's "
        "/var/log/journal mounted into the agent's container; empty: the system journal",
        "files": "absolute paths or globs (* ? [..], never crossing a /) of the log files that may be "
        "read; a literal path must exist at start",
        "max_lines_per_request": f"most lines one request may return, 1 to {MAX_LOG_LINES}",
        "max_bytes_per_request": "most bytes one request may return; past it the answer is cut and "
        "marked truncated",
        "max_bytes_per_second": "most bytes a follow streams per second; a flood beyond it is skipped "
        "and marked truncated",
        "follow_timeout": "longest a follow runs before the agent ends it (the desktop can start a new one)",
        "max_follows": "follows running at once on this agent; more are refused until one ends",
        "containers": "let the core read containers' output (stdout and stderr) through the "
        "[containers] engine socket; off by default",
        "eventlogs": "the Windows Event Log channels that may be read where the agent runs on Windows "
        "(through pywin32); empty: none",
    }

    def validate(self) -> None:
        if not 1 <= self.max_lines_per_request <= MAX_LOG_LINES:
            raise SettingsError(
                f"setting logs.max_lines_per_request must be 1 to {MAX_LOG_LINES} "
                f"(got {self.max_lines_per_request})"
            )
        if self.max_bytes_per_request < 4096:
            raise SettingsError("setting logs.max_bytes_per_request must be at least 4096")
        if self.max_bytes_per_second < 1024:
            raise SettingsError("setting logs.max_bytes_per_second must be at least 1024")
        if not 1 <= self.follow_timeout <= 7 * 86400:
            raise SettingsError("setting logs.follow_timeout must be 1s to 7d")
        if not 0 <= self.max_follows <= 64:
            raise SettingsError("setting logs.max_follows must be 0 to 64")
        if len(self.files) > MAX_LOG_FILES:
            raise SettingsError(f"setting logs.files: at most {MAX_LOG_FILES} entries")
        self.journal_directory = self.journal_directory.strip()
        if self.journal_directory and not os.path.isdir(self.journal_directory):
            raise SettingsError(
                f"setting logs.journal_directory: {self.journal_directory} is not a directory"
            )
        self.files = [check_pattern(p) for p in self.files]
        if len(self.eventlogs) > MAX_EVENTLOGS:
            raise SettingsError(f"setting logs.eventlogs: at most {MAX_EVENTLOGS} channels")
        for name in self.eventlogs:
            if not _EVENTLOG_NAME.fullmatch(name):
                raise SettingsError(
                    f"setting logs.eventlogs: {name[:100]!r} is not an event log name "
                    "(letters, digits, space and _ . / -, such as System or Application)"
                )


def check_pattern(raw: str) -> str:
    """One entry of logs.files, normalised, or SettingsError saying what is wrong with it."""
    p = raw.strip()
    where = f"setting logs.files: {raw!r}"
    if not p:
        raise SettingsError(f"{where}: empty entry")
    if not os.path.isabs(p):
        raise SettingsError(f"{where} is a relative path; use an absolute one")
    if os.path.normpath(p) != p or "/../" in p or p.endswith("/.."):
        raise SettingsError(f"{where} is not a normalised path (no '..', '.', '//' or trailing '/')")
    try:
        compile_patterns([p], "/")
    except ValueError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    if not has_magic(p):
        try:
            st = os.stat(p)
        except OSError as exc:
            raise SettingsError(
                f"{where}: the file does not exist or cannot be read ({exc.strerror})"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise SettingsError(f"{where} is not a regular file")
        return p
    base = literal_dir(p)
    if not os.path.isdir(base):
        raise SettingsError(f"{where}: its directory {base} does not exist")
    if not glob.glob(p):
        # A log that is not written yet (a service that has not started) is normal; say so once.
        log.warning("%s matches no file yet; it is allowed once one appears", where)
    return p


def has_magic(path: str) -> bool:
    return any(c in path for c in _GLOB_CHARS)


def literal_dir(pattern: str) -> str:
    """The longest leading directory of `pattern` with no wildcard in it."""
    parts = pattern.split("/")
    keep: list[str] = []
    for part in parts[:-1]:
        if has_magic(part):
            break
        keep.append(part)
    return "/".join(keep) or "/"


class Allowlist:
    """logs.files as a check: `resolve(path)` is the real file to open, or LogRefused.

    A path must be absolute and normalised, match a pattern, and so must the file it really is
    (symlinks resolved): a symlink in an allowed directory cannot lead out of it. Where a
    pattern's own directory is a symlink (/var/log -> /data/log), its resolved form counts too.
    Wildcards never cross a '/'.
    """

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = list(patterns)
        resolved = []
        for p in patterns:
            base = literal_dir(p)
            real = os.path.realpath(base)
            resolved.append(p if real == base else real.rstrip("/") + p[len(base.rstrip("/")) :])
        self._asked = compile_patterns(self.patterns, "/")
        self._real = compile_patterns(sorted(set(self.patterns + resolved)), "/")

    @staticmethod
    def _matches(compiled: list[tuple[str, re.Pattern[str]]], path: str) -> bool:
        return any(rx.match(path) for _, rx in compiled)

    def resolve(self, path: str) -> str:
        if path == JOURNAL:
            raise LogRefused("the journal is not a file", "invalid")
        if not os.path.isabs(path) or os.path.normpath(path) != path:
            raise LogRefused(
                f"{path[:200]!r}: only absolute, normalised paths (no '..') can be asked for", "invalid"
            )
        if not self.patterns:
            raise LogRefused("no log files are allowed: this agent's [logs] files list is empty")
        if not self._matches(self._asked, path):
            raise LogRefused(f"{path[:200]} is not in this agent's [logs] files allowlist")
        real = os.path.realpath(path)
        if not self._matches(self._real, real):
            raise LogRefused(f"{path[:200]} leads to {real[:200]}, outside the [logs] files allowlist")
        try:
            st = os.stat(real)
        except OSError as exc:
            raise LogRefused(f"{path[:200]}: {exc.strerror}", "not_found") from None
        if not stat.S_ISREG(st.st_mode):
            raise LogRefused(f"{path[:200]} is not a regular file", "invalid")
        return real

    def files(self) -> list[str]:
        """The allowed files that exist now, sorted, at most MAX_LOG_FILES."""
        found: set[str] = set()
        for p in self.patterns:
            for f in glob.glob(p) if has_magic(p) else [p]:
                try:
                    self.resolve(f)
                except LogRefused:
                    continue
                found.add(f)
        return sorted(found)[:MAX_LOG_FILES]


def journal_note(settings: LogsSettings) -> str | None:
    """Why the journal is not offered, or None if it is."""
    if not settings.journal:
        return "the journal is off in this agent's config ([logs] journal = false)"
    if shutil.which("journalctl") is None:
        return "journalctl is not installed on this host"
    return None


def sources(settings: LogsSettings, allow: Allowlist) -> LogSources:
    note = journal_note(settings)
    return LogSources(
        journal=note is None, files=allow.files(), patterns=allow.patterns[:MAX_LOG_FILES], note=note
    )
