"""Which Database the `database` setting names: the data dir's SQLite file or PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from servermanager.core.store.db import Database


def database_for(database: str, sqlite_path: Path) -> Database:
    """The SQLite file at `sqlite_path` for "sqlite", else the PostgreSQL database the URL names."""
    if database == "sqlite":
        return Database(sqlite_path)
    from servermanager.core.store.pg import PgDatabase  # asyncpg only when asked for

    return PgDatabase(database)
