"""Shared fixtures: a real core on loopback with a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.core import RunningCore


@pytest.fixture
async def core_server(tmp_path: Path) -> AsyncIterator[RunningCore]:
    server = await RunningCore(tmp_path / "core").start()
    try:
        yield server
    finally:
        await server.stop()
