"""The account part of /api/v1: your password, two-factor and step-up; users, tokens and enrollment tokens for admins."""

from __future__ import annotations

import re

from servermanager.common import rest as m
from servermanager.core.accounts import AccountError, Accounts
from servermanager.core.auth import Role
from servermanager.core.http.routing import ApiError, Call, Route

_TOKEN_ID = re.compile(r"^[0-9a-f]{16}$")


def _accounts(c: Call) -> Accounts:
    return Accounts(c.core.db, c.core.users)


def _tid(c: Call) -> str:
    tid = c.request.match_info["tid"]
    if not _TOKEN_ID.match(tid):
        raise ApiError(400, "invalid_path", "a token id is 16 lowercase hex digits, as GET lists it")
    return tid


async def _call(c: Call, action: str, target: str, coro: object) -> object:
    """Run an account operation: its AccountError as the matching HTTP error, every outcome audited."""
    try:
        result = await coro  # type: ignore[misc]
    except AccountError as exc:
        await c.core.audit.record(c.actor, action, target, "refused", {"error": exc.message})
        raise ApiError(exc.status, exc.code, exc.message) from None
    await c.core.audit.record(c.actor, action, target, "ok")
    return result


# ---------------------------------------------------------------- yourself


async def change_password(c: Call) -> None:
    assert c.who is not None
    body: m.PasswordChange = c.body
    await _call(
        c,
        "auth.password_change",
        f"user:{c.who.name}",
        _accounts(c).change_own(c.who, body.current_password, body.new_password),
    )


async def step_up(c: Call) -> None:
    assert c.who is not None
    body: m.StepUp = c.body
    if (body.password is None) == (body.code is None):
        raise ApiError(400, "invalid_body", "give exactly one of password or code")
    await _call(
        c, "auth.step_up", f"user:{c.who.name}", _accounts(c).step_up(c.who, body.password, body.code)
    )


async def totp_setup(c: Call) -> m.TotpSetup:
    assert c.who is not None
    return await _call(c, "auth.totp_setup", f"user:{c.who.name}", _accounts(c).totp_setup(c.who))  # type: ignore[return-value]


async def totp_enable(c: Call) -> m.RecoveryCodes:
    assert c.who is not None
    body: m.TotpCode = c.body
    return await _call(
        c, "auth.totp_enable", f"user:{c.who.name}", _accounts(c).totp_enable(c.who, body.code)
    )  # type: ignore[return-value]


async def totp_disable(c: Call) -> None:
    assert c.who is not None
    body: m.TotpCode = c.body
    await _call(c, "auth.totp_disable", f"user:{c.who.name}", _accounts(c).totp_disable(c.who, body.code))


async def list_tokens(c: Call) -> m.TokenList:
    assert c.who is not None
    q: m.TokenQuery = c.query
    uid: int | None = c.who.user_id
    if q.user is not None and q.user != c.who.name:
        if not c.who.role.allows(Role.ADMIN):
            raise ApiError(403, "forbidden", "only admins list other users' tokens")
        try:
            uid = (await _accounts(c).by_name(q.user)).id
        except AccountError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
    return m.TokenList(await _accounts(c).tokens(uid, c.who.token))


async def revoke_token(c: Call) -> None:
    assert c.who is not None
    tid = _tid(c)
    scope = None if c.who.role.allows(Role.ADMIN) else c.who.user_id
    await _call(c, "token.revoke", f"token:{tid}", _accounts(c).revoke(tid, scope))


# ---------------------------------------------------------------- admins


async def get_user(c: Call) -> m.User:
    try:
        return await _accounts(c).get(c.path_id("user"))
    except AccountError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


async def patch_user(c: Call) -> m.User:
    body: m.UserPatch = c.body
    uid = c.path_id("user")
    return await _call(c, "user.update", f"user_id:{uid}", _accounts(c).patch(uid, body))  # type: ignore[return-value]


async def delete_user(c: Call) -> None:
    uid = c.path_id("user")
    await _call(c, "user.delete", f"user_id:{uid}", _accounts(c).delete(uid))


