"""The live link: batch frames unpacked in order, push over /ws/client, REST polling while it is down, reconnects, latency."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from devkit.cores import RunningCore
from devkit.ports import free_port
from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from servermanager.common.backoff import Backoff
from servermanager.desktop.aio import Aio
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.live import LinkState, LiveLink, ws_url
from servermanager.desktop.net.rest import RestClient, Session
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, enrolled, reconnected, sign_in, until
from tests.helpers.core import metrics


class Ceiling(random.Random):
    """Backoff's jitter drawing its upper bound every time: the longest wait, always."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_ws_url_follows_the_scheme_and_keeps_a_path_prefix() -> None:
    assert ws_url("http://core:8760") == "ws://core:8760" + p.CLIENT_WS_PATH
    assert ws_url("https://example.com/sm/") == "wss://example.com/sm" + p.CLIENT_WS_PATH


# ------------------------------------------------------------------ batches

_dec = p.decoder(p.CoreToClient)


class Observer:
    """A second, bare /ws/client socket: it shows whether the core really sent a batch."""

    def __init__(self, core: RunningCore) -> None:
        self.core = core
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def start(self) -> None:
        assert self.core.http is not None
        self.ws = await self.core.http.ws_connect(self.core.client_ws)
        await self.ws.send_bytes(p.encode(p.Auth(token=await self.core.admin_token())))
        assert isinstance(p.decode(_dec, (await self.ws.receive(timeout=5)).data), p.AuthOk)
        await self.ws.send_bytes(p.encode(p.Subscribe(all=True)))
        assert isinstance(p.decode(_dec, (await self.ws.receive(timeout=5)).data), p.Snapshot)

    async def next_message(self) -> Any:
        assert self.ws is not None
        msg = await self.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        return p.decode(_dec, msg.data)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


def test_samples_inside_a_batch_reach_the_sample_signal(ctx: AppContext, core: RunningCore, run: Run) -> None:
    agent = run(enrolled(core, "web-1", cpu=1.0))
    node_id = agent.node_id
    assert node_id is not None
    run(sign_in(ctx, core))
    observer = Observer(core)
    run(observer.start())
    got: list[tuple[int, mt.Sample]] = []
    ctx.live.sample.connect(lambda nid, sample: got.append((nid, sample)))

    # One agent frame of 40 newer samples: the core queues 40 events for each client in one go,
    # and its pump sends what queued up as a single batch frame.
    # Each newer than the one sent at enrollment (older ones would be backfill, never pushed).
    t0 = time.time()
    samples = []
    for i in range(40):
        agent.seq += 1
        samples.append(mt.Sample(seq=agent.seq, ts=t0 + i * 0.01, metrics=metrics(cpu=float(i + 10))))
    run(agent.send_samples(samples))

    seen = run(observer.next_message())
    assert isinstance(seen, p.Batch) and len(seen.frames) == 40, "the core did not batch this burst"
    run(until(lambda: len(got) >= 40, "40 samples on the signal"))
    assert [nid for nid, _ in got] == [node_id] * 40
    assert [s for _, s in got] == samples  # each once, in the order sent, intact
    # And the app acts on them: the fleet table shows the newest.
    row = ctx.model.row_of(node_id)
    assert row is not None
    cpu = ctx.model.column("cpu_pct")
    run(until(lambda: ctx.model.index(row, cpu).data() == "49%", "the last sample in the table"))
    assert ctx.live.state == LinkState.CONNECTED
    run(observer.close())


# ------------------------------------------------------------------ a peer that misbehaves
#
# The real core never nests batches nor puts a frame it cannot encode inside one, so only a stand-in
# peer can show what the client does with them: drop just the bad frame and keep the rest.


def _event(node_id: int, seq: int, cpu: float) -> bytes:
    return p.encode(
        p.SampleEvent(node_id=node_id, sample=mt.Sample(seq=seq, ts=1000.0 + seq, metrics=metrics(cpu=cpu)))
    )


