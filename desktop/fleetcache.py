"""The last known fleet per core, kept in the user's data dir so the app opens on it while it reconnects."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

import msgspec
import platformdirs

from servermanager.common import protocol as p

log = logging.getLogger(__name__)


class CachedFleet(msgspec.Struct):
    """What is kept: the core's address, when, and its node list with their latest values. No secrets:
    no token, no user name, no command output."""

    url: str
    saved_at: float
    nodes: list[p.NodeInfo]


def default_dir() -> Path:
    return Path(platformdirs.user_data_dir("servermanager", appauthor=False)) / "fleet-cache"


class FleetCache:
    """One file per core address, written atomically (temp file, then rename) and readable only by
    the user (mode 0600): host names and addresses are not for everyone on a shared machine."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else default_dir()

    def path_for(self, url: str) -> Path:
        digest = hashlib.sha256(url.encode()).hexdigest()[:24]
        return self.directory / f"{digest}.json"

    def save(self, url: str, nodes: list[p.NodeInfo], now: float | None = None) -> None:
        body = msgspec.json.encode(CachedFleet(url, time.time() if now is None else now, nodes))
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".fleet-", suffix=".tmp")  # mode 0600
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(body)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path_for(url))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            # A full disk or a read-only home costs the next start its head start, nothing more.
            log.warning("could not keep the fleet of %s for the next start: %s", url, exc)

    def load(self, url: str) -> CachedFleet | None:
        path = self.path_for(url)
        try:
            cached = msgspec.json.decode(path.read_bytes(), type=CachedFleet)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.MsgspecError) as exc:
            log.warning("ignoring the kept fleet in %s: %s", path, exc)
            return None
        return cached if cached.url == url else None
