"""`servermanager admin migrate`: a data dir a real core filled, copied into PostgreSQL, counted, and served from there."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg

from devkit.cores import RunningCore
from devkit.ports import free_port
from servermanager.common.series import SeriesPoint
from servermanager.core.datadir import DB_FILENAME, initial_admin_password
from tests.helpers.core import RawAgent
from tests.helpers.pg import fresh_database
from tests.helpers.procs import cli

# A named series' points of 30 h ago: past their raw windows' grace and their minutes' (a day), so
# the fill's rollup packs both into chunks (series_chunks, series_1m_chunks).
OLD = 30 * 3600
SERIES_POINTS = 30


def _series_query(now: float, resolution: str) -> str:
    return (
        f"/api/v1/nodes/1/series/history?name=queue&from={now - OLD - 600}&to={now - OLD + 3600}"
        f"&resolution={resolution}"
    )


async def _fill(folder: Path) -> tuple[dict[str, object], dict[str, object], float]:
    """A core on SQLite with a user, a node's samples (settled, rolled up and in the head), a named
    series in chunks and a rule; returns a history answer, the series' raw and 1m answers and the time
    they cover up to."""
    core = await RunningCore(folder, sample_max_age=OLD + 3600).start()  # the old points admitted
    try:
        await core.user_token("olga", "operator")
        agent = RawAgent(core)
        await agent.hello(token=await core.enroll_token())
        t0 = time.time() - 300
        old = [
            s
            for i in range(SERIES_POINTS)
            for s in agent.make(1, ts=t0 - OLD + 60 * i, series=[SeriesPoint("queue", float(i))])
        ]
        await agent.send_samples(old)
        for i in range(4):
            await agent.send_samples(agent.make(30, ts=t0 + i * 60, cpu=float(i)))
        await core.core.store.rollup()  # settled and rolled up; the last ones wait in the head
        await agent.send_samples(agent.make(5, ts=t0 + 250))
        status, rule = await core.request(
            "POST",
            "/api/v1/alert-rules",
            await core.admin_token(),
            json={"name": "cpu", "metric": "cpu_pct", "op": ">", "threshold": 90, "targets": {"all": True}},
        )
        assert status == 201, rule
        await agent.close()
        now = time.time()
        status, history = await core.request(
            "GET",
            f"/api/v1/nodes/{agent.node_id}/metrics?from={t0 - 1}&to={now}&resolution=raw&fields=cpu_pct",
            await core.admin_token(),
        )
        assert status == 200 and len(history["ts"]) == 125, history
        series = {}
        for res in ("raw", "1m"):
            status, answer = await core.request("GET", _series_query(now, res), await core.admin_token())
            assert status == 200 and answer["avg"]["queue"] == [float(i) for i in range(SERIES_POINTS)], (
                answer
            )
            series[res] = answer
        return history, series, now
    finally:
        await core.stop()


async def test_a_filled_data_dir_moves_to_postgresql_whole(tmp_path: Path) -> None:
    folder = tmp_path / "core"
    history, series, now = await _fill(folder)
    async with fresh_database() as url:
        # Refused while a core holds the data dir.
        running = await RunningCore(folder).start()
        try:
            busy = await asyncio.to_thread(cli, "admin", "migrate", "--data-dir", str(folder), "--to", url)
        finally:
            await running.stop()
        assert busy.returncode == 1 and "stop it first" in busy.stderr, busy.stderr

        done = await asyncio.to_thread(cli, "admin", "migrate", "--data-dir", str(folder), "--to", url)
        assert done.returncode == 0, done.stderr
        lines = {
            line.split()[0]: line.split()[1:]
            for line in done.stdout.splitlines()
            if "rows copied" not in line
        }
        # The core's clean stop settled its head: every sample is in samples_raw.
        assert lines["samples_raw"] == [str(125 + SERIES_POINTS)] * 2 and lines["samples_head"] == ["0", "0"]
        # The named series' chunks are copied too, raw and 1m.
        for table in ("series_chunks", "series_1m_chunks"):
            assert int(lines[table][0]) > 0 and lines[table][0] == lines[table][1], (table, lines[table])
        assert lines["users"] == ["2", "2"] and lines["alert_rules"] == ["1", "1"]
        assert "every count matches" in done.stdout

        con = await asyncpg.connect(url)
        try:
            assert await con.fetchval("SELECT count(*) FROM audit WHERE action = 'admin.migrate'") == 1
            # The settled rows went into day partitions.
            assert await con.fetchval("SELECT count(*) FROM pg_inherits") >= 1
        finally:
            await con.close()

        # A second run into the now full database is refused, and replaces it with --force.
        again = await asyncio.to_thread(cli, "admin", "migrate", "--data-dir", str(folder), "--to", url)
        assert again.returncode == 1 and "already holds rows" in again.stderr and "--force" in again.stderr
        forced = await asyncio.to_thread(
            cli, "admin", "migrate", "--data-dir", str(folder), "--to", url, "--force"
        )
        assert forced.returncode == 0, forced.stderr

        # A core on PostgreSQL answers what the SQLite one did, with the same users and rules.
        core = await RunningCore(tmp_path / "pg-core", database=url).start()
        try:
            status, olga = await core.request(
                "POST", "/api/v1/auth/login", json={"username": "olga", "password": "password123"}
            )
            assert status == 200, olga
            token = olga["access_token"]
            node = 1
            status, answer = await core.request(
                "GET",
                f"/api/v1/nodes/{node}/metrics?from={history['ts'][0] - 1}&to={now}&resolution=raw&fields=cpu_pct",
                token,
            )
            assert status == 200 and (answer["ts"], answer["avg"]) == (history["ts"], history["avg"])
            # The series' points, read back out of the copied chunks.
            for res in ("raw", "1m"):
                status, answer = await core.request("GET", _series_query(now, res), token)
                assert status == 200 and answer == series[res], (res, answer)
            status, rules = await core.request("GET", "/api/v1/alert-rules", token)
            assert [r["name"] for r in rules["rules"]] == ["cpu"]
            # The first core's admin signs in, and new ids continue above the copied ones.
            status, body = await core.request(
                "POST",
                "/api/v1/auth/login",
                json={"username": "admin", "password": initial_admin_password(folder)},
            )
            assert status == 200, body
            status, rule = await core.request(
                "POST",
                "/api/v1/alert-rules",
                body["access_token"],
                json={
                    "name": "mem",
                    "metric": "mem_pct",
                    "op": ">",
                    "threshold": 90,
                    "targets": {"all": True},
                },
            )
            assert status == 201 and rule["id"] > rules["rules"][0]["id"], rule
        finally:
            await core.stop()


def test_bad_targets_are_one_clear_line(tmp_path: Path) -> None:
    folder = tmp_path / "core"
    folder.mkdir()
    for url, words in (
        ("mysql://u:pw77@h/db", "expected sqlite or a postgresql://"),
        (f"postgresql://u:pw77@127.0.0.1:{free_port()}/db", "unreachable"),
    ):
        (folder / DB_FILENAME).touch()
        out = cli("admin", "migrate", "--data-dir", str(folder), "--to", url)
        assert out.returncode != 0 and words in out.stderr, out.stderr
        assert out.stderr.count("\n") == 1 and "pw77" not in out.stderr + out.stdout, out.stderr
