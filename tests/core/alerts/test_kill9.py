"""A core killed (kill -9) between an alert's transition and its notification: a real core process,
a real agent process, a real webhook receiver on loopback that is down or slow at first."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from devkit.ports import free_port
from servermanager.core.datadir import DB_FILENAME
from tests.helpers.procs import AgentProcess, CoreProcess
from tests.helpers.receiver import Receiver
from tests.helpers.wait import wait_for, wait_until

pytestmark = pytest.mark.slow

T = TypeVar("T")

# Retries in tenths of a second; the group wait keeps a fresh row pending for a few seconds, long
# enough to kill the core before the dispatcher picks it up even on a loaded machine.
GROUP_WAIT = 4.0
ENV = {
    "SM_CORE_ALERT_GROUP_WAIT": str(GROUP_WAIT),
    "SM_CORE_ALERT_RETRY_INITIAL": "0.05",
    "SM_CORE_ALERT_RETRY_MAX": "0.2",
    "SM_CORE_ALERT_DELIVERY_TIMEOUT": "5",
}


def read(core: CoreProcess, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The core's database as another process sees it, read-only (also while the core is dead)."""
    con = sqlite3.connect(f"file:{core.data_dir / DB_FILENAME}?mode=ro", uri=True)
    try:
        return [tuple(r) for r in con.execute(sql, params)]
    finally:
        con.close()


_DELIVERY_COLS = ("id", "alert_id", "status", "state", "attempts", "sent_at", "last_error")


def deliveries(core: CoreProcess) -> list[dict[str, Any]]:
    rows = read(core, f"SELECT {', '.join(_DELIVERY_COLS)} FROM alert_deliveries ORDER BY id")
    return [dict(zip(_DELIVERY_COLS, r, strict=True)) for r in rows]


def alerts(core: CoreProcess) -> list[tuple[int, str]]:
    return [(r[0], r[1]) for r in read(core, "SELECT id, state FROM alerts ORDER BY id")]


def samples_since(core: CoreProcess, ts: float) -> int:
    [(n,)] = read(
        core,
        "SELECT (SELECT count(*) FROM samples_head WHERE ts >= ?) + (SELECT count(*) FROM samples_raw WHERE ts >= ?)",
        (int(ts * 1000), int(ts * 1000)),
    )
    return int(n)


async def poll(
    fn: Callable[[], T], ok: Callable[[T], bool], timeout: float = 30.0, what: str = "condition"
) -> T:
    """wait_until over a blocking probe (the database file, the core's REST API) run in a thread."""
    return await wait_until(lambda: asyncio.to_thread(fn), ok, timeout=timeout, what=what)


class Setup:
    """A core process with a webhook channel to `port`, a rule that fires on any real host, and an agent."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()  # the receiver's; nothing listens there yet
        self.core = CoreProcess(tmp_path / "core", **ENV)
        self.agent: AgentProcess | None = None
        self.tmp_path = tmp_path

    async def start(self) -> Setup:
        await asyncio.to_thread(self.core.start)
        token = await asyncio.to_thread(self.core.admin_token)
        status, ch = await asyncio.to_thread(
            self.core.api,
            "POST",
            "/api/v1/channels",
            token,
            {"name": "hook", "kind": "webhook", "url": f"http://127.0.0.1:{self.port}/hook"},
        )
        assert status == 201, ch
        # A real host always has processes: the rule fires on the agent's first sample.
        rule = {"name": "procs", "metric": "procs", "op": ">", "threshold": 0, "targets": {"all": True}}
        status, body = await asyncio.to_thread(
            self.core.api, "POST", "/api/v1/alert-rules", token, {**rule, "channels": [ch["id"]]}
        )
        assert status == 201, body
        status, enroll = await asyncio.to_thread(
            self.core.api, "POST", "/api/v1/enroll-tokens", token, {"uses": 1, "ttl": 600}
        )
        assert status == 201, enroll
        self.agent = AgentProcess(self.core.url, self.tmp_path / "agent", enroll["token"]).start()
        return self

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        self.core.stop()

    async def kill_with_the_row_unsent(self) -> dict[str, Any]:
        """Wait for the firing notification's row, committed with the transition, then kill -9 the core."""
        [row] = await poll(
            lambda: deliveries(self.core),
            lambda rows: len(rows) == 1 and rows[0]["state"] == "pending",
            what="the firing row committed, pending",
        )
        assert row["status"] == "firing"
        assert alerts(self.core) == [(row["alert_id"], "firing")]
        await asyncio.to_thread(self.core.kill9)
        return dict(row)

    async def restart(self) -> float:
        assert self.core.proc is not None and self.core.proc.returncode == -9
        restarted = time.time()
        await asyncio.to_thread(self.core.start)
        return restarted

    async def settled(self, alert_id: int, restarted: float) -> None:
        """The agent streams to the new core again and its samples were evaluated: whatever they
        would change of the alert (a second firing, a new alert) is committed by now."""
        await poll(
            lambda: samples_since(self.core, restarted), lambda n: n >= 3, what="samples after restart"
        )
        token = await asyncio.to_thread(self.core.admin_token)
        # The API commits the engine's pending writes before it answers.
        status, body = await asyncio.to_thread(self.core.api, "GET", "/api/v1/alerts", token)
        assert status == 200, body
        assert [(a["id"], a["state"]) for a in body["alerts"]] == [(alert_id, "firing")]
        status, detail = await asyncio.to_thread(self.core.api, "GET", f"/api/v1/alerts/{alert_id}", token)
        assert status == 200, detail
        assert [t["state"] for t in detail["transitions"]] == ["pending", "firing"]
        assert [(d["status"], d["state"]) for d in detail["deliveries"]] == [("firing", "sent")]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    s = Setup(tmp_path)
    try:
        yield await s.start()
    finally:
        await asyncio.to_thread(s.stop)


