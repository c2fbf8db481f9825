"""The schema on a real SQLite file: versioned migrations, and a column for every metric the table names."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from servermanager.core.store.schema import SCHEMA_VERSION, migrate_sync


def test_older_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    assert migrate_sync(path, upto=1) == 1
    with sqlite3.connect(path) as con:
        con.execute("INSERT INTO users (name, role, pw_hash, created_at) VALUES ('old', 'admin', 'x', 1.0)")
        assert con.execute("SELECT name FROM sqlite_master WHERE name = 'audit'").fetchone() is None
    assert migrate_sync(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert con.execute("SELECT name FROM users").fetchall() == [("old",)]
        assert con.execute("SELECT name FROM sqlite_master WHERE name = 'audit'").fetchone() is not None
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer than this core"):
        migrate_sync(path)