async def reset_password(c: Call) -> None:
    body: m.PasswordReset = c.body
    uid = c.path_id("user")
    await _call(
        c,
        "user.password_reset",
        f"user_id:{uid}",
        _accounts(c).set_password(uid, body.new_password, must_change=True, keep_session=None),
    )


async def list_enroll_tokens(c: Call) -> m.EnrollTokenList:
    return m.EnrollTokenList(await _accounts(c).enroll_tokens())


async def revoke_enroll_token(c: Call) -> None:
    tid = _tid(c)
    await _call(c, "enroll.revoke", f"enroll:{tid}", _accounts(c).revoke_enroll(tid))


V = "/api/v1"
ACCOUNT_ROUTES: list[Route] = [
    Route(
        "POST",
        f"{V}/auth/password",
        change_password,
        summary="Change your password (signs out your other sessions)",
        role=Role.VIEWER,
        body=m.PasswordChange,
        status=204,
        tag="auth",
    ),
    Route(
        "POST",
        f"{V}/auth/step-up",
        step_up,
        summary="Confirm your password or code before running commands",
        role=Role.VIEWER,
        body=m.StepUp,
        status=204,
        tag="auth",
    ),
    Route(
        "POST",
        f"{V}/auth/totp/setup",
        totp_setup,
        summary="Start two-factor sign-in: a secret for an authenticator app",
        role=Role.VIEWER,
        response=m.TotpSetup,
        tag="auth",
    ),
    Route(
        "POST",
        f"{V}/auth/totp/enable",
        totp_enable,
        summary="Turn two-factor sign-in on with a first code; returns recovery codes once",
        role=Role.VIEWER,
        body=m.TotpCode,
        response=m.RecoveryCodes,
        tag="auth",
    ),
    Route(
        "POST",
        f"{V}/auth/totp/disable",
        totp_disable,
        summary="Turn two-factor sign-in off (needs a code)",
        role=Role.VIEWER,
        body=m.TotpCode,
        status=204,
        tag="auth",
    ),
    Route(
        "GET",
        f"{V}/auth/tokens",
        list_tokens,
        summary="Your live tokens and sessions (admins: ?user=)",
        role=Role.VIEWER,
        query=m.TokenQuery,
        response=m.TokenList,
        tag="auth",
        errors=(404,),
    ),
    Route(
        "DELETE",
        f"{V}/auth/tokens/{{tid}}",
        revoke_token,
        summary="Revoke a token, or a whole sign-in by one of its tokens",
        role=Role.VIEWER,
        status=204,
        tag="auth",
    ),
    Route(
        "GET",
        f"{V}/users/{{id}}",
        get_user,
        summary="One user",
        role=Role.ADMIN,
        response=m.User,
        tag="admin",
    ),
    Route(
        "PATCH",
        f"{V}/users/{{id}}",
        patch_user,
        summary="Change a user's role, disable or enable them, reset their two-factor",
        role=Role.ADMIN,
        body=m.UserPatch,
        response=m.User,
        tag="admin",
    ),
    Route(
        "DELETE",
        f"{V}/users/{{id}}",
        delete_user,
        summary="Delete a user and every token of theirs",
        role=Role.ADMIN,
        status=204,
        tag="admin",
    ),
    Route(
        "POST",
        f"{V}/users/{{id}}/password",
        reset_password,
        summary="Set a user's password; they must change it at next sign-in",
        role=Role.ADMIN,
        body=m.PasswordReset,
        status=204,
        tag="admin",
    ),
    Route(
        "GET",
        f"{V}/enroll-tokens",
        list_enroll_tokens,
        summary="Enrollment tokens still usable",
        role=Role.ADMIN,
        response=m.EnrollTokenList,
        tag="admin",
    ),
    Route(
        "DELETE",
        f"{V}/enroll-tokens/{{tid}}",
        revoke_enroll_token,
        summary="Revoke an enrollment token",
        role=Role.ADMIN,
        status=204,
        tag="admin",
    ),
]
