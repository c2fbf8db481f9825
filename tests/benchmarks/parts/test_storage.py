"""The storage part: bytes per raw sample from a database's dbstat pages."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from benchmarks.parts.storage import storage_stats


def _db(path: Path, nodes: int, per_node: int) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE samples_raw (node_id INTEGER, ts INTEGER, detail BLOB)")
        con.executemany(
            "INSERT INTO samples_raw VALUES (?, ?, ?)",
            [(n, t, b"x" * 100) for n in range(1, nodes + 1) for t in range(per_node)],
        )
        con.commit()
    finally:
        con.close()


def test_bytes_per_row_of_samples_raw(tmp_path: Path) -> None:
    db = tmp_path / "servermanager.db"
    _db(db, nodes=3, per_node=500)
    st = storage_stats(db)
    assert (st["rows"], st["nodes"]) == (1500, 3)
    assert st["detail_blob_bytes_mean"] == 100.0
    # Each row holds its 100-byte blob plus the two integers and the record header.
    assert 100 < st["bytes_per_row_payload"] < 120
    assert st["bytes_per_row_pages"] == round(st["pages"] * st["page_size"] / 1500, 1)
    assert st["bytes_per_row_pages"] >= st["bytes_per_row_payload"]
    assert 50 < st["page_fill_pct"] <= 100
    # The whole file is the database plus whatever WAL is left beside it.
    files = [p for p in (db, Path(str(db) + "-wal")) if p.exists()]
    assert st["db_file_bytes"] == sum(os.path.getsize(p) for p in files) > 0
    assert st["bytes_per_row_whole_file"] == round(st["db_file_bytes"] / 1500, 1)


def test_an_empty_table_gives_no_ratios(tmp_path: Path) -> None:
    db = tmp_path / "servermanager.db"
    _db(db, nodes=0, per_node=0)
    st = storage_stats(db)
    assert st["rows"] == st["nodes"] == 0
    for key in ("bytes_per_row_pages", "bytes_per_row_payload", "bytes_per_row_whole_file"):
        assert st[key] is None
