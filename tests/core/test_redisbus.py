"""The Redis bus on the machine's real Redis: what its listener costs per message it receives."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from servermanager.core.auth import Role
from servermanager.core.redisbus import RedisBus
from tests.helpers.cluster import REDIS, drop_keys, prefix
from tests.helpers.wait import wait_for, wait_until


async def _subscribers(channel: str) -> int:
    async with aioredis.Redis.from_url(REDIS) as r:
        [(_, n)] = await r.pubsub_numsub(channel)
        return int(n)


@pytest.fixture
async def pfx() -> AsyncIterator[str]:
    name = prefix()
    yield name
    await drop_keys(name)


@pytest.mark.parametrize("query", ["", "?protocol=2", "?protocol=3"])
async def test_a_received_message_is_not_turned_into_a_debug_string(
    pfx: str, query: str, caplog: pytest.LogCaptureFixture
) -> None:
    # redis-py 8.1's own pub/sub handler builds "Push response: " + str(message) on every message,
    # at any log level; a repr of every batch of events was a third of the bus's CPU. With DEBUG on
    # for its logger, that string shows up as a record: the bus's handler must not make one. RESP2
    # (a URL's ?protocol=2) has no push messages, and so no handler to pass: the events still cross.
    caplog.set_level(logging.DEBUG, logger="push_response")
    a, b = RedisBus(REDIS + query, pfx, "a"), RedisBus(REDIS + query, pfx, "b")
    seen: list[tuple[str, int | None, bytes]] = []
    b.on_remote = lambda origin, node_id, data: seen.append((origin, node_id, data))
    for bus in (a, b):
        await bus.start()
    try:
        await wait_until(lambda: _subscribers(a.channel), lambda n: n == 2, what="both buses to subscribe")
        for i in range(20):
            a.forward(i, b"event-%d" % i, Role.VIEWER)
        await wait_for(lambda: len(seen) == 20, what="b to receive a's 20 events")
        assert seen == [("a", i, b"event-%d" % i) for i in range(20)]
        pushed = [r.getMessage() for r in caplog.records if r.name == "push_response"]
        assert pushed == []
    finally:
        for bus in (a, b):
            await bus.stop()
