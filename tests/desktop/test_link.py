"""The live link: push over /ws/client, REST polling while it is down, reconnects, latency."""

from __future__ import annotations

from servermanager.desktop.client import LinkState
from servermanager.desktop.context import AppContext
from servermanager.desktop.fleet import Col
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, enrolled, reconnected, sign_in, until


def _cpu(ctx: AppContext, node_id: int) -> object:
    row = ctx.model.row_of(node_id)
    return None if row is None else ctx.model.index(row, Col.CPU).data()


def test_falls_back_to_polling_and_recovers_to_push(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    core = cores.c
    agent = run(enrolled(core, "web-1", cpu=10.0))
    assert agent.node_id is not None
    ctx.client.set_poll_interval(0.2)  # the settings offer 5 s and up; the test has no time to wait
    run(sign_in(ctx, core))
    states: list[str] = []
    ctx.client.state_changed.connect(lambda state, _detail: states.append(state))

    # The core goes away: socket and REST both fail.
    run(cores.stop())
    run(until(lambda: ctx.client.state == LinkState.OFFLINE, "offline"))
    assert window.link_label.text() == "Offline"
    assert window.tray_state.level.value == "disconnected"

    # It comes back behind something that does not pass WebSockets: REST works, the socket does not.
    cores.block_ws = True
    core = run(cores.start(core.port))
    run(until(lambda: ctx.client.state == LinkState.POLLING, "polling"))
    assert window.link_label.text() == "Polling every 0.2 s"
    assert not window.retry_button.isHidden()
    node_id = agent.node_id
    agent = run(reconnected(core, agent))  # the same node, back on the restarted core
    assert agent.node_id == node_id
    run(agent.send_samples(agent.make(1, cpu=33.0)))
    run(until(lambda: _cpu(ctx, agent.node_id or 0) == "33%", "a sample that arrived by polling"))
    assert ctx.client.state == LinkState.POLLING

    # WebSockets pass again: the next reconnect attempt takes the app back to push.
    cores.block_ws = False
    run(until(lambda: ctx.client.state == LinkState.CONNECTED, "back to push"))
    assert window.retry_button.isHidden()
    polls = ctx.client.poll_count
    run(agent.send_samples(agent.make(1, cpu=71.0)))
    run(until(lambda: _cpu(ctx, agent.node_id or 0) == "71%", "a pushed sample"))
    assert ctx.client.poll_count == polls  # no polling once live
    assert states[:2] == [LinkState.RECONNECTING.value, LinkState.OFFLINE.value]
    assert states[-2:] == [LinkState.POLLING.value, LinkState.CONNECTED.value]


def test_polling_off_means_reconnecting_and_retry_now_skips_the_back_off(
    window: MainWindow, ctx: AppContext, cores: Cores, run: Run
) -> None:
    run(enrolled(cores.c, "web-1"))
    ctx.settings.set("refresh_interval", 0)
    assert ctx.client.poll_interval == 0
    run(sign_in(ctx, cores.c))
    ctx.client.backoff = (60.0, 60.0)  # left alone, the next attempt would be a minute away
    cores.block_ws = True
    # Cut the live socket from the core's side: restart the core (same port, same data).
    run(cores.restart())
    run(until(lambda: ctx.client.state == LinkState.RECONNECTING, "reconnecting"))
    assert ctx.client.poll_count == 0
    assert window.link_label.text() == "Reconnecting…"
    assert not window.retry_button.isHidden()
    attempts = ctx.client._attempt
    window.retry_button.click()  # still blocked: one more failed attempt, and the app stays calm
    run(until(lambda: ctx.client._attempt > attempts, "a refused attempt"))
    assert ctx.client.state == LinkState.RECONNECTING
    assert "refused the live connection (HTTP 502)" in window.link_label.toolTip()
    cores.block_ws = False
    window.retry_button.click()
    run(until(lambda: ctx.client.state == LinkState.CONNECTED, "reconnected", timeout=5.0))


def test_round_trip_latency_is_shown(window: MainWindow, ctx: AppContext, cores: Cores, run: Run) -> None:
    run(sign_in(ctx, cores.c))
    run(until(lambda: ctx.client.latency_ms is not None, "a pong"))
    assert window.link_label.text().startswith("Live · ")
    assert window.link_label.text().endswith(" ms")
    assert ctx.client.latency_ms is not None and 0 <= ctx.client.latency_ms < 1000
