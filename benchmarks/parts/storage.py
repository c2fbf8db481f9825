"""Benchmark part c: SQLite bytes per stored raw sample, from dbstat page counts of a core's database."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any


def storage_stats(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = con.execute("SELECT count(*) FROM samples_raw").fetchone()[0]
        page = con.execute("PRAGMA page_size").fetchone()[0]
        pages, pgsize, payload, unused = con.execute(
            "SELECT count(*), sum(pgsize), sum(payload), sum(unused) FROM dbstat WHERE name = 'samples_raw'"
        ).fetchone()
        detail = con.execute("SELECT avg(length(detail)) FROM samples_raw").fetchone()[0]
        nodes = con.execute("SELECT count(DISTINCT node_id) FROM samples_raw").fetchone()[0]
    finally:
        con.close()
    files = {s: os.path.getsize(str(db) + s) for s in ("", "-wal") if os.path.exists(str(db) + s)}
    file_bytes = sum(files.values())
    return {
        "rows": rows,
        "nodes": nodes,
        "page_size": page,
        "pages": pages,
        "bytes_per_row_pages": round(pgsize / rows, 1) if rows else None,
        "bytes_per_row_payload": round(payload / rows, 1) if rows else None,
        "page_fill_pct": round(100 * (pgsize - unused) / pgsize, 1) if pgsize else None,
        "detail_blob_bytes_mean": round(detail, 1) if detail else None,
        "db_file_bytes": file_bytes,
        "bytes_per_row_whole_file": round(file_bytes / rows, 1) if rows else None,
    }
