"""State dir and credential file permissions, with real modes on a real file system."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from servermanager.agent.credentials import (
    ENROLL_ID_FILE,
    Credentials,
    CredentialStore,
    StateDirError,
    ensure_state_dir,
)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_creates_missing_state_dir_0700(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a typical umask must not widen or narrow the result
    try:
        d = ensure_state_dir(tmp_path / "a" / "b" / "agent")
    finally:
        os.umask(old)
    assert d.is_dir()
    assert mode(d) == 0o700


def test_refuses_group_readable_state_dir(tmp_path: Path) -> None:
    d = tmp_path / "state"
    d.mkdir()
    d.chmod(0o755)
    with pytest.raises(StateDirError) as err:
        ensure_state_dir(d)
    msg = str(err.value)
    assert str(d) in msg
    assert f"chmod 700 {d}" in msg
    assert "0755" in msg
    d.chmod(0o700)
    assert ensure_state_dir(d) == d


def test_refuses_a_file_where_the_dir_should_be(tmp_path: Path) -> None:
    f = tmp_path / "state"
    f.write_text("x")
    with pytest.raises(StateDirError, match="not a directory"):
        ensure_state_dir(f)


def test_save_writes_0600_atomically_and_loads_back(tmp_path: Path) -> None:
    d = ensure_state_dir(tmp_path / "state")
    store = CredentialStore(d)
    assert store.load() is None
    old = os.umask(0o000)  # even a permissive umask must not widen the file
    try:
        store.save(Credentials(node_id=7, credential="s3cret", core="ws://h:1/ws/agent"))
    finally:
        os.umask(old)
    assert mode(store.path) == 0o600
    assert store.load() == Credentials(7, "s3cret", "ws://h:1/ws/agent")
    store.save(Credentials(node_id=8, credential="n3w", core="ws://h:1/ws/agent"))
    assert store.load() == Credentials(8, "n3w", "ws://h:1/ws/agent")
    assert [p.name for p in d.iterdir()] == ["credential"]  # no temp files left behind


def test_refuses_world_readable_credential_file(tmp_path: Path) -> None:
    d = ensure_state_dir(tmp_path / "state")
    store = CredentialStore(d)
    store.save(Credentials(node_id=1, credential="s3cret", core="ws://h/ws/agent"))
    store.path.chmod(0o644)
    with pytest.raises(StateDirError) as err:
        store.load()
    msg = str(err.value)
    assert str(store.path) in msg and f"chmod 600 {store.path}" in msg
    assert "s3cret" not in msg


def test_corrupt_credential_file_is_reported(tmp_path: Path) -> None:
    d = ensure_state_dir(tmp_path / "state")
    store = CredentialStore(d)
    fd = os.open(store.path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"{not json")
    os.close(fd)
    with pytest.raises(StateDirError, match="corrupt"):
        store.load()


def test_repr_never_shows_the_secret() -> None:
    c = Credentials(node_id=3, credential="s3cret-value", core="ws://h/ws/agent")
    assert "s3cret" not in repr(c) and "s3cret" not in str(c) and "s3cret" not in f"{c}"


def test_the_enroll_id_is_kept_0600_until_forgotten_and_a_bad_one_is_replaced(tmp_path: Path) -> None:
    store = CredentialStore(ensure_state_dir(tmp_path / "state"))
    first = store.enroll_id()
    path = store.dir / ENROLL_ID_FILE
    assert len(first) == 32 and int(first, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert CredentialStore(store.dir).enroll_id() == first  # a restarted agent sends the same id

    path.write_text("not-an-id\n")  # not written by the agent: replaced, not sent to the core
    second = store.enroll_id()
    assert second != first and len(second) == 32 and path.read_text() == second

    store.forget_enroll_id()
    assert not path.exists()
    store.forget_enroll_id()  # forgetting twice is not an error
    assert store.enroll_id() not in (first, second)
