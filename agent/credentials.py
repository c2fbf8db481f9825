"""The private state dir (0700) and the node credential file in it (0600, written atomically)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

import msgspec

CREDENTIAL_FILE = "credential"
# The enroll id of an agent not enrolled yet (see Hello.enroll_id), kept until its credential is: an
# agent stopped between its hello and its welcome, then started again, retakes the node its first
# hello made instead of being refused because the single-use token is spent.
ENROLL_ID_FILE = "enroll-id"
_ENROLL_ID = re.compile(r"[0-9a-f]{32}")
# Windows has no POSIX permission bits worth checking; its ACLs are the profile dir's business.
_POSIX = os.name == "posix"


class StateDirError(Exception):
    """The state dir or a file in it is unusable or unsafe; the message names the path and the fix."""


class Credentials(msgspec.Struct, frozen=True):
    node_id: int
    credential: str
    core: str  # the URL it was issued by, so a moved agent can say what it is talking to
    # The core's certificate pin (sha256:<hex>) this agent last connected with, for `core`: later
    # runs keep checking it without the setting. Not a secret.
    pin: str | None = None

    def __repr__(self) -> str:
        # Never let the secret reach a log line or a traceback through repr().
        return f"Credentials(node_id={self.node_id}, core={self.core!r}, pin={self.pin!r}, credential=<redacted>)"

    __str__ = __repr__


def _refuse_open_mode(path: Path, st: os.stat_result, kind: str, want: int) -> None:
    if _POSIX and st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise StateDirError(
            f"{kind} {path} is readable by group/others (mode {mode:04o}); fix with: chmod {want:o} {path}"
        )


def ensure_state_dir(path: str | os.PathLike[str]) -> Path:
    """Create the dir 0700 if missing; refuse one that group or others can get into."""
    p = Path(path)
    try:
        p.mkdir(mode=0o700, parents=True)
        if _POSIX:
            os.chmod(p, 0o700)  # mkdir's mode is filtered by the umask; be exact
    except FileExistsError:
        pass
    except OSError as exc:
        raise StateDirError(f"cannot create state dir {p}: {exc.strerror or exc}") from None
    try:
        st = p.stat()
    except OSError as exc:
        raise StateDirError(f"cannot read state dir {p}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"state dir {p} exists but is not a directory")
    _refuse_open_mode(p, st, "state dir", 0o700)
    if not os.access(p, os.R_OK | os.W_OK | os.X_OK):
        raise StateDirError(
            f"state dir {p} is not writable by this user; fix its owner or use another --state-dir"
        )
    return p


class CredentialStore:
    """Reads and writes `<state_dir>/credential`. The state dir must already be checked."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / CREDENTIAL_FILE

    def load(self) -> Credentials | None:
        """The stored credential, or None before the first enrollment."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateDirError(f"cannot read credential file {self.path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "rb") as fh:
            # fstat on the open file, so the mode checked is that of the bytes actually read.
            _refuse_open_mode(self.path, os.fstat(fh.fileno()), "credential file", 0o600)
            data = fh.read()
        try:
            return msgspec.json.decode(data, type=Credentials)
        except msgspec.MsgspecError as exc:
            raise StateDirError(
                f"credential file {self.path} is corrupt ({exc}); "
                "delete it and enroll again with --enroll-token"
            ) from None

    def enroll_id(self) -> str:
        """This agent's enroll id: the one kept in the state dir, or a new one written there (0600)."""
        path = self.dir / ENROLL_ID_FILE
        with contextlib.suppress(FileNotFoundError):
            kept = path.read_text(encoding="ascii", errors="replace").strip()
            if _ENROLL_ID.fullmatch(kept):
                return kept
            path.unlink()  # not one this agent wrote: a new one is as good
        new = secrets.token_hex(16)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(path, flags, 0o600), "w", encoding="ascii") as fh:
            fh.write(new)
        return new

    def forget_enroll_id(self) -> None:
        """The credential is stored: the enroll id has done its job."""
        with contextlib.suppress(FileNotFoundError):
            (self.dir / ENROLL_ID_FILE).unlink()

    def save(self, creds: Credentials) -> None:
        """Write atomically: a crash leaves either the old file or the new one, never half of one."""
        data = msgspec.json.encode(creds)
        tmp = self.dir / f".{CREDENTIAL_FILE}.{secrets.token_hex(6)}.tmp"
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        )
        try:
            fd = os.open(tmp, flags, 0o600)
        except OSError as exc:
            raise StateDirError(
                f"cannot write credential file in {self.dir}: {exc.strerror or exc}"
            ) from None
        try:
            with os.fdopen(fd, "wb") as fh:
                if _POSIX:
                    os.fchmod(fh.fileno(), 0o600)  # the umask may have taken bits from 0600
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if _POSIX:
            # The rename itself must reach the disk, or a power cut could resurrect the old file.
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
