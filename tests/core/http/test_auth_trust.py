"""Login throttling and refresh tokens under concurrency, and lockout that a shared address cannot cause."""

from __future__ import annotations

import asyncio
from collections import Counter

from devkit.cores import RunningCore
from servermanager.core.auth import LoginThrottle
from servermanager.core.datadir import initial_admin_password


async def _login(server: RunningCore, password: str, **extra: str) -> tuple[int, dict[str, object]]:
    status, body = await server.request(
        "POST", "/api/v1/auth/login", json={"username": "admin", "password": password, **extra}
    )
    return status, body


async def test_concurrent_guesses_are_throttled_before_they_are_checked(core_server: RunningCore) -> None:
    password = initial_admin_password(core_server.data_dir)
    guesses = [f"wrong-{i}" for i in range(99)] + [password]
    results = await asyncio.gather(*(_login(core_server, g) for g in guesses))
    statuses = Counter(s for s, _ in results)
    limit = core_server.settings.login_max_failures
    # Only `limit` attempts were evaluated at all; the rest were refused before any password check.
    assert statuses[429] == len(guesses) - limit, statuses
    assert statuses[401] + statuses[200] == limit, statuses
    if statuses[200] == 0:  # the right one came too late: refused like any other guess
        assert results[-1][0] == 429


async def test_failures_from_a_shared_address_do_not_lock_out_a_known_device(
    core_server: RunningCore,
) -> None:
    password = initial_admin_password(core_server.data_dir)
    status, first = await _login(core_server, password)
    assert status == 200 and isinstance(first["device_token"], str)
    device = first["device_token"]
    # Someone else on the same address (same NAT, same proxy) guesses until the address is locked.
    for _ in range(core_server.settings.login_max_failures):
        status, _ = await _login(core_server, "guess")
        assert status == 401
    status, _ = await _login(core_server, password)
    assert status == 429  # without the device token: one more source like the attacker
    status, again = await _login(core_server, password, device_token=device)
    assert status == 200, again
    assert again["device_token"] == device
    # The device's own failures are limited on their own too.
    for _ in range(core_server.settings.login_max_failures):
        status, _ = await _login(core_server, "typo", device_token=device)
        assert status == 401
    status, _ = await _login(core_server, password, device_token=device)
    assert status == 429


async def test_a_device_token_of_another_user_counts_for_nothing(core_server: RunningCore) -> None:
    await core_server.user_token("olga", "operator", password="olga-pass-1")
    status, olga = await core_server.request(
        "POST", "/api/v1/auth/login", json={"username": "olga", "password": "olga-pass-1"}
    )
    assert status == 200
    for _ in range(core_server.settings.login_max_failures):
        status, _ = await _login(core_server, "guess", device_token=olga["device_token"])
        assert status == 401
    status, _ = await _login(core_server, initial_admin_password(core_server.data_dir))
    assert status == 429  # those failures were counted against the address


def test_guesses_spread_over_addresses_hit_the_per_user_limit() -> None:
    t = LoginThrottle(max_failures=2, window=60.0)
    for i in range(10):
        assert t.reserve("admin", f"10.0.0.{i}", None) == 0.0
        assert t.reserve("admin", f"10.0.0.{i}", None) == 0.0
    assert t.reserve("admin", "10.0.0.200", None) > 0  # 20 failures across addresses
    assert t.reserve("admin", "10.0.0.201", "some-device") == 0.0  # a known device still gets in
    t.succeeded("admin", "10.0.0.201", "some-device")
    assert t.reserve("bob", "10.0.0.200", None) == 0.0


async def test_a_refresh_token_works_once_under_any_concurrency(core_server: RunningCore) -> None:
    status, pair = await _login(core_server, initial_admin_password(core_server.data_dir))
    assert status == 200
    results = await asyncio.gather(
        *(
            core_server.request("POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            for _ in range(20)
        )
    )
    ok = [body for s, body in results if s == 200]
    assert len(ok) == 1, Counter(s for s, _ in results)
    # The 19 losers presented a spent token: that is reuse, so the whole session is revoked,
    # including what the winner got.
    status, _ = await core_server.request("GET", "/api/v1/auth/me", ok[0]["access_token"])
    assert status == 401
    status, body = await core_server.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": ok[0]["refresh_token"]}
    )
    assert status == 401, body
    _, audit = await core_server.request(
        "GET", "/api/v1/audit?action=auth.refresh_reuse", await core_server.admin_token()
    )
    assert audit["entries"] and audit["entries"][0]["result"] == "revoked"


async def test_reusing_a_spent_refresh_token_revokes_the_session(core_server: RunningCore) -> None:
    status, pair = await _login(core_server, initial_admin_password(core_server.data_dir))
    assert status == 200
    status, new = await core_server.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert status == 200
    status, _ = await core_server.request("GET", "/api/v1/auth/me", new["access_token"])
    assert status == 200
    # A thief replays the old refresh token: refused, and the rightful holder's session ends too.
    status, body = await core_server.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert status == 401 and "already used" in body["error"]["message"]
    for token in (new["access_token"], pair["access_token"]):
        status, _ = await core_server.request("GET", "/api/v1/auth/me", token)
        assert status == 401
    # Another login's session is untouched.
    other = await core_server.admin_token()
    status, _ = await core_server.request("GET", "/api/v1/auth/me", other)
    assert status == 200


async def test_logout_ends_the_refresh_token_too(core_server: RunningCore) -> None:
    status, pair = await _login(core_server, initial_admin_password(core_server.data_dir))
    assert status == 200
    status, _ = await core_server.request("POST", "/api/v1/auth/logout", pair["access_token"])
    assert status == 204
    status, _ = await core_server.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert status == 401


async def test_logins_are_audited(core_server: RunningCore) -> None:
    await _login(core_server, "nope")
    await _login(core_server, initial_admin_password(core_server.data_dir))
    _, audit = await core_server.request(
        "GET", "/api/v1/audit?action=auth.login", await core_server.admin_token()
    )
    results = [e["result"] for e in audit["entries"]]
    assert "failed" in results and "ok" in results
