"""Database's reader pool: a long read holds up no other read, and a cancelled one gives its
connection back."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from servermanager.core.store.db import Database
from tests.helpers.gate import Gate
from tests.helpers.wait import wait_for


async def _gated(tmp_path: Path, readers: int) -> tuple[Database, Gate]:
    db = Database(tmp_path / "r.db", readers=readers)
    await db.open()
    gate = Gate()
    for _ in range(readers):
        async with db.reader() as con:
            await con.create_function("gate", 0, gate)
    return db, gate


async def test_a_parked_read_holds_up_no_other_read(tmp_path: Path) -> None:
    db, gate = await _gated(tmp_path, readers=2)
    try:
        parked = asyncio.ensure_future(db.fetchone("SELECT gate()"))
        await wait_for(gate.entered.is_set, 5, "a reader thread to reach the gate")
        async with asyncio.timeout(5):
            assert tuple(await db.fetchone("SELECT 40 + 2")) == (42,)
        assert not parked.done()
        gate.open()
        assert tuple(await parked) == (1,)
    finally:
        gate.open()
        await db.close()


async def test_a_cancelled_read_gives_its_connection_back(tmp_path: Path) -> None:
    db, gate = await _gated(tmp_path, readers=1)
    try:
        parked = asyncio.ensure_future(db.fetchone("SELECT gate()"))
        await wait_for(gate.entered.is_set, 5, "the reader thread to reach the gate")
        parked.cancel()
        await asyncio.gather(parked, return_exceptions=True)
        # The one connection is back; its next statement runs once the parked one ends.
        waiting = asyncio.ensure_future(db.fetchone("SELECT 7"))
        gate.open()
        async with asyncio.timeout(5):
            assert tuple(await waiting) == (7,)
    finally:
        gate.open()
        await db.close()


def test_the_pool_defaults_to_the_cores_between_two_and_four(tmp_path: Path) -> None:
    assert 2 <= Database(tmp_path / "d.db").readers <= 4


async def test_an_sqlite_too_old_for_the_statements_is_one_clear_error_before_the_file_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ubuntu 20.04's SQLite (3.31) lacks UPDATE .. FROM and MATERIALIZED: the core said so only as
    a syntax error at its first commit. The start-up turns RuntimeError into one line."""
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    db = Database(tmp_path / "data" / "r.db")
    with pytest.raises(RuntimeError) as raised:
        await db.open()
    assert str(raised.value) == "SQLite 3.35 or newer is needed; this Python's sqlite3 has 3.31.1"
    assert not (tmp_path / "data").exists()
