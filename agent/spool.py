"""Durable on-disk spool of samples (stdlib sqlite3): every sample waits here until acknowledged."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType

import msgspec

from servermanager.common.metrics import Metrics, Sample

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.sqlite3"
DEFAULT_MAX_SAMPLES = 100_000
RECENT = 8  # newest encoded samples kept in memory for the link (Spool.recent)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    seq  INTEGER PRIMARY KEY,
    ts   REAL NOT NULL,
    data BLOB NOT NULL           -- the msgspec-JSON Sample, exactly as it goes on the wire
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0), ('dropped', 0);
"""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Sample)


class SpoolClosedError(RuntimeError):
    """The spool was used after close()."""


class Spool:
    """Samples in seq order, bounded, surviving restarts and kill -9.

    WAL with synchronous=NORMAL: a committed append survives the process being killed at any
    point (only an OS crash or power cut can lose the last few commits), and costs no fsync per
    sample. The last seq lives in `meta` rather than being derived from the table, so seq keeps
    increasing across restarts even after the spool was drained empty. All methods block: call
    them via asyncio.to_thread. A lock serialises them, so overlapping threads are safe too.
    """

    def __init__(self, path: str | os.PathLike[str], max_samples: int = DEFAULT_MAX_SAMPLES) -> None:
        if max_samples < 1:
            raise ValueError("max_samples must be at least 1")
        self.path = Path(path)
        self.max_samples = max_samples
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.OperationalError:
            raise  # cannot open, locked, read-only: a real problem to report, not corruption
        except sqlite3.DatabaseError as exc:
            # An unreadable spool must not keep the agent from running: keep the file for a post
            # mortem and start an empty one. Seq continuity is restored from the core's welcome.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error(
                "spool %s is unreadable (%s); moved it to %s and started an empty one",
                self.path,
                exc,
                aside,
            )
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                extra = Path(f"{self.path}{suffix}")
                if extra.exists():
                    os.replace(extra, Path(f"{aside}{suffix}"))
            self._db = self._open()
        self._closed = False
        # The newest appended samples, encoded, for the link to send without a trip to a worker
        # thread and the database: a tuple replaced whole, so the event loop reads it unlocked.
        self._recent: tuple[tuple[int, bytes], ...] = ()
        # Ranges the core acknowledged, deleted in the next append's transaction (delete_later);
        # their own lock is held for a list operation only, never across database work.
        self._acked: list[tuple[int, int]] = []
        self._acked_rows = 0  # samples in those ranges, left out of count() already
        self._acked_lock = threading.Lock()
        self._last_seq = self._meta("last_seq")
        self._dropped = self._meta("dropped")
        self._count = int(self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
        # Also guards against a max lowered since the last run: honour the bound at once.
        with self._lock:
            with self._tx():
                evicted = self._evict_sql(self._count)
            self._count -= evicted
            self._dropped += evicted

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit below, nothing is implicitly deferred.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _meta(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _check(self) -> None:
        if self._closed:
            raise SpoolClosedError(f"spool {self.path} is closed")

    def _evict_sql(self, count: int) -> int:
        """Delete the oldest rows past the bound inside the caller's transaction; returns how many.

        In-memory counters are only updated by the caller after COMMIT, so a failed transaction
        (disk full) leaves them matching the file.
        """
        excess = count - self.max_samples
        if excess <= 0:
            return 0
        n = self._db.execute(
            "DELETE FROM samples WHERE seq IN (SELECT seq FROM samples ORDER BY seq LIMIT ?)", (excess,)
        ).rowcount
        self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (n,))
        return n

    # ------------------------------------------------------------ writing

    def append(self, ts: float, metrics: Metrics) -> Sample:
        """Store one reading under the next seq; evicts the oldest sample(s) past the bound."""
        with self._lock:
            self._check()
            seq = self._last_seq + 1
            sample = Sample(seq=seq, ts=ts, metrics=metrics)
            data = _encoder.encode(sample)
            acked, rows = self._take_acked()
            try:
                with self._tx():
                    deleted = self._delete_sql(acked)
                    self._db.execute("INSERT INTO samples (seq, ts, data) VALUES (?, ?, ?)", (seq, ts, data))
                    self._db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (seq,))
                    evicted = self._evict_sql(self._count - deleted + 1)
            except BaseException:
                self._requeue_acked(acked, rows)
                raise
            self._count -= deleted
            # Committed: now the link may see it. An eviction may have taken older ones.
            self._recent = (*(self._recent[1 - RECENT :] if not evicted else ()), (seq, data))
            self._last_seq = seq
            self._count += 1 - evicted
            self._dropped += evicted
        if evicted:
            log.debug("spool full (%d samples): evicted %d oldest", self.max_samples, evicted)
        return sample

    def _delete_sql(self, ranges: list[tuple[int, int]]) -> int:
        n = 0
        for lo, hi in ranges:
            n += self._db.execute("DELETE FROM samples WHERE seq BETWEEN ? AND ?", (lo, hi)).rowcount
        return n

    def delete_later(self, from_seq: int, upto_seq: int, rows: int) -> None:
        """Forget the `rows` samples from_seq..upto_seq: the link's way after an ack, which then
        costs neither a transaction nor a trip to a worker thread of its own. Does not block.

        count() leaves them out at once and every read deletes them first; the rows themselves go
        with the next append's commit (or at close). A kill -9 before that sends them again, which
        the core takes as the replays they are.
        """
        if upto_seq >= from_seq:
            with self._acked_lock:
                self._acked.append((from_seq, upto_seq))
                self._acked_rows += rows

    def _take_acked(self) -> tuple[list[tuple[int, int]], int]:
        """The acknowledged ranges not deleted yet, handed to the caller (who holds _lock)."""
        with self._acked_lock:
            acked, rows = self._acked, self._acked_rows
            self._acked, self._acked_rows = [], 0
        return acked, rows

    def _requeue_acked(self, acked: list[tuple[int, int]], rows: int) -> None:
        with self._acked_lock:
            self._acked[:0] = acked  # still acknowledged: deleted with the next commit
            self._acked_rows += rows

    def _flush_acked(self) -> None:
        """Delete the acknowledged ranges now (the caller holds _lock): before any read."""
        acked, rows = self._take_acked()
        if not acked:
            return
        try:
            with self._tx():
                deleted = self._delete_sql(acked)
        except BaseException:
            self._requeue_acked(acked, rows)
            raise
        self._count -= deleted

    def delete_range(self, from_seq: int, upto_seq: int) -> int:
        """Forget samples from_seq..upto_seq (inclusive), e.g. once the core acknowledged them."""
        if upto_seq < from_seq:
            return 0
        with self._lock:
            self._check()
            self._flush_acked()  # so the count returned is of these rows alone
            self._recent = tuple(r for r in self._recent if not from_seq <= r[0] <= upto_seq)
            with self._tx():
                n = self._db.execute(
                    "DELETE FROM samples WHERE seq BETWEEN ? AND ?", (from_seq, upto_seq)
                ).rowcount
            self._count -= n
            return n

    def discard(self, seqs: list[int]) -> int:
        """Drop samples that can never be delivered (e.g. too big for a frame); counted as dropped."""
        if not seqs:
            return 0
        with self._lock:
            self._check()
            self._flush_acked()
            gone = set(seqs)
            self._recent = tuple(r for r in self._recent if r[0] not in gone)
            with self._tx():
                n = 0
                for seq in seqs:
                    n += self._db.execute("DELETE FROM samples WHERE seq = ?", (seq,)).rowcount
                self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (n,))
            self._count -= n
            self._dropped += n
            return n

    def advance_seq(self, seq: int) -> bool:
        """Make the next seq exceed `seq` (the core's last_seq after this spool was lost)."""
        with self._lock:
            self._check()
            if seq <= self._last_seq:
                return False
            with self._tx():
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (seq,))
            self._last_seq = seq
            return True

    # ------------------------------------------------------------ reading

    def read_raw(
        self, limit: int, after_seq: int = 0, upto_seq: int | None = None
    ) -> list[tuple[int, bytes]]:
        """Up to `limit` (seq, encoded Sample) pairs with after_seq < seq <= upto_seq, in seq order."""
        with self._lock:
            self._check()
            self._flush_acked()
            if upto_seq is None:
                rows = self._db.execute(
                    "SELECT seq, data FROM samples WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT seq, data FROM samples WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (after_seq, upto_seq, limit),
                ).fetchall()
        return [(int(seq), bytes(data)) for seq, data in rows]

    def recent(self, limit: int, after_seq: int) -> list[tuple[int, bytes]] | None:
        """What read_raw(limit, after_seq) returns, from memory, when the newest appended samples
        hold all of it; None otherwise (read the database). Does not block: for the event loop."""
        recent = self._recent
        if not recent or recent[0][0] > after_seq + 1:
            return None  # the samples right after after_seq are not all in memory
        return [r for r in recent if r[0] > after_seq][:limit]

    def oldest(self, limit: int, after_seq: int | None = None) -> list[Sample]:
        """The oldest `limit` samples (after `after_seq` if given), in seq order."""
        return [_decoder.decode(data) for _, data in self.read_raw(limit, after_seq or 0)]

    def newest(self, limit: int) -> list[Sample]:
        """The newest `limit` samples, in seq order."""
        with self._lock:
            self._check()
            self._flush_acked()
            rows = self._db.execute("SELECT data FROM samples ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [_decoder.decode(bytes(data)) for (data,) in reversed(rows)]

    def count(self) -> int:
        with self._lock:
            return self._count - self._acked_rows

    @property
    def last_seq(self) -> int:
        """The highest seq ever assigned (0 for a brand-new spool)."""
        with self._lock:
            return self._last_seq

    @property
    def newest_seq(self) -> int:
        """last_seq without waiting for the lock, for a caller on the event loop: one int read,
        set only after its sample's commit, so a sample up to it is always there to read."""
        return self._last_seq

    @property
    def dropped(self) -> int:
        """Samples evicted or discarded undelivered, ever (persisted)."""
        with self._lock:
            return self._dropped

    # ------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._flush_acked()
                # Folds the WAL back into the main file so a clean stop leaves one tidy file.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("spool checkpoint on close failed: %s", exc)
            finally:
                self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
