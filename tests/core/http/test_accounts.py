"""The account lifecycle over REST on a real core: passwords, roles, disabling, tokens, two-factor and step-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyotp

from devkit.cores import RunningCore
from servermanager.common import protocol as p
from servermanager.core.datadir import initial_admin_password
from tests.helpers.core import RawAgent, RawClient


async def _login(server: RunningCore, name: str, password: str, **extra: Any) -> tuple[int, Any]:
    return await server.request(
        "POST", "/api/v1/auth/login", json={"username": name, "password": password, **extra}
    )


async def _user_id(server: RunningCore, name: str) -> int:
    _, body = await server.request("GET", "/api/v1/users", await server.admin_token())
    return next(u["id"] for u in body["users"] if u["name"] == name)


async def test_the_generated_admin_password_must_be_changed(core_server: RunningCore) -> None:
    password = initial_admin_password(core_server.data_dir)
    status, pair = await _login(core_server, "admin", password)
    assert status == 200 and pair["must_change_password"] is True
    other = await core_server.admin_token()
    status, _ = await core_server.request(
        "POST",
        "/api/v1/auth/password",
        pair["access_token"],
        json={"current_password": password, "new_password": "a-better-one-1"},
    )
    assert status == 204
    status, me = await core_server.request("GET", "/api/v1/auth/me", pair["access_token"])
    assert status == 200 and me["must_change_password"] is False  # this session goes on
    status, _ = await core_server.request("GET", "/api/v1/auth/me", other)
    assert status == 401  # every other session of the user ended
    assert (await _login(core_server, "admin", password))[0] == 401
    assert (await _login(core_server, "admin", "a-better-one-1"))[0] == 200


async def test_a_wrong_current_password_changes_nothing(core_server: RunningCore) -> None:
    token = await core_server.user_token("olga", "viewer", password="olga-pass-1")
    status, body = await core_server.request(
        "POST",
        "/api/v1/auth/password",
        token,
        json={"current_password": "nope", "new_password": "whatever-1"},
    )
    assert status == 403 and body["error"]["code"] == "bad_credentials"
    assert (await _login(core_server, "olga", "olga-pass-1"))[0] == 200


async def test_disabling_a_user_ends_their_sockets_and_sign_ins(core_server: RunningCore) -> None:
    token = await core_server.user_token("ops", "operator")
    client = RawClient(core_server)
    await client.connect(token)
    await client.subscribe()
    admin = await core_server.admin_token()
    uid = await _user_id(core_server, "ops")
    status, user = await core_server.request("PATCH", f"/api/v1/users/{uid}", admin, json={"disabled": True})
    assert status == 200 and user["disabled"] is True
    closed = await _wait_closed(client)
    assert closed == p.CloseCode.UNAUTHORIZED
    assert (await core_server.request("GET", "/api/v1/auth/me", token))[0] == 401
    assert (await _login(core_server, "ops", "password123"))[0] == 401
    status, _ = await core_server.request("PATCH", f"/api/v1/users/{uid}", admin, json={"disabled": False})
    assert (await _login(core_server, "ops", "password123"))[0] == 200
    _, audit = await core_server.request("GET", "/api/v1/audit?action=user.update", admin)
    assert len(audit["entries"]) == 2


async def _wait_closed(client: RawClient) -> int:
    while True:
        frame = await client.recv(timeout=5)
        if not isinstance(frame, p.Frame):
            return int(frame.data)


async def test_the_last_admin_cannot_be_demoted_disabled_or_deleted(core_server: RunningCore) -> None:
    admin = await core_server.admin_token()
    uid = await _user_id(core_server, "admin")
    for method, body in (("PATCH", {"role": "viewer"}), ("PATCH", {"disabled": True}), ("DELETE", None)):
        status, err = await core_server.request(method, f"/api/v1/users/{uid}", admin, json=body)
        assert status == 409 and err["error"]["code"] == "last_admin", (method, body, err)
    await core_server.user_token("second", "admin")
    status, _ = await core_server.request("PATCH", f"/api/v1/users/{uid}", admin, json={"role": "operator"})
    assert status == 200


async def test_a_reset_password_must_be_changed_and_signs_the_user_out(core_server: RunningCore) -> None:
    token = await core_server.user_token("olga", "operator", password="olga-pass-1")
    uid = await _user_id(core_server, "olga")
    status, _ = await core_server.request(
        "POST",
        f"/api/v1/users/{uid}/password",
        await core_server.admin_token(),
        json={"new_password": "temp-pass-9"},
    )
    assert status == 204
    assert (await core_server.request("GET", "/api/v1/auth/me", token))[0] == 401
    status, pair = await _login(core_server, "olga", "temp-pass-9")
    assert status == 200 and pair["must_change_password"] is True


async def test_deleting_a_user(core_server: RunningCore) -> None:
    token = await core_server.user_token("gone", "viewer")
    uid = await _user_id(core_server, "gone")
    admin = await core_server.admin_token()
    assert (await core_server.request("DELETE", f"/api/v1/users/{uid}", admin))[0] == 204
    assert (await core_server.request("GET", "/api/v1/auth/me", token))[0] == 401
    assert (await core_server.request("GET", f"/api/v1/users/{uid}", admin))[0] == 404


async def test_tokens_are_listed_without_secrets_and_revoked_by_id(core_server: RunningCore) -> None:
    viewer = await core_server.user_token("olga", "viewer", password="olga-pass-1")
    status, api = await core_server.request("POST", "/api/v1/tokens", viewer, json={"name": "script"})
    assert status == 201
    status, listed = await core_server.request("GET", "/api/v1/auth/tokens", viewer)
    assert status == 200
    kinds = sorted(t["kind"] for t in listed["tokens"])
    assert kinds == ["access", "api", "refresh"]
    assert viewer not in str(listed) and api["token"] not in str(listed)
    assert [t["current"] for t in listed["tokens"] if t["kind"] == "access"] == [True]
    script = next(t for t in listed["tokens"] if t["kind"] == "api")
    assert (await core_server.request("DELETE", f"/api/v1/auth/tokens/{script['id']}", viewer))[0] == 204
    assert (await core_server.request("GET", "/api/v1/auth/me", api["token"]))[0] == 401
    # A viewer cannot list or revoke anyone else's.
    status, _ = await core_server.request("GET", "/api/v1/auth/tokens?user=admin", viewer)
    assert status == 403
    _, mine = await core_server.request("GET", "/api/v1/auth/tokens", await core_server.admin_token())
    admin_access = next(t for t in mine["tokens"] if t["kind"] == "access")
    status, _ = await core_server.request("DELETE", f"/api/v1/auth/tokens/{admin_access['id']}", viewer)
    assert status == 404
    assert (await core_server.request("DELETE", "/api/v1/auth/tokens/NOT-AN-ID", viewer))[0] == 400


async def test_enrollment_tokens_are_listed_and_revoked(core_server: RunningCore) -> None:
    token = await core_server.enroll_token(uses=3)
    admin = await core_server.admin_token()
    status, listed = await core_server.request("GET", "/api/v1/enroll-tokens", admin)
    assert status == 200 and [t["uses_left"] for t in listed["tokens"]] == [3]
    assert token not in str(listed)
    tid = listed["tokens"][0]["id"]
    assert (await core_server.request("DELETE", f"/api/v1/enroll-tokens/{tid}", admin))[0] == 204
    agent = RawAgent(core_server)
    assert agent.core.http is not None
    ws = await agent.connect()
    await ws.send_bytes(p.encode(p.Hello(protocol=p.PROTOCOL_VERSION, host=_host(), enroll_token=token)))
    msg = await ws.receive(timeout=5)
    assert ws.close_code == p.CloseCode.UNAUTHORIZED, msg


def _host() -> Any:
    from tests.helpers.core import host_facts

    return host_facts()


async def test_two_factor_sign_in_with_codes_that_work_once(core_server: RunningCore) -> None:
    token = await core_server.user_token("olga", "operator", password="olga-pass-1")
    status, setup = await core_server.request("POST", "/api/v1/auth/totp/setup", token)
    assert status == 200 and setup["uri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(setup["secret"])
    status, err = await core_server.request(
        "POST", "/api/v1/auth/totp/enable", token, json={"code": "000000"}
    )
    assert status == 400 and err["error"]["code"] == "bad_code"
    code = totp.now()
    status, codes = await core_server.request("POST", "/api/v1/auth/totp/enable", token, json={"code": code})
    assert status == 200 and len(codes["codes"]) == 10

    status, err = await _login(core_server, "olga", "olga-pass-1")
    assert status == 401 and err["error"]["code"] == "otp_required"
    status, _ = await _login(core_server, "olga", "olga-pass-1", otp=code)
    assert status == 401  # that code was spent enabling two-factor
    status, _ = await _login(core_server, "olga", "olga-pass-1", otp=codes["codes"][0])
    assert status == 200
    status, _ = await _login(core_server, "olga", "olga-pass-1", otp=codes["codes"][0])
    assert status == 401  # a recovery code works once
    status, me = await core_server.request("GET", "/api/v1/auth/me", token)
    assert me["totp"] is True
    # An admin resets a lost authenticator.
    uid = await _user_id(core_server, "olga")
    status, user = await core_server.request(
        "PATCH", f"/api/v1/users/{uid}", await core_server.admin_token(), json={"totp": False}
    )
    assert status == 200 and user["totp"] is False
    assert (await _login(core_server, "olga", "olga-pass-1"))[0] == 200


async def test_a_role_that_must_use_two_factor_sets_it_up_first(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "c", totp_required_role="operator").start()
    try:
        from servermanager.core.auth import Role

        await server.core.users.create("ops", "password123", Role.OPERATOR)
        await server.core.users.create("watcher", "password123", Role.VIEWER)
        token = (await _login(server, "ops", "password123"))[1]["access_token"]
        status, err = await server.request("GET", "/api/v1/nodes", token)
        assert status == 403 and err["error"]["code"] == "totp_setup_required"
        status, me = await server.request("GET", "/api/v1/auth/me", token)
        assert status == 200 and me["totp_setup_required"] is True
        status, setup = await server.request("POST", "/api/v1/auth/totp/setup", token)
        assert status == 200
        code = pyotp.TOTP(setup["secret"]).now()
        assert (await server.request("POST", "/api/v1/auth/totp/enable", token, json={"code": code}))[
            0
        ] == 200
        assert (await server.request("GET", "/api/v1/nodes", token))[0] == 200
        viewer = (await _login(server, "watcher", "password123"))[1]["access_token"]
        assert (await server.request("GET", "/api/v1/nodes", viewer))[0] == 200  # below the role: optional
    finally:
        await server.stop()


async def test_commands_need_a_fresh_step_up(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "c", step_up_window=300.0).start()
    try:
        agent = RawAgent(server, "web")
        await agent.hello(token=await server.enroll_token())
        body = {"targets": {"nodes": [agent.node_id]}, "command": ["uptime"]}
        token = await server.user_token("ops", "operator")
        status, _ = await server.request("POST", "/api/v1/commands", token, json=body)
        assert status == 202  # just signed in: the password was entered a moment ago
        await _until_stale(server, token, body)
        status, _ = await server.request("POST", "/api/v1/auth/step-up", token, json={"password": "wrong"})
        assert status == 403
        status, _ = await server.request(
            "POST", "/api/v1/auth/step-up", token, json={"password": "password123"}
        )
        assert status == 204
        status, _ = await server.request("POST", "/api/v1/commands", token, json=body)
        assert status == 202
        # Scripts' API tokens are exempt: an admin made them on purpose.
        status, api = await server.request("POST", "/api/v1/tokens", token, json={"name": "cron"})
        await _until_stale(server, token, body)
        status, _ = await server.request("POST", "/api/v1/commands", api["token"], json=body)
        assert status == 202
    finally:
        await server.stop()


async def _until_stale(server: RunningCore, token: str, body: dict[str, Any]) -> None:
    """Age every step-up past the window (as minutes passing would), then see the command refused."""
    await server.core.db.execute("UPDATE tokens SET stepped_up_at = stepped_up_at - 3600")
    status, err = await server.request("POST", "/api/v1/commands", token, json=body)
    assert status == 403 and err["error"]["code"] == "step_up_required", err


async def test_reading_services_needs_no_step_up(tmp_path: Path) -> None:
    server = await RunningCore(tmp_path / "c", step_up_window=300.0).start()
    try:
        agent = RawAgent(server, "web")
        await agent.hello(token=await server.enroll_token())
        token = await server.user_token("ops", "operator")
        await server.core.db.execute("UPDATE tokens SET stepped_up_at = stepped_up_at - 3600")

        async def answer() -> None:
            cmd = await agent.recv_type(p.Command)
            assert cmd.service is not None and cmd.service.action == "list"
            assert agent.ws is not None
            await agent.ws.send_bytes(
                p.encode(p.CommandResult(command_id=cmd.command_id, status="ok", exit_code=0, services=[]))
            )

        import asyncio

        listing, _ = await asyncio.gather(
            server.request("GET", f"/api/v1/nodes/{agent.node_id}/services", token), answer()
        )
        assert listing[0] == 200, listing
        status, err = await server.request(
            "POST", f"/api/v1/nodes/{agent.node_id}/services/nginx/restart", token
        )
        assert status == 403 and err["error"]["code"] == "step_up_required"
    finally:
        await server.stop()
