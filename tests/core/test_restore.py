"""`admin restore`: refused while a core uses the data dir, the backup checked first, the replaced database kept, owner and mode kept."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from servermanager.core.datadir import DB_FILENAME, initial_admin_password
from servermanager.core.store.schema import SCHEMA_VERSION
from tests.helpers.procs import CLI, CoreProcess, cli
from tests.helpers.wait import wait_sync

pytestmark = pytest.mark.slow

NOBODY = 65534


@pytest.fixture
def core_proc(tmp_path: Path) -> Iterator[CoreProcess]:
    proc = CoreProcess(tmp_path / "data")
    try:
        yield proc
    finally:
        proc.stop()


def users(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return {name for (name,) in con.execute("SELECT name FROM users")}


def make_backup(core: CoreProcess, dest: Path) -> None:
    r = cli("admin", "backup", str(dest), "--data-dir", str(core.data_dir))
    assert r.returncode == 0, r.stderr


def test_restore_is_refused_while_the_core_runs(core_proc: CoreProcess, tmp_path: Path) -> None:
    core_proc.start()
    assert core_proc.proc is not None
    backup = tmp_path / "backup.db"
    make_backup(core_proc, backup)
    before = sorted(p.name for p in core_proc.data_dir.iterdir())

    r = cli("admin", "restore", str(backup), "--data-dir", str(core_proc.data_dir))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        f"error: a core (pid {core_proc.proc.pid}) is using the data dir {core_proc.data_dir}; "
        "stop it first (systemctl stop servermanager-core), then restore"
    )
    # Nothing was touched, and the core goes on writing to its own database.
    assert sorted(p.name for p in core_proc.data_dir.iterdir()) == before
    token = core_proc.admin_token()
    status, _ = core_proc.api(
        "POST", "/api/v1/users", token, {"name": "after", "password": "after-password", "role": "viewer"}
    )
    assert status == 201
    assert core_proc.terminate() == 0
    assert "after" in users(core_proc.data_dir / DB_FILENAME)


def test_restore_keeps_the_replaced_database(core_proc: CoreProcess, tmp_path: Path) -> None:
    core_proc.start()
    token = core_proc.admin_token()
    backup = tmp_path / "backup.db"
    make_backup(core_proc, backup)
    status, _ = core_proc.api(
        "POST", "/api/v1/users", token, {"name": "later", "password": "later-password", "role": "viewer"}
    )
    assert status == 201
    assert core_proc.terminate() == 0

    r = cli("admin", "restore", str(backup), "--data-dir", str(core_proc.data_dir))
    assert r.returncode == 0, r.stderr
    kept = [p for p in core_proc.data_dir.iterdir() if p.name.startswith(f"{DB_FILENAME}.before-restore-")]
    assert len(kept) == 1, list(core_proc.data_dir.iterdir())
    assert f"the database it replaced is kept as {kept[0]}" in r.stdout
    assert "later" in users(kept[0])  # what the restore replaced, up to its last commit
    assert "later" not in users(core_proc.data_dir / DB_FILENAME)
    # No leftovers beside the database: a stale -wal would be replayed onto the restored file.
    names = {p.name for p in core_proc.data_dir.iterdir()}
    assert not {f"{DB_FILENAME}.restore", f"{DB_FILENAME}-wal", f"{DB_FILENAME}.restore-wal"} & names


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A temporary folder under /tmp that another user may enter (pytest's tmp_path sits in one
    only root may)."""
    top = Path(tempfile.mkdtemp())
    os.chmod(top, 0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
def test_restore_as_root_keeps_the_service_users_owner_and_mode(public_tmp: Path, tmp_path: Path) -> None:
    core = CoreProcess(public_tmp / "data")
    try:
        core.start()
        backup = tmp_path / "backup.db"
        make_backup(core, backup)
        assert core.terminate() == 0
        # The data dir as a package leaves it: the service user's, the database mode 0640.
        db = core.data_dir / DB_FILENAME
        for path in (core.data_dir, *core.data_dir.iterdir()):
            os.chown(path, NOBODY, NOBODY)
        os.chmod(db, 0o640)

        r = cli("admin", "restore", str(backup), "--data-dir", str(core.data_dir))  # run as root
        assert r.returncode == 0, r.stderr
        for path in core.data_dir.iterdir():
            st = path.stat()
            assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), f"{path.name} is {st.st_uid}:{st.st_gid}"
        assert stat.S_IMODE(db.stat().st_mode) == 0o640
        kept = next(core.data_dir.glob(f"{DB_FILENAME}.before-restore-*"))
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640

        # And the service user's core can write to what root restored: a login stores its tokens.
        start_as(core, NOBODY)
        password = initial_admin_password(core.data_dir)
        status, body = core.api(
            "POST", "/api/v1/auth/login", body={"username": "admin", "password": password}
        )
        assert status == 200, body
        assert core.terminate() == 0
    finally:
        core.stop()


def start_as(core: CoreProcess, uid: int) -> None:
    """CoreProcess.start(), run as `uid` (the caller is root)."""
    with core.log_path.open("ab") as log:
        core.proc = subprocess.Popen(
            [*CLI, "core", "--data-dir", str(core.data_dir), "--listen", f"127.0.0.1:{core.port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=core.env,
            user=uid,
            group=uid,
            extra_groups=[],
            cwd="/",
        )
    wait_sync(core.healthy, what="core health")


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "is not a usable backup: no such file"),
        (b"this is not a database" * 100, "is not a usable backup: file is not a database"),
        ("empty", "is not a usable backup: not a Server Manager database"),
        (
            "newer",
            f"has schema {SCHEMA_VERSION + 1}, newer than this servermanager's ({SCHEMA_VERSION}): upgrade first",
        ),
    ],
    ids=["missing", "junk", "not-ours", "newer"],
)
def test_a_bad_backup_is_refused_before_anything_changes(
    core_proc: CoreProcess, tmp_path: Path, content: bytes | str | None, why: str
) -> None:
    core_proc.start()
    assert core_proc.terminate() == 0
    backup = tmp_path / "backup.db"
    if isinstance(content, bytes):
        backup.write_bytes(content)
    elif content is not None:
        with contextlib.closing(sqlite3.connect(backup)) as con:
            con.execute("CREATE TABLE t (x)")
            if content == "newer":
                con.execute("CREATE TABLE users (id)")
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
            con.commit()
    before = {p.name: p.stat().st_mtime_ns for p in core_proc.data_dir.iterdir()}

    r = cli("admin", "restore", str(backup), "--data-dir", str(core_proc.data_dir))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: {backup} {why}; nothing was changed"
    assert {p.name: p.stat().st_mtime_ns for p in core_proc.data_dir.iterdir()} == before
