"""The REST client against a real core: an expired access token is refreshed silently, a dead session asks again; typed calls."""

from __future__ import annotations

import time

import pytest

from devkit.cores import RunningCore
from servermanager.common.rest import History
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.net.rest import RestClient, Session, normalize_url
from servermanager.desktop.secrets import SERVICE
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import (
    MemoryKeyring,
    Run,
    enrolled,
    profile_for,
    sign_in,
    until,
)


def test_expired_session_refreshes_silently_then_asks_again(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run, keyring_backend: MemoryKeyring
) -> None:
    session = run(sign_in(ctx, core))
    run(core.core.users.revoke(session.access_token))
    nodes = run(ctx.rest.nodes())  # 401, refresh, retry: the caller never notices
    assert nodes == []
    renewed = ctx.rest.session
    assert renewed is not None and renewed.access_token != session.access_token
    key = profile_for(core).secret_key
    run(
        until(
            lambda: keyring_backend.items.get((SERVICE, key)) == renewed.refresh_token, "rotated token kept"
        )
    )

    assert renewed.refresh_token is not None
    run(core.core.users.revoke(renewed.access_token))
    run(core.core.users.revoke(renewed.refresh_token))
    with pytest.raises(CoreError) as err:
        run(ctx.rest.nodes())
    assert err.value.kind == "session_expired"
    assert window.connection_dialog is not None
    assert window.connection_dialog.error.text() == "Your session has expired. Please sign in again."
    run(until(lambda: (SERVICE, key) not in keyring_backend.items, "dead token forgotten"))
    assert ctx.live.state == LinkState.IDLE


def test_history_asks_for_points_and_decodes_the_merged_answer(
    ctx: AppContext, core: RunningCore, run: Run, keyring_backend: MemoryKeyring
) -> None:
    agent = run(enrolled(core, "web-1"))
    now = time.time() - 120  # a minute of samples well before the one sent at enrollment
    run(agent.send_samples(agent.make(60, ts=now - 60, cpu=10.0)))
    run(sign_in(ctx, core))
    assert agent.node_id is not None
    every = run(ctx.rest.history(agent.node_id, now - 61, now, "raw", ["cpu_pct"]))
    assert len(every.ts) == 60 and every.step is None and every.min is None
    merged = run(ctx.rest.history(agent.node_id, now - 61, now, "raw", ["cpu_pct"], points=10))
    assert isinstance(merged, History)
    assert 1 <= len(merged.ts) <= 10 and merged.step is not None and merged.step >= 6.0
    assert merged.min is not None and merged.max is not None
    assert merged.min["cpu_pct"] == merged.max["cpu_pct"] == [10.0] * len(merged.ts)
    with pytest.raises(CoreError) as err:
        run(ctx.rest.history(agent.node_id, now - 61, now, "raw", ["cpu_pct"], points=5))
    assert err.value.status == 400 and "points" in err.value.message


def test_calls_need_a_session_and_urls_are_normalized(ctx: AppContext, run: Run) -> None:
    with pytest.raises(CoreError) as err:
        run(ctx.rest.nodes())
    assert err.value.kind == "signed_out"
    # A typed address without a scheme is https, as a core serves beyond loopback by default.
    assert normalize_url(" core.example:8760/ ") == "https://core.example:8760"
    assert normalize_url("127.0.0.1:8760") == "http://127.0.0.1:8760"
    assert normalize_url("localhost:8760") == "http://localhost:8760"
    assert normalize_url("[::1]:8760") == "http://[::1]:8760"
    assert normalize_url("10.0.0.5:8760") == "https://10.0.0.5:8760"
    assert normalize_url("https://core.example/") == "https://core.example"
    session = Session("http://c", "sma_x", "bot", "viewer")
    assert session.is_api_token and not session.can_edit
    assert not Session("http://c", "a", "ann", "operator", refresh_token="r").is_api_token


def test_a_closed_client_opens_no_new_connection_pool(core: RunningCore, run: Run) -> None:
    # A sign-in still waiting on the keyring when its core was closed went on to open a fresh pool
    # that nothing closed (CI saw it as "Unclosed client session" at teardown).
    rest = RestClient(request_timeout=3.0)
    run(rest.request("GET", core.url + "/api/v1/health"))
    run(rest.close())
    with pytest.raises(CoreError) as err:
        run(rest.request("GET", core.url + "/api/v1/health"))
    assert err.value.kind == "closed"
    assert rest._http is None
