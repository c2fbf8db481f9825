"""Log files read directly: the last lines of a file, and following it across rotation and truncation.

Blocking (plain file reads): the service runs these in a thread. Every read is bounded in bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from servermanager.common.protocol import MAX_LOG_MESSAGE

# How far back a tail looks for matching lines, at most, whatever max_bytes allows to send.
SCAN_LIMIT = 8 << 20


def line_text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").rstrip("\r")
    return text if len(text) <= MAX_LOG_MESSAGE else text[: MAX_LOG_MESSAGE - 1] + "…"


@dataclass
class Tail:
    lines: list[str]
    truncated: bool = False
    note: str | None = None


def tail(path: str, lines: int, max_bytes: int, match: str | None = None, end: int | None = None) -> Tail:
    """The last `lines` lines of `path` (containing `match`, if given) before byte `end` (default: its
    end), oldest first, together at most `max_bytes`; truncated when a limit, not the start of the
    file, ended the search."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size if end is None else end
        window = min(size, max(SCAN_LIMIT, max_bytes))
        fh.seek(size - window)
        data = fh.read(window)
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()  # the file ends with a newline
    if window < size and parts:
        parts = parts[1:]  # the first piece starts mid-line
    kept: list[str] = []
    used = 0
    cut_by: str | None = None
    for raw in reversed(parts):
        if len(kept) >= lines:
            break
        text = line_text(raw)
        if match is not None and match not in text:
            continue
        used += len(text.encode()) + 1
        if used > max_bytes:
            cut_by = f"only the last {len(kept)} line(s) fit in max_bytes_per_request = {max_bytes}"
            break
        kept.append(text)
    else:
        if window < size and len(kept) < lines:
            cut_by = f"only the last {window} bytes of the file were searched"
    kept.reverse()
    return Tail(kept, cut_by is not None, cut_by)


@dataclass
class Poll:
    lines: list[str] = field(default_factory=list)
    skipped: int = 0  # bytes left out: more than the budget arrived
    notes: list[str] = field(default_factory=list)


class Follower:
    """New lines of one file, from where it ends now, poll by poll.

    Rotation (the path now names another file: rename and recreate) is noticed by inode: the old
    file is read to its end, then the new one from its start. Truncation (copytruncate) is
    noticed by the size dropping below what was read: reading starts again at 0. `reopen` checks
    the path again before a new file is opened (the allowlist: a rotated path could now be a
    symlink out) and returns the real path, or raises.
    """

    MAX_PARTIAL = MAX_LOG_MESSAGE * 4

    def __init__(self, path: str, real: str, reopen: Callable[[str], str]) -> None:
        self.path = path
        self.reopen = reopen
        self.fh = open(real, "rb")  # noqa: SIM115 - held for the follow's life; close() closes it
        st = os.fstat(self.fh.fileno())
        self.ident = (st.st_dev, st.st_ino)
        self.offset = st.st_size
        self.fh.seek(self.offset)
        self.partial = b""
        self.resync = False  # after a skip: drop bytes up to the next newline (a cut line)

    def close(self) -> None:
        self.fh.close()

    def poll(self, budget: int) -> Poll:
        out = Poll()
        size = os.fstat(self.fh.fileno()).st_size
        if size < self.offset:
            out.notes.append(f"{self.path} was truncated; reading it from the start")
            self.fh.seek(0)
            self.offset = 0
            self.partial = b""
        self._read(out, budget)
        if self.offset >= os.fstat(self.fh.fileno()).st_size and self._rotated():
            # The old file is read to its end; what comes next is in the new one.
            if self.partial:
                out.lines.append(line_text(self.partial))
                self.partial = b""
            real = self.reopen(self.path)
            self.fh.close()
            self.fh = open(real, "rb")  # noqa: SIM115
            st = os.fstat(self.fh.fileno())
            self.ident = (st.st_dev, st.st_ino)
            self.offset = 0
            self.resync = False
            out.notes.append(f"{self.path} was rotated; following the new file")
            self._read(out, max(0, budget - sum(len(x) + 1 for x in out.lines)))
        return out

    def _rotated(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed away, not recreated yet: keep the old one until it is
        return (st.st_dev, st.st_ino) != self.ident

    def _read(self, out: Poll, budget: int) -> None:
        size = os.fstat(self.fh.fileno()).st_size
        waiting = size - self.offset
        if waiting <= 0:
            return
        data = self.fh.read(min(waiting, budget))
        self.offset += len(data)
        boundary = True
        if waiting > budget:
            # A flood: what is over the budget is skipped, not queued (it would only grow).
            out.skipped += waiting - len(data)
            self.fh.seek(size - 1)
            # Reading on from mid-line would show half a line: drop up to the next newline then.
            boundary = self.fh.read(1) == b"\n"
            self.offset = size
        chunk = self.partial + data
        if self.resync:
            nl = chunk.find(b"\n")
            if nl < 0:
                self.partial = b""
                return
            chunk = chunk[nl + 1 :]
            self.resync = False
        pieces = chunk.split(b"\n")
        self.partial = pieces.pop()
        if out.skipped:
            self.partial = b""
            self.resync = not boundary
        elif len(self.partial) > self.MAX_PARTIAL:
            pieces.append(self.partial)
            self.partial = b""
        out.lines.extend(line_text(p) for p in pieces)