class FakeCore:
    """Speaks just enough of /ws/client: auth_ok, a snapshot, then the frames it was given."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.port = free_port()
        self.got: list[Any] = []
        app = web.Application()
        app.router.add_get(p.CLIENT_WS_PATH, self._ws)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.3)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        dec = p.decoder(p.ClientToCore)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        auth = p.decode(dec, (await ws.receive()).data)
        assert isinstance(auth, p.Auth)
        await ws.send_bytes(p.encode(p.AuthOk(protocol=p.PROTOCOL_VERSION, user="admin", role="admin")))
        sub = p.decode(dec, (await ws.receive()).data)
        assert isinstance(sub, p.Subscribe) and sub.all
        await ws.send_bytes(p.encode(p.Snapshot(nodes=[])))
        for frame in self.frames:
            await ws.send_str(frame.decode())
        async for msg in ws:  # the client's pings, until it hangs up
            self.got.append(p.decode(dec, msg.data))
        return ws


@pytest.fixture
def link(run: Run) -> Iterator[LiveLink]:
    aio = Aio()
    rest = RestClient(request_timeout=3.0)
    live = LiveLink(rest, aio, backoff=(0.1, 0.5), ping_every=0.3, request_timeout=3.0)
    try:
        yield live
    finally:
        run(live.stop())
        run(rest.close())
        run(aio.close())


def test_client_drops_only_the_bad_frames_of_a_batch(link: LiveLink, run: Run) -> None:
    status = p.encode(p.NodeStatus(node_id=7, online=False, last_seen=5.0))
    batch = p.batch_bytes(
        [
            _event(7, 1, 11.0),
            p.batch_bytes([_event(7, 99, 99.0)]),  # nested: refused
            b'{"type":"no_such_frame"}',  # unknown type: refused
            b'{"type":"sample","node_id":"seven"}',  # wrong field type: refused
            _event(7, 2, 22.0),
            status,
        ]
    )
    fake = FakeCore([batch, _event(7, 3, 33.0)])
    run(fake.start())
    try:
        samples: list[tuple[int, int, float]] = []
        statuses: list[p.NodeStatus] = []
        link.sample.connect(lambda nid, s: samples.append((nid, s.seq, s.metrics.cpu_pct)))
        link.node_status.connect(statuses.append)
        link.rest.session = Session(url=fake.url, access_token="sma_fake", user="admin", role="admin")
        link.start()
        run(until(lambda: len(samples) >= 3, "the three good samples"))
        assert samples == [(7, 1, 11.0), (7, 2, 22.0), (7, 3, 33.0)]
        assert statuses == [p.NodeStatus(node_id=7, online=False, last_seen=5.0)]
        # The bad frames cost nothing else: the link is up and still talking.
        assert link.state == LinkState.CONNECTED
        run(until(lambda: any(isinstance(f, p.Ping) for f in fake.got), "a ping after the batch"))
        run(link.stop())
    finally:
        run(fake.stop())


# ------------------------------------------------------------------ push, polling, reconnects


def _cpu(ctx: AppContext, node_id: int) -> object:
    row = ctx.model.row_of(node_id)
    return None if row is None else ctx.model.index(row, ctx.model.column("cpu_pct")).data()


def test_falls_back_to_polling_and_recovers_to_push(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    core = cores.c
    agent = run(enrolled(core, "web-1", cpu=10.0))
    assert agent.node_id is not None
    ctx.live.set_poll_interval(0.2)  # the settings offer 5 s and up; the test has no time to wait
    run(sign_in(ctx, core))
    states: list[str] = []
    ctx.live.state_changed.connect(lambda state, _detail: states.append(state))

    # The core goes away: socket and REST both fail.
    run(cores.stop())
    run(until(lambda: ctx.live.state == LinkState.OFFLINE, "offline"))
    assert window.link_label.text() == "Offline"
    assert window.tray_state.level.value == "disconnected"

    # It comes back behind something that does not pass WebSockets: REST works, the socket does not.
    cores.block_ws = True
    core = run(cores.start(core.port))
    run(until(lambda: ctx.live.state == LinkState.POLLING, "polling"))
    assert window.link_label.text() == "Polling every 0.2 s"
    assert not window.retry_button.isHidden()
    node_id = agent.node_id
    agent = run(reconnected(core, agent))  # the same node, back on the restarted core
    assert agent.node_id == node_id
    run(agent.send_samples(agent.make(1, cpu=33.0)))
    run(until(lambda: _cpu(ctx, agent.node_id or 0) == "33%", "a sample that arrived by polling"))
    assert ctx.live.state == LinkState.POLLING

    # WebSockets pass again: the next reconnect attempt takes the app back to push.
    cores.block_ws = False
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "back to push"))
    assert window.retry_button.isHidden()
    polls = ctx.live.poll_count
    run(agent.send_samples(agent.make(1, cpu=71.0)))
    run(until(lambda: _cpu(ctx, agent.node_id or 0) == "71%", "a pushed sample"))
    assert ctx.live.poll_count == polls  # no polling once live
    # The states it went through, in order: a new reason for the same state is announced again
    # (the status bar's tooltip), e.g. a second "reconnecting" after a failed attempt.
    path = [state for state, _ in itertools.groupby(states)]
    assert path[:2] == [LinkState.RECONNECTING.value, LinkState.OFFLINE.value]
    assert path[-2:] == [LinkState.POLLING.value, LinkState.CONNECTED.value]


def test_polling_off_means_reconnecting_and_retry_now_skips_the_back_off(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    run(enrolled(cores.c, "web-1"))
    ctx.settings.set("refresh_interval", 0)
    assert ctx.live.poll_interval == 0
    run(sign_in(ctx, cores.c))
    # Left alone, the next attempt would be a minute away (the jitter always draws its ceiling).
    ctx.live.backoff = Backoff(60.0, 60.0, rng=Ceiling())
    cores.block_ws = True
    # Cut the live socket from the core's side: restart the core (same port, same data).
    run(cores.restart())
    run(until(lambda: ctx.live.state == LinkState.RECONNECTING, "reconnecting"))
    assert ctx.live.poll_count == 0
    assert window.link_label.text() == "Reconnecting…"
    assert not window.retry_button.isHidden()
    attempts = ctx.live.backoff.attempt
    window.retry_button.click()  # still blocked: one more failed attempt, and the app stays calm
    run(until(lambda: ctx.live.backoff.attempt > attempts, "a refused attempt"))
    assert ctx.live.state == LinkState.RECONNECTING
    assert "refused the live connection (HTTP 502)" in window.link_label.toolTip()
    cores.block_ws = False
    window.retry_button.click()
    run(until(lambda: ctx.live.state == LinkState.CONNECTED, "reconnected", timeout=5.0))


def test_round_trip_latency_is_shown(window: MainWindow, ctx: AppContext, cores: Cores, run: Run) -> None:
    run(sign_in(ctx, cores.c))
    run(until(lambda: ctx.live.latency_ms is not None, "a pong"))
    assert window.link_label.text().startswith("Live · ")
    assert window.link_label.text().endswith(" ms")
    assert ctx.live.latency_ms is not None and 0 <= ctx.live.latency_ms < 1000
