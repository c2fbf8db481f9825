"""The sqlite spool: seq, ranges, the size bound and persistence across reopen."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from servermanager.agent.spool import RECENT, Spool, SpoolClosedError
from servermanager.common.metrics import Sample
from servermanager.common.protocol import AgentToCore, decode, decoder
from tests.agent.fakes import metrics


def fill(spool: Spool, n: int, start_ts: float = 1000.0) -> list[Sample]:
    return [spool.append(start_ts + i, metrics(float(i))) for i in range(n)]


def test_seq_is_monotonic_across_reopen_even_when_empty(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    with Spool(path) as spool:
        samples = fill(spool, 3)
        assert [s.seq for s in samples] == [1, 2, 3]
        assert spool.delete_range(1, 3) == 3
        assert spool.count() == 0
    with Spool(path) as spool:
        assert spool.last_seq == 3
        assert spool.append(2000.0, metrics()).seq == 4  # not 1: seq survives an empty spool
        assert spool.count() == 1


def test_append_stores_the_sample_as_given(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        sample = spool.append(1234.5, metrics(42.0))
        assert spool.oldest(10) == [sample]
        assert sample.ts == 1234.5 and sample.metrics.cpu_pct == 42.0
        ((seq, raw),) = spool.read_raw(10)
        assert seq == sample.seq
        # The stored bytes are exactly a Sample as the core decodes it inside a samples frame.
        frame = b'{"type":"samples","samples":[' + raw + b"]}"
        assert decode(decoder(AgentToCore), frame).samples == [sample]


def test_reads_are_in_seq_order_with_bounds(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        fill(spool, 10)
        assert [s.seq for s in spool.oldest(3)] == [1, 2, 3]
        assert [s.seq for s in spool.oldest(3, after_seq=8)] == [9, 10]
        assert [s.seq for s in spool.newest(3)] == [8, 9, 10]
        assert [seq for seq, _ in spool.read_raw(100, after_seq=2, upto_seq=5)] == [3, 4, 5]


def test_delete_range_is_inclusive_and_leaves_the_rest(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        fill(spool, 10)
        assert spool.delete_range(3, 6) == 4
        assert [s.seq for s in spool.oldest(100)] == [1, 2, 7, 8, 9, 10]
        assert spool.delete_range(1, 100) == 6
        assert spool.delete_range(5, 4) == 0
        assert spool.count() == 0
        assert spool.dropped == 0  # acknowledged is not dropped


def test_bound_evicts_oldest_and_counts_drops_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path, max_samples=5) as spool:
        fill(spool, 8)
        assert spool.count() == 5
        assert [s.seq for s in spool.oldest(100)] == [4, 5, 6, 7, 8]
        assert spool.dropped == 3
    with Spool(path, max_samples=5) as spool:
        assert spool.dropped == 3
        spool.append(1.0, metrics())
        assert spool.dropped == 4
        assert spool.oldest(1)[0].seq == 5
    # A bound lowered between runs is enforced at open, oldest first.
    with Spool(path, max_samples=2) as spool:
        assert [s.seq for s in spool.oldest(100)] == [8, 9]
        assert spool.dropped == 7


def test_discard_counts_as_dropped(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        fill(spool, 4)
        assert spool.discard([2, 3, 99]) == 2
        assert spool.dropped == 2
        assert [s.seq for s in spool.oldest(10)] == [1, 4]


def test_advance_seq_only_moves_up_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path) as spool:
        fill(spool, 2)
        assert spool.advance_seq(100) is True
        assert spool.advance_seq(50) is False
        assert spool.append(1.0, metrics()).seq == 101
    with Spool(path) as spool:
        assert spool.last_seq == 101


def test_uses_wal_and_survives_an_unclosed_connection(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = Spool(path)
    fill(spool, 3)
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    # Reopened while the first handle was never closed (as after kill -9): every commit is there.
    with Spool(path) as again:
        assert again.count() == 3 and again.last_seq == 3
    spool.close()


def test_closed_spool_refuses_use(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.close()
    spool.close()  # idempotent
    with pytest.raises(SpoolClosedError, match=r"s\.db is closed"):
        spool.append(1.0, metrics())


def test_corrupt_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a sqlite database at all" * 100)
    with Spool(path) as spool:
        assert spool.count() == 0
        assert spool.append(1.0, metrics()).seq == 1
    assert len(list(tmp_path.glob("s.db.corrupt-*"))) == 1


def test_concurrent_appends_from_threads_keep_seq_unique(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        seqs: list[int] = []
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(25):
                s = spool.append(1.0, metrics())
                with lock:
                    seqs.append(s.seq)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(seqs) == list(range(1, 101))
        assert spool.count() == 100


def test_the_newest_samples_are_read_from_memory_as_the_database_has_them(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db") as spool:
        assert spool.recent(10, 0) is None  # nothing appended by this process yet
        fill(spool, RECENT + 3)
        newest = spool.newest_seq
        assert newest == spool.last_seq == RECENT + 3
        for after in (newest - RECENT + 1, newest - 2, newest):
            assert spool.recent(10, after) == spool.read_raw(10, after)
        assert spool.recent(2, newest - 5) == spool.read_raw(2, newest - 5)
        # Older than memory holds: the database answers.
        assert spool.recent(10, newest - RECENT - 1) is None
        # Acknowledged or discarded samples are gone from memory too.
        spool.delete_range(newest - 1, newest - 1)
        spool.discard([newest])
        assert spool.recent(10, newest - 3) == spool.read_raw(10, newest - 3)
        assert [seq for seq, _ in spool.read_raw(10, newest - 3)] == [newest - 2]


def test_an_eviction_empties_the_memory_of_newest_samples(tmp_path: Path) -> None:
    with Spool(tmp_path / "s.db", max_samples=3) as spool:
        fill(spool, 3)
        assert spool.recent(10, 0) == spool.read_raw(10, 0)
        spool.append(2000.0, metrics())  # evicts seq 1
        assert spool.recent(10, 0) is None and [s for s, _ in spool.read_raw(10, 0)] == [2, 3, 4]
        assert spool.recent(10, 3) == spool.read_raw(10, 3)


def test_acknowledged_samples_are_gone_at_once_and_deleted_with_the_next_commit(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Spool(path) as spool:
        fill(spool, 5)
        spool.delete_later(1, 3, 3)
        assert spool.count() == 2  # left out at once
        raw = sqlite3.connect(path)
        try:
            assert raw.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 5  # not deleted yet
            spool.append(2000.0, metrics())  # deletes them in its own transaction
            assert raw.execute("SELECT seq FROM samples ORDER BY seq").fetchall() == [(4,), (5,), (6,)]
            spool.delete_later(4, 4, 1)
            assert [seq for seq, _ in spool.read_raw(10)] == [5, 6]  # a read deletes them first
            assert raw.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 2
            spool.delete_later(5, 5, 1)
        finally:
            raw.close()
        assert spool.count() == 1
    with Spool(path) as again:  # close deleted the last acknowledged one
        assert again.count() == 1 and [s.seq for s in again.oldest(10)] == [6]
