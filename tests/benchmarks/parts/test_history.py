"""The history part's database: days of one-minute rollups and their hourly rows, as the core stores them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from benchmarks.parts.history import _sql_timing, _table_bytes, build_history_db
from servermanager.common import metrics as mt


def test_one_day_of_rollups_covers_the_range_minute_by_minute(tmp_path: Path) -> None:
    db = tmp_path / "core" / "servermanager.db"
    node_id, start, end = build_history_db(db, days=1)
    assert end - start == 86_400_000
    assert end % 60_000 == 0
    con = sqlite3.connect(db)
    try:
        ts = [
            r[0] for r in con.execute("SELECT ts FROM samples_1m WHERE node_id = ? ORDER BY ts", (node_id,))
        ]
        assert ts == list(range(start + 60_000, end + 1, 60_000))
        hours = con.execute(
            "SELECT ts, cnt FROM samples_1h WHERE node_id = ? ORDER BY ts", (node_id,)
        ).fetchall()
        assert [h[0] for h in hours] == list(range(start + 3_600_000, end + 1, 3_600_000))
        assert {h[1] for h in hours} == {3600}
        assert {r[0] for r in con.execute("SELECT cnt FROM samples_1m")} == {60}
        for f in mt.SCALAR_FIELDS:
            d = mt.FIELD_DECIMALS[f]
            rows = con.execute(f"SELECT {f}_min, {f}_avg, {f}_max FROM samples_1m").fetchall()
            assert all(lo <= avg <= hi for lo, avg, hi in rows), f
            assert all(round(v, d) == v for row in rows for v in row), f
            assert len({avg for _, avg, _ in rows}) > 100, f  # a walk, not a constant
    finally:
        con.close()


def test_sql_timing_and_table_bytes_measure_the_built_rows(tmp_path: Path) -> None:
    db = tmp_path / "core" / "servermanager.db"
    node_id, start, end = build_history_db(db, days=1)
    timing = _sql_timing(db, node_id, start, end, reps=3)
    assert set(timing) == {"1m_all_fields", "1m_cpu_pct"}
    for pcts in timing.values():
        assert pcts["n"] == 3
        assert pcts["p50"] is not None and 0 < pcts["p50"] <= pcts["p95"] <= pcts["max"]
    sizes = _table_bytes(db, "samples_1m", 1440)
    # 16 fields x avg/min/max as REALs: well over a hundred bytes a row.
    assert 100 < sizes["bytes_per_row_payload"] <= sizes["bytes_per_row_pages"]
