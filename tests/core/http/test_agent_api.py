"""The agent package and install scripts a new server fetches with its enrollment token, and the install command."""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devkit.cores import RunningCore
from servermanager.core.auth import token_hash
from tests.helpers.core import RawAgent
from tests.helpers.wait import wait_for

SCRIPTS = ("/api/v1/agent/install.sh", "/api/v1/agent/install.ps1")
FETCHED = (*SCRIPTS, "/api/v1/agent/package", "/api/v1/agent/package/info")


@pytest.fixture
async def core(tmp_path: Path, agent_wheel: Path) -> AsyncIterator[RunningCore]:
    server = await RunningCore(tmp_path / "core", agent_package=str(agent_wheel)).start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def tls_core(tmp_path: Path, agent_wheel: Path) -> AsyncIterator[RunningCore]:
    server = await RunningCore(tmp_path / "tls-core", tls="on", agent_package=str(agent_wheel)).start()
    try:
        yield server
    finally:
        await server.stop()


def shellcheck(script: str) -> None:
    tool = shutil.which("shellcheck")
    assert tool is not None, "shellcheck is needed (apt-get install shellcheck; .ci/run installs it)"
    done = subprocess.run(
        [tool, "--shell=sh", "-"], input=script, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


async def test_only_a_usable_enrollment_token_or_an_admin_fetches_them(core: RunningCore) -> None:
    admin = await core.admin_token()
    valid = await core.enroll_token()
    operator = await core.user_token("olga", "operator")
    expiring = await core.core.enroll.create(0.01, 1)
    revoked = await core.enroll_token()
    spent = await core.enroll_token()
    status, _ = await core.request("DELETE", f"/api/v1/enroll-tokens/{token_hash(revoked).hex()[:16]}", admin)
    assert status == 204
    agent = RawAgent(core, "spender")
    await agent.hello(token=spent)
    await agent.close()
    deadline = time.time() + 0.02
    await wait_for(lambda: time.time() > deadline, what="the short-lived token to expire")

    for path in FETCHED:
        assert (await core.request("GET", path))[0] == 401, path
        assert (await core.request("GET", path, operator))[0] == 403, path
        for token in ("sme_not-a-token", expiring, revoked, spent):
            status, body = await core.request("GET", path, token)
            assert status == 401 and "enrollment token" in body["error"]["message"], (path, token)
        assert (await core.request("GET", path, valid))[0] == 200, path
        assert (await core.request("GET", path, admin))[0] == 200, path
    # Fetching spends nothing: the script downloads with the token first, then enrolls with it.
    assert await core.core.enroll.usable(valid)


async def test_the_package_is_the_wheel_and_the_scripts_carry_its_sha256(core: RunningCore) -> None:
    token = await core.enroll_token()
    status, info = await core.request("GET", "/api/v1/agent/package/info", token)
    assert (
        status == 200 and info["filename"].startswith("servermanager-") and info["filename"].endswith(".whl")
    )
    assert core.http is not None
    async with core.http.get(
        core.url + "/api/v1/agent/package", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.status == 200
        wheel = await r.read()
        assert r.headers["Content-Disposition"] == f'attachment; filename="{info["filename"]}"'
    assert hashlib.sha256(wheel).hexdigest() == info["sha256"] and len(wheel) == info["size"]
    assert wheel[:2] == b"PK"  # a zip, as a wheel is
    for path in SCRIPTS:
        _, script = await core.request("GET", path, token)
        assert info["sha256"] in script.decode(), path
        assert info["filename"] in script.decode(), path


async def test_the_linux_script_is_clean_posix_sh_with_the_token_only_when_fetched_with_it(
    tls_core: RunningCore,
) -> None:
    token = await tls_core.enroll_token()
    _, mine = await tls_core.request("GET", "/api/v1/agent/install.sh", token)
    script = mine.decode()
    shellcheck(script)
    assert f"TOKEN={token}" in script
    assert f"CORE_PIN={tls_core.fingerprint}" in script and "CURL_PIN=sha256//" in script
    assert f"CORE_URL={tls_core.url}" in script
    # The unit is the one this version ships, not a copy in the script's template.
    unit = (Path(__file__).parents[3] / "packaging" / "systemd" / "servermanager-agent.service").read_text()
    assert unit.strip() in script
    # An admin looking at the script gets none of their own tokens in it.
    admin = await tls_core.admin_token()
    _, theirs = await tls_core.request("GET", "/api/v1/agent/install.sh", admin)
    assert "TOKEN=''" in theirs.decode() and admin not in theirs.decode()
    shellcheck(theirs.decode())
    _, ps1 = await tls_core.request("GET", "/api/v1/agent/install.ps1", token)
    assert f"$Token = '{token}'" in ps1.decode()
    assert f"$CertSha256 = '{tls_core.fingerprint.partition(':')[2]}'" in ps1.decode()


async def test_a_script_refuses_to_install_a_package_with_another_sha256(
    core: RunningCore, tmp_path: Path
) -> None:
    token = await core.enroll_token()
    _, body = await core.request("GET", "/api/v1/agent/install.sh", token)
    script = body.decode()
    _, info = await core.request("GET", "/api/v1/agent/package/info", token)
    tampered = script.replace(info["sha256"], "0" * 64)
    proc = await asyncio.create_subprocess_exec(
        "sh", "-s", "--", "--prefix", str(tmp_path / "root"), "--no-service",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate(tampered.encode())
    assert proc.returncode == 1, err.decode()
    assert f"SHA-256 is {info['sha256']}, not {'0' * 64}" in err.decode()
    assert not (tmp_path / "root" / "opt").exists()  # nothing installed


async def test_the_install_command_is_an_admins_and_is_audited(tls_core: RunningCore) -> None:
    operator = await tls_core.user_token("olga", "operator")
    status, _ = await tls_core.request("POST", "/api/v1/agent/install-command", operator, json={})
    assert status == 403
    admin = await tls_core.admin_token()
    status, cmd = await tls_core.request(
        "POST", "/api/v1/agent/install-command", admin, json={"ttl": 600, "uses": 2}
    )
    assert status == 201, cmd
    assert cmd["uses"] == 2 and abs(cmd["expires_at"] - (time.time() + 600)) < 5
    assert cmd["core_url"] == tls_core.url and cmd["fingerprint"] == tls_core.fingerprint
    assert cmd["public_key_pin"].startswith("sha256//")
    assert await tls_core.core.enroll.usable(cmd["token"])
    words = shlex.split(cmd["linux"])
    assert words[:3] == ["printf", "Authorization: Bearer %s\\n", cmd["token"]]
    assert words[words.index("--pinnedpubkey") + 1] == cmd["public_key_pin"]
    assert words[-3:] == ["|", "sudo", "sh"]
    assert f"'{tls_core.fingerprint.partition(':')[2]}'" in cmd["windows"] and cmd["token"] in cmd["windows"]
    assert cmd["agent"].endswith(f"--core-fingerprint {tls_core.fingerprint}")
    _, listed = await tls_core.request("GET", "/api/v1/enroll-tokens", admin)
    assert cmd["token_id"] in [t["id"] for t in listed["tokens"]]
    _, audit = await tls_core.request("GET", "/api/v1/audit?action=enroll.create", admin)
    assert audit["entries"][0]["detail"]["install_command"] is True
    status, body = await tls_core.request(
        "POST", "/api/v1/agent/install-command", admin, json={"core_url": "https://x'; rm -rf /:1"}
    )
    assert status == 400 and "core_url" in body["error"]["message"]
    status, cmd = await tls_core.request(
        "POST", "/api/v1/agent/install-command", admin, json={"core_url": "https://core.example:8760"}
    )
    assert status == 201 and "https://core.example:8760/api/v1/agent/install.sh" in cmd["linux"]


async def test_the_linux_line_fetches_the_script_with_curl_pinned_to_the_core(tls_core: RunningCore) -> None:
    admin = await tls_core.admin_token()
    _, cmd = await tls_core.request("POST", "/api/v1/agent/install-command", admin, json={})
    fetch = cmd["linux"].removesuffix(" | sudo sh")
    assert fetch != cmd["linux"]
    proc = await asyncio.create_subprocess_shell(fetch, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.startswith(b"#!/bin/sh") and f"TOKEN={cmd['token']}".encode() in out
    # Another key than the core's: curl stops before it sends anything.
    wrong = fetch.replace(cmd["public_key_pin"], "sha256//" + "A" * 43 + "=")
    proc = await asyncio.create_subprocess_shell(wrong, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode != 0 and out == b"", err.decode()
