"""A fresh PostgreSQL database per test on the machine's server, dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

import asyncpg

# The server the tests use: the development and CI machines run one on loopback (.ci/run starts it).
SERVER = os.environ.get("SM_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432")


async def create_database() -> str:
    """A new empty database of its own (sm_test_<random>), so runs never meet; returns its URL."""
    name = f"sm_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(f"{SERVER}/postgres", timeout=5)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return f"{SERVER}/{name}"


async def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(f"{SERVER}/postgres", timeout=5)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """The URL of a new empty database, dropped after the block."""
    url = await create_database()
    try:
        yield url
    finally:
        await drop_database(url)
