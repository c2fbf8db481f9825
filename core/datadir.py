"""What the core keeps in its data dir: where that is, the names of the files in it, and its lock."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import IO

import platformdirs

from servermanager.common.settings import SettingsError
from servermanager.core.settings import CoreSettings

DB_FILENAME = "servermanager.db"
# Written once, mode 0600, when the core creates its first admin; the log names it, never its content.
INITIAL_PASSWORD_FILE = "initial-admin-password"
# The certificate the core makes on its first start with TLS on (no tls_cert configured), and its
# key: both mode 0600, kept for later starts so the fingerprint agents and the desktop pin stays.
TLS_CERT_FILE = "tls-cert.pem"
TLS_KEY_FILE = "tls-key.pem"
# Locked (flock) by the core for as long as it uses the data dir, and by `admin restore` while it
# swaps the database: neither may run beside the other. It holds the locker's pid, for messages.
LOCK_FILE = "core.lock"


def data_dir(settings: CoreSettings) -> Path:
    return Path(settings.data_dir or platformdirs.user_data_dir("servermanager")).expanduser()


def initial_admin_password(folder: Path) -> str:
    """The generated password of the first admin, from a core's data dir (demo, tests, benchmarks)."""
    return (folder / INITIAL_PASSWORD_FILE).read_text().strip()


class DataDirError(SettingsError):
    """The data dir cannot be used (not ours to write, not a directory): the message says which and why."""


class DataDirBusy(Exception):
    """Another process holds the data dir's lock; `pid` is its pid when it could be read."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        self.folder = folder
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"a core ({who}) is using the data dir {folder}")


def usable_data_dir(folder: Path) -> Path:
    """Make the data dir (0700) if it is missing; DataDirError, with the reason, if this user cannot
    read and write it or the database in it. Better said here in one line than as SQLite's
    'unable to open database file' from deep inside a start-up."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise DataDirError(
            f"cannot use the data dir {folder} as {_whoami()}: {exc.strerror or exc}"
        ) from None
    if not folder.is_dir():
        raise DataDirError(f"the data dir {folder} is not a directory")
    for path in (folder, folder / DB_FILENAME):
        want = os.R_OK | os.W_OK | (os.X_OK if path == folder else 0)
        if path.exists() and not os.access(path, want):
            raise DataDirError(
                f"the {'data dir' if path == folder else 'database'} {path} is not readable and writable "
                f"by {_whoami()}: fix its owner or mode (or run as the user who owns it)"
            )
    return folder


def _whoami() -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(os.geteuid()).pw_name} (uid {os.geteuid()})"
    except (ImportError, KeyError):
        return "this user"


def match_owner(path: Path, like: Path, mode: int | None = None) -> None:
    """Give `path` the owner and group of `like` (only root can; otherwise they are ours already)
    and `mode` (default: like's permission bits). Files an operator makes as root in a service's
    data dir must stay the service's, or its next start cannot write them."""
    st = like.stat()
    if hasattr(os, "chown") and os.geteuid() == 0:
        os.chown(path, st.st_uid, st.st_gid)
    os.chmod(path, st.st_mode & 0o777 if mode is None else mode)


class DataDirLock:
    """An exclusive lock on the data dir's lock file, held until release() or the process's end.

    flock (POSIX) or msvcrt.locking (Windows): the kernel drops it when the process dies, however
    it dies, so a crashed core never leaves a stale lock behind as a pid file would.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_FILE
        self._fh: IO[str] | None = None

    def acquire(self) -> DataDirLock:
        """Take the lock or raise DataDirBusy at once (never waits)."""
        created = not self.path.exists()
        try:
            fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's whole life
        except PermissionError:
            # Someone else's lock file (root ran a restore): flock needs no write access, only
            # the pid goes unsaid.
            fh = open(self.path)  # noqa: SIM115
        if created:
            match_owner(self.path, self.folder, 0o600)
        try:
            _lock(fh)
        except OSError:
            fh.seek(0)
            text = fh.read().strip()
            fh.close()
            raise DataDirBusy(self.folder, int(text) if text.isdigit() else None) from None
        if fh.writable():
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError, ValueError):
                self._fh.seek(0)
                self._fh.truncate()
            self._fh.close()  # closing the descriptor drops the lock
            self._fh = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


if sys.platform == "win32":

    def _lock(fh: IO[str]) -> None:
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)

else:

    def _lock(fh: IO[str]) -> None:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
