"""One core on SQLite against one core on PostgreSQL, same simulated fleets and history, in one run.

    .venv/bin/python -m benchmarks.postgresql --counts 500,1000 --duration 30
    .venv/bin/python -m benchmarks.postgresql --pg postgresql://postgres@127.0.0.1:5432

For each fleet size, the load part (benchmarks/parts/load.py: simulated agents at 1 Hz in processes of
their own, a client subscribed to every node) runs against a core on SQLite, then against a core on a
fresh PostgreSQL database: push p99, the core's CPU and RSS, samples written per second. Then history:
days of 1-minute rollups written into a SQLite file (benchmarks/parts/history.py), copied into a fresh
PostgreSQL database with `admin migrate`'s copier, and the same REST history queries timed against a
core on each with the history cache off (every answer built by the database). PostgreSQL's own CPU and
RSS are the server's backends for this database, measured apart. Results go to
benchmarks/results/postgresql.json and a Markdown table is printed; figures are ratios PostgreSQL/SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from benchmarks.harness import RESULTS, CoreProc, log
from benchmarks.parts.history import _history_queries, build_history_db
from benchmarks.parts.load import LoadOptions, add_profile_argument, bench_load

# This checkout's core (the processes start in it), not whatever `servermanager` the venv holds.
THIS = [sys.executable, "-m", "servermanager"]


async def _admin(server: str, sql: str) -> None:
    con = await asyncpg.connect(f"{server}/postgres", timeout=5)
    try:
        await con.execute(sql)
    finally:
        await con.close()


@contextlib.asynccontextmanager
async def _fresh(server: str) -> Any:
    name = f"sm_bench_{secrets.token_hex(4)}"
    await _admin(server, f"CREATE DATABASE {name}")
    try:
        yield f"{server}/{name}", name
    finally:
        await _admin(server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class PgBackends:
    """CPU and memory (USS) of the PostgreSQL backends serving one database, sampled every second:
    each backend's CPU from its first sample to its last (backends end with the core)."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.t0 = self.t1 = 0.0
        self.uss_max = 0.0

    def _procs(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if cmd.startswith("postgres:") and f" {self.dbname} " in f"{cmd} ":
                out.append(p)
        return out

    def sample(self) -> None:
        now = time.monotonic()
        self.t0 = self.t0 or now
        self.t1 = now
        uss = 0.0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                self.first.setdefault(p.pid, t.user + t.system)
                self.last[p.pid] = t.user + t.system
                uss += p.memory_full_info().uss
        self.uss_max = max(self.uss_max, uss / (1 << 20))

    def end(self) -> dict[str, float]:
        used = sum(self.last[pid] - self.first[pid] for pid in self.last)
        window = max(self.t1 - self.t0, 1e-9)
        return {"cpu_pct": round(100 * used / window, 1), "uss_mb_max": round(self.uss_max, 1)}

    @contextlib.asynccontextmanager
    async def sampling(self, warmup: float) -> AsyncIterator[None]:
        """Samples every second from `warmup` on (the backends appear once the core connects, and
        the window is most of the run) until the block ends."""

        async def sampler() -> None:
            await asyncio.sleep(warmup)
            while True:
                self.sample()
                await asyncio.sleep(1.0)

        task = asyncio.create_task(sampler())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _load(opts: LoadOptions, count: int, base: Path, server: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log(f"load {count}: SQLite")
    out["sqlite"] = await bench_load(opts, count, _sub(base, f"sqlite-{count}"), core_cmd=THIS)
    async with _fresh(server) as (url, name):
        log(f"load {count}: PostgreSQL ({name})")
        watch = PgBackends(name)
        async with watch.sampling(opts.warmup):
            out["postgresql"] = await bench_load(
                opts, count, _sub(base, f"pg-{count}"), {"SM_CORE_DATABASE": url}, THIS
            )
        out["postgresql_server"] = watch.end()
        con = await asyncpg.connect(url)
        try:
            out["postgresql"]["nodes_created"] = await con.fetchval("SELECT count(*) FROM nodes")
        finally:
            await con.close()
    return out


async def _history(base: Path, server: str, days: int, reps: int) -> dict[str, Any]:
    from servermanager.core.store.pg import PgDatabase
    from servermanager.core.store.transfer import copy_sqlite_to_pg

    data = _sub(base, "history") / "core"
    node_id, start, end = build_history_db(data / "servermanager.db", days)
    frm, to = start / 1000, end / 1000
    variants = {
        "1m_cpu_pct": f"resolution=1m&from={frm}&to={to}&fields=cpu_pct",
        "1m_all_fields": f"resolution=1m&from={frm}&to={to}",
        "1m_all_fields_2000_points": f"resolution=1m&from={frm}&to={to}&points=2000",
        "raw_last_hour": f"resolution=raw&from={to - 3600}&to={to}",
    }
    out: dict[str, Any] = {"days": days, "rows_1m": days * 1440}
    env = {"SM_CORE_HISTORY_CACHE_MB": "0"}
    async with CoreProc(base / "history", data, env, THIS) as core:
        out["sqlite"] = await _history_queries(core, node_id, variants, reps)
    async with _fresh(server) as (url, _):
        db = PgDatabase(url, readers=1)
        await db.open()
        try:
            t = time.monotonic()
            await copy_sqlite_to_pg(data / "servermanager.db", db, say=lambda _: None)
            out["copy_seconds"] = round(time.monotonic() - t, 1)
        finally:
            await db.close()
        # A data dir of its own for the certificate and lock; the admin is the copied one.
        pg_data = _sub(base, "history-pg") / "core"
        pg_data.mkdir(mode=0o700)
        (pg_data / "initial-admin-password").write_text((data / "initial-admin-password").read_text())
        async with CoreProc(pg_data.parent, pg_data, {**env, "SM_CORE_DATABASE": url}, THIS) as core:
            out["postgresql"] = await _history_queries(core, node_id, variants, reps)
    return out


def _sub(base: Path, name: str) -> Path:
    d = base / name
    d.mkdir(mode=0o700)
    return d


def _ratio(a: float | None, b: float | None) -> str:
    return f"{b / a:.2f}x" if a and b is not None else "n/a"


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "| agents | backend | push p99 ms | core CPU % | core RSS MB | PostgreSQL CPU % | samples written/s | sent/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for count, r in res["load"].items():
        for key in ("sqlite", "postgresql"):
            x = r[key]
            pg = r["postgresql_server"]["cpu_pct"] if key == "postgresql" else "-"
            lines.append(
                f"| {count} | {key} | {x['push']['latency_ms']['p99']} | {x['core']['cpu_pct']} | "
                f"{x['core']['rss_mb_max']} | {pg} | {x['core']['samples_written_per_s']} | "
                f"{x['simulator']['achieved_send_rate']} |"
            )
    h = res.get("history")
    if h:
        lines += ["", f"History, {h['days']} day(s) of 1m rollups, cache off (p50 ms):", ""]
        lines += ["| query | SQLite | PostgreSQL | PostgreSQL/SQLite |", "|---|---|---|---|"]
        for q, a in h["sqlite"].items():
            b = h["postgresql"][q]
            lines.append(f"| {q} | {a['p50']} | {b['p50']} | {_ratio(a['p50'], b['p50'])} |")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(args.workdir)
    opts = LoadOptions(
        interval=args.interval,
        per_process=args.per_process,
        warmup=args.warmup,
        duration=args.duration,
        start_timeout=180.0,
        connect_timeout=10.0,
        ping_interval=0.0,
        profile=args.profile,
    )
    res: dict[str, Any] = {"load": {}, "cpus": psutil.cpu_count()}
    for count in [int(c) for c in args.counts.split(",") if c]:
        res["load"][count] = await _load(opts, count, base, args.pg)
    if args.history_days:
        res["history"] = await _history(base, args.pg, args.history_days, args.history_reps)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.postgresql", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--pg", default="postgresql://postgres@127.0.0.1:5432", help="the PostgreSQL server (no database)"
    )
    ap.add_argument("--counts", default="500,1000", help="simulated agent counts")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--per-process", type=int, default=2500)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--history-days", type=int, default=7, help="0: no history part")
    ap.add_argument("--history-reps", type=int, default=10)
    ap.add_argument("--workdir", default="/tmp/sm-bench-postgresql")
    add_profile_argument(ap)
    ap.add_argument("--out", default=str(RESULTS / "postgresql.json"))
    args = ap.parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    args.workdir = tempfile.mkdtemp(prefix="run-", dir=args.workdir)
    res = asyncio.run(run(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2, default=str))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
