"""What only the PostgreSQL store does: an outage (a proxy cut, never the shared server stopped) with agents
not acked and told to back off, health degraded, REST 503 and nothing acknowledged lost; retention by day partition."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from devkit.cores import RunningCore
from devkit.tcpproxy import TcpProxy
from servermanager.common import protocol as p
from servermanager.core.datadir import initial_admin_password
from servermanager.core.store.pg import PgDatabase
from servermanager.core.store.samples import SampleStore
from tests.helpers.core import RawAgent
from tests.helpers.pg import SERVER, fresh_database
from tests.helpers.wait import wait_until


@contextlib.asynccontextmanager
async def _two_cores() -> AsyncIterator[tuple[PgDatabase, PgDatabase, SampleStore, SampleStore]]:
    """Two cores' connections and stores on one fresh database with node 1 in it, each store's
    group-commit writer running, as two cores of a cluster write."""
    async with fresh_database() as url:
        a, b = PgDatabase(url), PgDatabase(url)
        await a.open()
        await b.open()
        try:
            await a.execute(
                "INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', ?, 0)", (b"\x00",)
            )
            store_a, store_b = SampleStore(a, flush_every=0.001), SampleStore(b, flush_every=0.001)
            writers = [asyncio.create_task(store_a.run()), asyncio.create_task(store_b.run())]
            try:
                yield a, b, store_a, store_b
            finally:
                for writer in writers:
                    writer.cancel()
        finally:
            await a.close()
            await b.close()


async def test_postgresql_outage_loses_nothing_acknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with fresh_database() as url:
        target = urlsplit(SERVER)
        proxy = await TcpProxy([(target.hostname or "127.0.0.1", target.port or 5432)]).start()
        # A password in the URL (the server trusts loopback and never asks for it) must show nowhere.
        proxied = f"postgresql://postgres:pw-s3cret@127.0.0.1:{proxy.port}/{url.rsplit('/', 1)[1]}"
        server = await RunningCore(tmp_path / "c", database=proxied).start()
        try:
            await server.admin_token()
            agent = RawAgent(server, "web")
            await agent.hello(token=await server.enroll_token())
            t0 = time.time() - 60
            first = agent.make(5, ts=t0)
            ack = await agent.send_samples(first)
            assert ack.upto_seq == 5

            proxy.cut()
            # A batch that cannot be stored is not acknowledged: the agent is told to back off (1013).
            lost_link = agent.make(5, ts=t0 + 10)
            assert agent.ws is not None
            await agent.ws.send_bytes(p.encode(p.Samples(samples=lost_link)))
            msg = await agent.recv_type(aiohttp.WSMessage)
            assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, p.CloseCode.TRY_AGAIN_LATER), msg
            assert "database unreachable" in msg.extra

            status, health = await server.request("GET", "/api/v1/health")
            assert status == 200 and health["status"] == "degraded", health
            assert "PostgreSQL unreachable" in health["problems"][0]
            # A sign-in cannot store its tokens: a precise 503, never a 500.
            password = initial_admin_password(server.data_dir)
            status, body = await server.request(
                "POST", "/api/v1/auth/login", json={"username": "admin", "password": password}
            )
            assert status == 503 and body["error"]["code"] == "database_unavailable", body
            # The password never shows, and the outage is said once however many writes fail.
            said = [
                r for r in caplog.records if "unreachable" in r.getMessage() and r.levelno >= logging.ERROR
            ]
            assert len(said) == 1, [r.getMessage() for r in said]

            proxy.restore()
            # The agent comes back and resends what was never acknowledged.
            await agent.close()
            await agent.hello()
            ack = await agent.send_samples(lost_link)
            assert ack.upto_seq == 10
            await wait_until(
                lambda: server.request("GET", "/api/v1/health"),
                lambda r: r[1]["status"] == "ok",
                what="health back to ok",
            )
            assert agent.node_id is not None
            assert await server.core.store.seqs(agent.node_id) == list(range(1, 11))
            assert any("is back" in r.getMessage() for r in caplog.records)
            assert "pw-s3cret" not in caplog.text and "postgres:***@" in caplog.text
        finally:
            await server.stop()
            await proxy.stop()


async def test_raw_retention_drops_whole_day_partitions() -> None:
    from servermanager.core.store.devices import device_points
    from servermanager.core.store.pg import PgDatabase
    from servermanager.core.store.samples import SampleStore
    from tests.helpers.store import make_samples, write_samples

    day = 86_400.0
    now = 1_800_000_000.0 - 1_800_000_000.0 % day + 3600  # an hour into a day
    async with fresh_database() as url:
        db = PgDatabase(url)
        await db.open()
        try:
            await db.execute(
                "INSERT INTO nodes (id, name, cred_hash, created_at) VALUES (1, 'n', ?, 0)", (b"\x00",)
            )
            store = SampleStore(db, flush_every=0.001)
            # Three rows on each of the four days before today, and three today.
            samples = [
                s for d in range(4, -1, -1) for s in make_samples(now - d * day, 3, 1.0, seq0=1 + 3 * (4 - d))
            ]
            await write_samples(store, 1, samples)
            await store.settle()
            parts = {
                r[0]
                for r in await db.fetchall(
                    "SELECT relname FROM pg_class WHERE relname LIKE 'samples_raw_d%' AND relkind = 'r'"
                )
            }
            assert len(parts) == 5
            # Two days kept: the three oldest days go as whole partitions, their rows counted.
            removed = await store.prune({"raw": 2 * day, "1m": 30 * day, "1h": 730 * day}, now=now)
            left = {
                r[0]
                for r in await db.fetchall(
                    "SELECT relname FROM pg_class WHERE relname LIKE 'samples_raw_d%' AND relkind = 'r'"
                )
            }
            assert len(left) == 3 and left < parts
            # The six rows of the two days dropped, and their device series points (core/store/devices.py).
            assert removed == 6 + len(device_points(1, samples[:6]))
            assert await store.seqs(1) == list(range(7, 16))
        finally:
            await db.close()


def test_the_dialect_translates_what_the_core_writes() -> None:
    from servermanager.core.store.pg import Dialect

    d = Dialect({"t": ["a", "b"]}, {"users"})
    assert d("INSERT OR IGNORE INTO t (a, b, c) VALUES (?, ?, ?)") == (
        "INSERT INTO t (a, b, c) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        False,
    )
    assert d("INSERT OR REPLACE INTO t (a, b, c) SELECT 1, 2, 3")[0] == (
        "INSERT INTO t (a, b, c) SELECT 1, 2, 3 ON CONFLICT (a, b) DO UPDATE SET c = EXCLUDED.c"
    )
    # SQLite replaces the row any unique key matches: a row without the primary key (an id) conflicts
    # on the unique key it gives whole.
    k = Dialect({"c": ["id"]}, set(), {"c": [["name"], ["series_id", "ts"]]})
    assert k("INSERT OR REPLACE INTO c (series_id, ts, n) VALUES (?, ?, ?)")[0] == (
        "INSERT INTO c (series_id, ts, n) VALUES ($1, $2, $3) "
        "ON CONFLICT (series_id, ts) DO UPDATE SET n = EXCLUDED.n"
    )
    assert k("INSERT OR REPLACE INTO c (id, series_id, ts) VALUES (?, ?, ?)")[0].endswith(
        "ON CONFLICT (id) DO UPDATE SET series_id = EXCLUDED.series_id, ts = EXCLUDED.ts"
    )
    # A new row's id comes back (lastrowid); a '?' inside a string literal is not a parameter.
    assert d("INSERT INTO users (name) VALUES (?)") == (
        "INSERT INTO users (name) VALUES ($1) RETURNING id",
        True,
    )
    assert d("SELECT '?' FROM t WHERE a = ? AND b IS NOT ?")[0] == (
        "SELECT '?' FROM t WHERE a = $1 AND b IS DISTINCT FROM $2"
    )
    assert d("SELECT json_group_array(c0) FROM (SELECT ts / 1000.0 AS c0 FROM t) AS q")[0] == (
        "SELECT coalesce(array_to_json(array_agg(c0))::text, '[]') FROM (SELECT ts / 1000.0::float8 AS c0 FROM t) AS q"
    )


async def test_the_schema_follows_the_sqlite_one_and_refuses_a_newer_one() -> None:
    import sqlite3

    from servermanager.core.store.pg import PgDatabase
    from servermanager.core.store.pgschema import sqlite_tables

    async with fresh_database() as url:
        db = PgDatabase(url)
        await db.open()
        try:
            for t in sqlite_tables():
                row = await db.fetchone(
                    "SELECT count(*) FROM information_schema.columns WHERE table_name = ?", (t.name,)
                )
                assert row[0] == len(t.columns) + (0 if t.pk else 1), (
                    t.name
                )  # + rowid where SQLite has no key
            # A metric column this database lacks (a row added to the metric table since) is added on open.
            await db.execute("ALTER TABLE samples_1m DROP COLUMN cpu_pct_max")
        finally:
            await db.close()
        db = PgDatabase(url)
        await db.open()
        try:
            assert await db.fetchone("SELECT cpu_pct_max FROM samples_1m") is None
            await db.execute("UPDATE schema_version SET version = version + 1")
        finally:
            await db.close()
        with pytest.raises(RuntimeError, match="newer than this core"):
            await PgDatabase(url).open()
        assert sqlite3  # the errors callers see are sqlite3's kinds (store/pg.py _map_error)


@pytest.mark.parametrize("n", [1, 511, 512, 513, 1500, 3000])
async def test_execute_values_inserts_exactly_the_rows_in_the_callers_transaction(n: int) -> None:
    from servermanager.core.store.pg import PgDatabase
    from servermanager.core.store.values import execute_values

    async with fresh_database() as url:
        db = PgDatabase(url)
        await db.open()
        try:
            rows = [(i, i * 1000, i, i / 3, None if i % 7 else b"x") for i in range(n)]
            sql = "INSERT INTO samples_head (node_id, ts, seq, cpu_pct, detail) VALUES {values}"

            async def abandoned() -> None:
                async with db.transaction() as con:
                    await execute_values(con, sql, rows)
                    raise RuntimeError("rolled back whole")

            with pytest.raises(RuntimeError):
                await abandoned()
            assert (await db.fetchone("SELECT count(*) FROM samples_head"))[0] == 0
            async with db.transaction() as con:
                await execute_values(con, sql, rows)
            got = await db.fetchall(
                "SELECT node_id, ts, seq, cpu_pct, detail FROM samples_head ORDER BY node_id"
            )
            assert [tuple(r) for r in got] == rows
        finally:
            await db.close()


async def test_a_writer_of_another_core_waits_for_a_rollup_and_its_mark_survives() -> None:
    """Two cores on one database: core B's batch for a bucket core A is rolling up waits for A's commit,
    then marks the bucket afresh, so the next rollup includes B's rows (none of them left out)."""
    import asyncio

    from tests.helpers.store import make_samples
    from tests.helpers.wait import wait_until

    t0 = 1_700_000_040.0 - (1_700_000_040.0 % 60)
    async with _two_cores() as (a, _b, store_a, store_b):
        await store_a.store(1, make_samples(t0, 10, 1.0, cpu=[10.0] * 10))
        # Core A's rollup holds the marks (as its 1m step does) ...
        async with a.transaction() as con:
            await a.lock_marks(con)
            # ... while core B stores more samples of the same minute: B waits on the lock.
            late = asyncio.create_task(
                store_b.store(1, make_samples(t0 + 10, 10, 1.0, cpu=[30.0] * 10, seq0=11))
            )
            await wait_until(
                lambda: a.fetchone(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                ),
                lambda r: r[0] >= 1,
                what="core B's writer waiting for the marks",
            )
            assert not late.done()
            await con.execute("DELETE FROM rollup_dirty")  # what the rollup does at its end
        await late
        await store_a.rollup(now=t0 + 3600)
        m = await store_a.history(1, t0, t0 + 60, "1m", ["cpu_pct"])
        assert m["avg"]["cpu_pct"] == [20.0]  # both cores' rows in the bucket


