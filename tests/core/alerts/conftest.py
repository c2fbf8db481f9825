"""Shared fixtures of the alerting tests: a real core whose deliveries retry in tenths of a second, and a real receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devkit.cores import RunningCore
from tests.core.alerts.helpers import QUICK
from tests.helpers.receiver import Receiver


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[RunningCore]:
    server = await RunningCore(tmp_path / "core", **QUICK).start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()
