"""Several real cores on the machine's Redis, each test under a key prefix of its own."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from devkit.cores import RunningCore
from servermanager.core.datadir import LOCK_FILE
from tests.helpers.core import RawAgent

REDIS = "redis://127.0.0.1:6379/0"


def prefix() -> str:
    return f"smtest-{uuid.uuid4().hex[:12]}"


async def drop_keys(pfx: str) -> None:
    """Whatever a test's cores left in Redis under its prefix."""
    r = aioredis.Redis.from_url(REDIS)
    try:
        keys = [k async for k in r.scan_iter(match=f"{pfx}:*", count=1000)]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


async def seeded(tmp: Path, names: list[str]) -> list[RawAgent]:
    """A data dir with `names` enrolled (credentials in the returned agents, not connected), made
    by a core of its own that is then stopped: each core of a test cluster starts from a copy of it,
    which stands in for a database they would share (start_shared_cores: one they do share)."""
    seed = await RunningCore(tmp / "seed").start()
    agents = []
    try:
        for name in names:
            agent = RawAgent(seed, name)
            await agent.hello(token=await seed.enroll_token())
            await agent.close()
            agents.append(agent)
        await seed.admin_token()  # so the admin must-change flag is the same everywhere
    finally:
        await seed.stop()
    return agents


def copy_data_dir(tmp: Path, name: str) -> Path:
    target = tmp / name
    shutil.copytree(tmp / "seed", target, ignore=shutil.ignore_patterns(LOCK_FILE))
    return target


async def start_cores(
    tmp: Path, pfx: str, n: int, buses: list[str] | None = None, **settings: Any
) -> list[RunningCore]:
    """`n` cores on copies of the seeded data dir; `buses[i]`: core i's Redis URL (a proxy's, say)."""
    cores = []
    for i in range(n):
        core = RunningCore(
            copy_data_dir(tmp, f"core{i}"),
            bus=buses[i] if buses else REDIS,
            bus_prefix=pfx,
            bus_ttl=2.0,
            core_id=f"core{i}",
            **settings,
        )
        cores.append(await core.start())
    return cores


async def start_shared_cores(
    tmp: Path, pfx: str, n: int, database: str, **settings: Any
) -> list[RunningCore]:
    """`n` cores on ONE PostgreSQL database and one Redis prefix, as a real cluster runs; started one
    after the other (the first makes the schema)."""
    cores = []
    for i in range(n):
        core = RunningCore(
            tmp / f"core{i}",
            database=database,
            bus=REDIS,
            bus_prefix=pfx,
            bus_ttl=2.0,
            core_id=f"core{i}",
            **settings,
        )
        cores.append(await core.start())
    return cores
