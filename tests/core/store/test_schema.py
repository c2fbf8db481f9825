"""The schema on a real SQLite file: versioned migrations, and a column for every metric the table names."""

from __future__ import annotations

import importlib
import sqlite3
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from servermanager.common import metrics as mt
from servermanager.common.metrics import SCALAR_FIELDS, Sample
from servermanager.core.store import schema
from servermanager.core.store.db import Database
from servermanager.core.store.samples import SampleStore
from servermanager.core.store.schema import SCHEMA_VERSION, add_metric_columns, migrate_sync
from tests.helpers.core import metrics
from tests.helpers.store import make_samples, write_samples


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


def _columns(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as con:
        return [row[1] for row in con.execute(f"PRAGMA table_info({table})")]


def test_a_metric_added_to_the_table_gets_its_columns_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "core.db"
    migrate_sync(path)
    before = {t: _columns(path, t) for t in ("samples_raw", "samples_head", "samples_1m", "samples_1h")}
    assert "ctx_switches" not in before["samples_raw"]
    # The next core's table has one more row.
    monkeypatch.setattr(schema, "SCALAR_FIELDS", (*SCALAR_FIELDS, "ctx_switches"))
    assert migrate_sync(path) == SCHEMA_VERSION
    for table in ("samples_raw", "samples_head"):
        assert _columns(path, table) == [*before[table], "ctx_switches"]
    for table in ("samples_1m", "samples_1h"):
        assert _columns(path, table) == [
            *before[table],
            "ctx_switches_avg",
            "ctx_switches_min",
            "ctx_switches_max",
        ]
    with sqlite3.connect(path, isolation_level=None) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        # Opened again, there is nothing left to add.
        assert add_metric_columns(con, schema.SCALAR_FIELDS) == []
    assert migrate_sync(path) == SCHEMA_VERSION
    assert _columns(path, "samples_raw") == [*before["samples_raw"], "ctx_switches"]


def test_metric_columns_are_added_all_or_none(tmp_path: Path) -> None:
    path = tmp_path / "core.db"
    migrate_sync(path)
    before = _columns(path, "samples_raw")
    con = sqlite3.connect(path, isolation_level=None)
    try:
        # "1st" is no column name: its ALTER fails after samples_raw got good_one.
        with pytest.raises(sqlite3.OperationalError):
            add_metric_columns(con, (*SCALAR_FIELDS, "good_one", "1st"))
        assert not con.in_transaction
    finally:
        con.close()
    assert _columns(path, "samples_raw") == before


def test_a_table_a_migration_has_not_made_yet_is_left_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    monkeypatch.setattr(schema, "SCALAR_FIELDS", (*SCALAR_FIELDS, "ctx_switches"))
    assert migrate_sync(path, upto=3) == 3  # samples_head comes with migration 4
    assert "ctx_switches" in _columns(path, "samples_raw")
    assert _columns(path, "samples_head") == []
    assert migrate_sync(path) == SCHEMA_VERSION
    assert _columns(path, "samples_head").count("ctx_switches") == 1


_STORE_MODULES = (
    "schema",
    "transaction",
    "values",
    "db",
    "rows",
    "aggregates",
    "daycache",
    "writer",
    "history",
    "maintenance",
    "samples",
)


def _store_with(
    monkeypatch: pytest.MonkeyPatch, fields: tuple[mt.Field, ...], derived: dict[str, Any] | None = None
) -> dict[str, ModuleType]:
    """core.store's modules as a core whose metric table is `fields` (and `derived`) imports them.

    The table is read when they are imported (columns, statements, the row codec), as in a real
    core, so they are imported afresh beside the test session's own, which come back after.
    """
    monkeypatch.setattr(mt, "FIELDS", fields)
    monkeypatch.setattr(mt, "FIELDS_BY_NAME", {f.name: f for f in fields})
    monkeypatch.setattr(mt, "SCALAR_FIELDS", tuple(f.name for f in fields))
    monkeypatch.setattr(mt, "FIELD_DECIMALS", {f.name: f.decimals for f in fields})
    for name, derive in (derived or {}).items():
        monkeypatch.setitem(mt.DERIVED, name, derive)
    monkeypatch.setattr(mt, "Metrics", mt.metrics_struct(fields))
    package = importlib.import_module("servermanager.core.store")
    for name in _STORE_MODULES:
        monkeypatch.delitem(sys.modules, f"{package.__name__}.{name}")
        monkeypatch.setattr(package, name, getattr(package, name))
    return {name: importlib.import_module(f"{package.__name__}.{name}") for name in _STORE_MODULES}


@pytest.mark.parametrize("kind", ["sent", "derived"])
async def test_a_metric_added_to_the_table_is_stored_and_rolled_up_in_an_existing_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path = tmp_path / "core.db"
    t0 = 1_700_000_040.0 - (1_700_000_040.0 % 3600)
    db = Database(path)
    await db.open()
    try:
        await db.execute("INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', x'00', 0)")
        await write_samples(SampleStore(db, flush_every=0.001), 1, make_samples(t0, 3, 1.0))
    finally:
        await db.close()

    # The same file, opened by a core whose table has one more row.
    if kind == "sent":
        name, values = "ctx_switches", [10.0, 20.0, 30.5]
        row = mt.Field(
            name, mt.Unit.PER_S, 1, "Context switches", "Context switches per second", mt.Kind.RATE
        )
        store_modules = _store_with(monkeypatch, (*mt.FIELDS, row))
        readings = [metrics(cpu=1.0, ctx_switches=v) for v in values]
    else:
        name, values = "disk_used_max", [100, 201, 300]
        row = mt.Field(name, mt.Unit.BYTES, 0, "Disk used", "Bytes used on the fullest disk")
        store_modules = _store_with(
            monkeypatch, (*mt.FIELDS, row), {name: lambda m: max((d.used for d in m.disks), default=None)}
        )
        readings = [
            metrics(cpu=1.0, disks=[mt.DiskUsage(mount="/", fstype="ext4", total=1000, used=v, pct=v / 10)])
            for v in values
        ]
    db = store_modules["db"].Database(path)
    await db.open()
    try:
        for table in ("samples_raw", "samples_head"):
            assert _columns(path, table)[-1] == name
        for table in ("samples_1m", "samples_1h"):
            assert _columns(path, table)[-3:] == [f"{name}_avg", f"{name}_min", f"{name}_max"]
        store = store_modules["samples"].SampleStore(db, flush_every=0.001)
        new = [Sample(seq=10 + i, ts=t0 + 60 + i, metrics=m) for i, m in enumerate(readings)]
        await write_samples(store, 1, new)
        # Through the raw tiers: the reading comes back whole, and history has the new column.
        assert await store.latest(1) == new[-1]
        await store.settle()
        assert await store.latest(1) == new[-1]
        raw = await store.history(1, t0, t0 + 119, "raw", [name, "cpu_pct"])
        assert raw["avg"][name] == [None, None, None, *values]  # the rows stored before it have none
        # Through the rollups, rounded to the row's decimals.
        await store.rollup(now=t0 + 3600)
        m = await store.history(1, t0, t0 + 119, "1m", [name])
        mean = round(sum(values) / 3, row.decimals)
        assert m["avg"][name] == [None, mean]
        assert (m["min"][name], m["max"][name]) == ([None, min(values)], [None, max(values)])
        h = await store.history(1, t0, t0 + 3599, "1h", [name])
        assert (h["avg"][name], h["min"][name], h["max"][name]) == ([mean], [min(values)], [max(values)])
    finally:
        await db.close()


async def test_a_metric_dropped_from_the_table_keeps_its_column_and_the_rest_roll_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "core.db"
    migrate_sync(path)
    before = {t: _columns(path, t) for t in ("samples_raw", "samples_1m")}
    # A core without the load5 row: it travels in the detail blob, and its column stays, unused.
    store_modules = _store_with(monkeypatch, tuple(f for f in mt.FIELDS if f.name != "load5"))
    db = store_modules["db"].Database(path)
    await db.open()
    try:
        assert {t: _columns(path, t) for t in before} == before
        await db.execute("INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', x'00', 0)")
        store = store_modules["samples"].SampleStore(db, flush_every=0.001)
        t0 = 1_700_000_040.0 - (1_700_000_040.0 % 3600)
        samples = make_samples(t0, 3, 1.0, cpu=[10.0, 20.0, 30.0])
        await write_samples(store, 1, samples)
        assert await store.latest(1) == samples[-1]
        # Each aggregate lands in its own column, though the table's columns no longer line up.
        assert await store.rollup(now=t0 + 3600) == 2
        m = await store.history(1, t0, t0 + 59, "1m", ["cpu_pct", "load15", "uptime"])
        assert m["avg"] == {"cpu_pct": [20.0], "load15": [0.3], "uptime": [1000]}
        assert (m["min"]["cpu_pct"], m["max"]["cpu_pct"]) == ([10.0], [30.0])
        h = await store.history(1, t0, t0 + 3599, "1h", ["cpu_pct", "load15", "uptime"])
        assert h["avg"] == m["avg"]
        with sqlite3.connect(path) as con:
            assert con.execute("SELECT load5_avg FROM samples_1m").fetchall() == [(None,)]
    finally:
        await db.close()


def test_node_ids_deleted_before_the_upgrade_are_never_given_again(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    assert migrate_sync(path, upto=5) == 5
    with sqlite3.connect(path) as con:
        con.execute(
            "INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'a', x'01', 0), (2, 'b', x'02', 0)"
        )
        # Node 7 was deleted long ago; only its audit trail remembers it.
        con.execute(
            "INSERT INTO audit (ts, actor, action, target, result) VALUES (0, 'admin', 'node.delete', 'node:7', 'ok')"
        )
    assert migrate_sync(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT id, name FROM nodes ORDER BY id").fetchall() == [(1, "a"), (2, "b")]
        con.execute("DELETE FROM nodes WHERE id = 2")
        cur = con.execute("INSERT INTO nodes (name, cred_hash, created_at) VALUES ('c', x'03', 0)")
        assert cur.lastrowid == 8


def test_rule_channel_and_silence_ids_are_never_given_again(tmp_path: Path) -> None:
    """A new rule must not take a deleted rule's id: its alert history, flap count and silences
    would become the new rule's (the alerting benchmark's recreated rules inherited flapping)."""
    path = tmp_path / "old.db"
    assert migrate_sync(path, upto=8) == 8
    with sqlite3.connect(path) as con:
        con.execute(
            "INSERT INTO channels (id, name, kind, config, created_at) VALUES (1, 'hook', 'webhook', '{}', 0)"
        )
        con.execute(
            "INSERT INTO alert_rules (id, name, spec, created_at, created_by) VALUES (2, 'cpu', '{}', 0, 'admin')"
        )
        # Deleted before the upgrade: rule 9 left alerts, channel 4 deliveries, silence 6 an audit row.
        con.execute(
            "INSERT INTO alerts (id, rule_id, rule, node_id, node, metric, op, threshold, state, severity, "
            "started_at) VALUES (1, 9, 'old', 1, 'n', 'cpu_pct', '>', 1, 'resolved', 'warning', 0)"
        )
        con.execute(
            "INSERT INTO alert_deliveries (alert_id, channel_id, status, payload, created_at, next_attempt_at) "
            "VALUES (1, 4, 'firing', '{}', 0, 0)"
        )
        con.execute(
            "INSERT INTO audit (ts, actor, action, target, result) VALUES (0, 'admin', 'silence.delete', 'silence:6', 'ok')"
        )
    assert migrate_sync(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT id, name FROM alert_rules").fetchall() == [(2, "cpu")]
        new = {
            "alert_rules": con.execute(
                "INSERT INTO alert_rules (name, spec, created_at, created_by) VALUES ('mem', '{}', 0, 'admin')"
            ).lastrowid,
            "channels": con.execute(
                "INSERT INTO channels (name, kind, config, created_at) VALUES ('mail', 'email', '{}', 0)"
            ).lastrowid,
            "silences": con.execute(
                "INSERT INTO silences (starts_at, ends_at, comment, created_by) VALUES (0, 1, '', 'admin')"
            ).lastrowid,
        }
        assert new == {"alert_rules": 10, "channels": 5, "silences": 7}
        # And a rule deleted after the upgrade is not given again either.
        con.execute("DELETE FROM alert_rules WHERE id = 10")
        cur = con.execute(
            "INSERT INTO alert_rules (name, spec, created_at, created_by) VALUES ('x', '{}', 0, 'a')"
        )
        assert cur.lastrowid == 11


def test_the_newest_detail_of_each_node_moves_to_node_latest(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    assert migrate_sync(path, upto=12) == 12
    with sqlite3.connect(path) as con:
        con.execute(
            "INSERT INTO nodes (id, name, cred_hash, created_at) "
            "VALUES (1, 'a', x'01', 0), (2, 'b', x'02', 0), (3, 'c', x'03', 0)"
        )
        con.executemany(
            "INSERT INTO samples_raw (node_id, ts, seq, detail) VALUES (?, ?, ?, ?)",
            [(1, 1000, 1, b"a"), (1, 2000, 2, b"b"), (1, 3000, 3, None), (2, 50, 1, b"e")],
        )
        # Node 1's newest is in the head; node 2's head row is older than its settled one.
        con.executemany(
            "INSERT INTO samples_head (node_id, ts, seq, detail) VALUES (?, ?, ?, ?)",
            [(1, 4000, 4, b"c"), (2, 10, 2, b"d")],
        )
    assert migrate_sync(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT node_id, ts, detail FROM node_latest ORDER BY node_id").fetchall() == [
            (1, 4000, b"c"),
            (2, 50, b"e"),
        ]