# Raw series points not in a chunk yet: new ones in series_incoming, moved ones in series_raw.
_HEADS = "SELECT (SELECT count(*) FROM series_raw) + (SELECT count(*) FROM series_incoming)"


async def test_a_point_another_core_writes_into_a_window_being_settled_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Core B stores a late point inside a window core A is settling into a chunk, after A read the
    head and before A deletes what it packed: the point is not deleted with A's rows (a span's DELETE
    would see it under READ COMMITTED); it waits in the head, where reads find it, for the next settle."""

    from servermanager.common.metrics import Sample
    from servermanager.common.series import SeriesPoint
    from servermanager.core.store import series
    from servermanager.core.store.chunks import CHUNK_MS
    from tests.helpers.core import metrics

    window = CHUNK_MS // 1000
    base = 1_700_000_000 // window * window

    def sample(seq: int, ts: float, value: float) -> Sample:
        return Sample(
            seq=seq, ts=ts, metrics=metrics(series=[SeriesPoint("queue", value)], disks=[], nets=[])
        )

    samples = [sample(i + 1, float(base + 10 * i), float(i)) for i in range(window // 10)]
    late = sample(1000, float(base + 15), -1.0)
    async with _two_cores() as (a, _b, store_a, store_b):
        await store_a.store(1, samples)
        real = series.fetch_values
        stored: list[bool] = []

        async def meanwhile(con: object, template: str, rows: list[object]) -> list[object]:
            # Core A has read the head's rows of the window; core B's commit lands now.
            # (B's own writer looks up new series ids through fetch_values too.)
            if not stored and "series_chunks" in template:
                await store_b.store(1, [late])
                stored.append(True)
            return await real(con, template, rows)  # type: ignore[arg-type]

        monkeypatch.setattr(series, "fetch_values", meanwhile)
        now_ms = (base + window) * 1000 + series.SETTLE_GRACE_MS + 1000
        assert await store_a.series.settle(now_ms) == len(samples)
        assert stored == [True]
        found = await store_a.series.find(1, "queue", {})
        assert found is not None
        want = sorted([(s.ts, float(i)) for i, s in enumerate(samples)] + [(late.ts, -1.0)])
        got = await store_a.series.history(found[0], base - 1, base + window, "raw")
        assert list(zip(got["ts"], got["avg"], strict=True)) == want
        # Waiting where reads find it: new points first go to series_incoming.
        assert (await a.fetchone(_HEADS))[0] == 1
        # The next settle packs it into the window's chunk.
        assert await store_a.series.settle(now_ms, force=True) == 1
        assert (await a.fetchone(_HEADS))[0] == 0
        got = await store_a.series.history(found[0], base - 1, base + window, "raw")
        assert list(zip(got["ts"], got["avg"], strict=True)) == want


async def test_a_chunk_another_core_grows_while_a_rollup_reopens_it_keeps_its_new_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Core B's rollup reads a settled window's chunk to put it back in the head; before B takes it,
    core A's settle merges a late point into that chunk and commits. B takes and puts back the chunk
    as it is now, late point included: a delete by id would have dropped the point A packed."""

    from servermanager.common.metrics import Sample
    from servermanager.common.series import SeriesPoint
    from servermanager.core.store import pg, series
    from servermanager.core.store.chunks import CHUNK_MS
    from tests.helpers.core import metrics

    window = CHUNK_MS // 1000
    base = 1_700_000_000 // window * window
    now = base + window + series.SETTLE_GRACE_MS / 1000 + 1

    def sample(seq: int, ts: float, value: float) -> Sample:
        return Sample(
            seq=seq, ts=ts, metrics=metrics(series=[SeriesPoint("queue", value)], disks=[], nets=[])
        )

    samples = [sample(i + 1, float(base + 10 * i), 1.0) for i in range(window // 10)]
    late = sample(1000, float(base + 15), 5.0)
    async with _two_cores() as (a, b, store_a, store_b):
        await store_a.store(1, samples)
        await store_a.rollup(now=now)  # the window settled into a chunk
        assert (await a.fetchone("SELECT count(*) FROM series_chunks"))[0] == 1
        await store_a.store(1, [late])  # its minute marked
        async with a.transaction() as con:  # into the head, as A's own rollup pass would
            await store_a.series.move_incoming(con)
        real = pg.Connection.execute
        merged: list[int] = []

        def execute(self: pg.Connection, sql: str, params: Sequence[Any] = ()) -> Any:
            if sql.startswith("DELETE FROM series_chunks WHERE id") and self is b.writer and not merged:
                merged.append(0)

                async def first() -> Any:
                    # Core A packs the late point into the chunk B has read, and commits.
                    merged[0] = await store_a.series.settle(int(now * 1000), force=True)
                    return await real(self, sql, params)

                return first()
            return real(self, sql, params)

        monkeypatch.setattr(pg.Connection, "execute", execute)
        await store_b.rollup(now=now)
        assert merged == [1]
        found = await store_a.series.find(1, "queue", {})
        assert found is not None
        raw = await store_a.series.history(found[0], base - 1, base + window, "raw")
        assert (late.ts, 5.0) in zip(raw["ts"], raw["avg"], strict=True)
        assert len(raw["ts"]) == len(samples) + 1
        # B's rollup of the late point's minute read it too.
        m1 = await store_a.series.history(found[0], base, base + 59, "1m")
        assert m1["max"] == [5.0]
        assert m1["avg"] == [pytest.approx((6 * 1.0 + 5.0) / 7)]  # six points of 1.0 and the late one