def _posts(receiver: Receiver) -> list[tuple[str, list[int], str]]:
    """(status, alert ids, X-ServerManager-Deliveries) of every POST the receiver answered."""
    return [
        (g.json()["status"], [a["id"] for a in g.json()["alerts"]], g.headers["X-ServerManager-Deliveries"])
        for g in receiver.got
    ]


async def test_killed_before_the_send_it_is_delivered_once_after_the_restart(setup: Setup) -> None:
    row = await setup.kill_with_the_row_unsent()
    # What the dead core left on disk: the row committed, never sent (nothing listens on the port).
    [after_kill] = deliveries(setup.core)
    assert after_kill["id"] == row["id"]
    assert after_kill["state"] in ("pending", "retrying") and after_kill["sent_at"] is None

    restarted = await setup.restart()
    # The receiver is still down: the restarted core tries, fails, and keeps the row.
    failed = await poll(
        lambda: deliveries(setup.core),
        lambda rows: rows[0]["state"] == "retrying" and "could not connect" in (rows[0]["last_error"] or ""),
        what="a failed attempt after the restart",
    )
    assert len(failed) == 1
    receiver = await Receiver(port=setup.port).start()
    try:
        [sent] = await poll(
            lambda: deliveries(setup.core), lambda rows: rows[0]["state"] == "sent", what="the row sent"
        )
        assert sent["id"] == row["id"] and sent["attempts"] >= 2
        await setup.settled(row["alert_id"], restarted)
        # A clean stop waits for any send in flight: nothing can arrive after it.
        assert await asyncio.to_thread(setup.core.terminate) == 0
        assert _posts(receiver) == [("firing", [row["alert_id"]], str(row["id"]))]
        assert deliveries(setup.core) == [sent]
        assert alerts(setup.core) == [(row["alert_id"], "firing")]
    finally:
        await receiver.stop()
    assert "Traceback" not in setup.core.log()


async def test_killed_during_the_send_the_repeat_carries_the_same_delivery_id(setup: Setup) -> None:
    """Delivery is at least once: killed after the receiver took the POST but before the row was
    marked, the next core sends it again, with the same X-ServerManager-Deliveries for the receiver
    to drop it by; the row is then sent, and nothing else goes out."""
    receiver = Receiver(port=setup.port)
    receiver.gate = asyncio.Event()  # a slow receiver: takes the POST, holds its answer
    await receiver.start()
    try:
        [row] = await poll(
            lambda: deliveries(setup.core), lambda rows: len(rows) == 1, what="the firing row committed"
        )
        await wait_for(lambda: receiver.arrived == 1, timeout=30, what="the POST in flight")
        await asyncio.to_thread(setup.core.kill9)
        [in_flight] = deliveries(setup.core)
        assert (in_flight["state"], in_flight["attempts"], in_flight["sent_at"]) == ("pending", 0, None)
        receiver.gate.set()  # the first POST's answer goes nowhere
        await wait_for(lambda: len(receiver.got) == 1, what="the first POST")

        restarted = await setup.restart()
        [sent] = await poll(
            lambda: deliveries(setup.core), lambda rows: rows[0]["state"] == "sent", what="the row sent"
        )
        assert sent["id"] == row["id"] and sent["attempts"] == 1
        await setup.settled(row["alert_id"], restarted)
        assert await asyncio.to_thread(setup.core.terminate) == 0
        assert _posts(receiver) == [("firing", [row["alert_id"]], str(row["id"]))] * 2
    finally:
        await receiver.stop()
    assert "Traceback" not in setup.core.log()
