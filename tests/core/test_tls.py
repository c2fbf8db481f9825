"""TLS by default: when the core serves HTTPS/WSS, the certificate it makes once and keeps, the user's
own certificate, plain HTTP only when told (with a warning), and the pin the admin hands to agents."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from devkit.cores import RunningCore
from servermanager.common.settings import SettingsError, load_settings
from servermanager.common.tls import fingerprint
from servermanager.core.datadir import TLS_CERT_FILE, TLS_KEY_FILE
from servermanager.core.settings import CoreSettings
from servermanager.core.tls import TLSSetupError, server_tls, tls_enabled
from tests.helpers.procs import CoreProcess, cli
from tests.helpers.tls import CA


def settings(**values: str) -> CoreSettings:
    s = msgspec.convert({"data_dir": "", **values}, CoreSettings)
    s.validate()
    return s


async def served_fingerprint(port: int) -> str:
    """What the core on this port presents, read off a TLS handshake that checks nothing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return fingerprint(der)


@pytest.mark.parametrize(
    ("listen", "tls", "on"),
    [
        ("127.0.0.1:8760", "auto", False),
        ("localhost:8760", "auto", False),
        ("[::1]:8760", "auto", False),
        ("0.0.0.0:8760", "auto", True),
        ("[::]:8760", "auto", True),
        ("192.0.2.7:8760", "auto", True),
        ("core.example:8760", "auto", True),
        ("127.0.0.1:8760", "on", True),
        ("0.0.0.0:8760", "off", False),
    ],
)
def test_tls_is_on_beyond_loopback_unless_the_setting_says_otherwise(listen: str, tls: str, on: bool) -> None:
    assert tls_enabled(settings(listen=listen, tls=tls)) is on


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"SM_CORE_TLS": "yes"}, "setting tls: expected auto, on or off"),
        ({"SM_CORE_TLS_CERT": "/x.pem"}, "tls_cert and tls_key go together"),
        ({"SM_CORE_TLS": "off", "SM_CORE_TLS_CERT": "/x.pem", "SM_CORE_TLS_KEY": "/x.key"}, "tls is off"),
    ],
)
def test_tls_settings_are_checked(env: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match):
        load_settings(CoreSettings, env_prefix="SM_CORE_", environ=env)


def test_the_generated_certificate_is_made_once_and_kept(tmp_path: Path) -> None:
    s = settings(listen="192.0.2.7:8760")
    first = server_tls(s, tmp_path)
    assert first is not None and first.generated and not first.own
    for name in (TLS_CERT_FILE, TLS_KEY_FILE):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first.fingerprint)
    cert = x509.load_pem_x509_certificate((tmp_path / TLS_CERT_FILE).read_bytes())
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=9 * 365)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    addresses = names.get_values_for_type(x509.IPAddress)
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("192.0.2.7")} <= set(addresses)

    again = server_tls(s, tmp_path)
    assert again is not None and not again.generated
    assert again.fingerprint == first.fingerprint


def test_a_damaged_certificate_stops_the_core_with_what_to_do(tmp_path: Path) -> None:
    s = settings(tls="on")
    assert server_tls(s, tmp_path) is not None
    (tmp_path / TLS_KEY_FILE).write_text("not a key\n")
    with pytest.raises(TLSSetupError, match=f"delete {tmp_path / TLS_CERT_FILE} and") as err:
        server_tls(s, tmp_path)
    assert "re-pinned" in str(err.value)


def test_a_users_key_that_does_not_fit_their_certificate_is_refused(tmp_path: Path) -> None:
    ca = CA.make(tmp_path / "ca")
    cert, _key, _ = ca.issue(tmp_path / "one")
    _cert, other_key, _ = ca.issue(tmp_path / "two")
    s = settings(tls="on", tls_cert=str(cert), tls_key=str(other_key))
    with pytest.raises(TLSSetupError, match=f"cannot use the TLS certificate {cert} with key {other_key}"):
        server_tls(s, tmp_path / "data")


async def test_core_serves_https_and_keeps_its_certificate_across_restarts(tmp_path: Path) -> None:
    core = await RunningCore(tmp_path / "core", tls="on").start()
    try:
        pin = core.fingerprint
        assert core.url.startswith("https://")
        status, body = await core.request("GET", "/api/v1/health")
        assert status == 200 and body["status"] == "ok"
        assert await served_fingerprint(core.port) == pin
        # Its certificate names 127.0.0.1, so plain verification against it works too (curl --cacert).
        verified = ssl.create_default_context(cafile=str(core.data_dir / TLS_CERT_FILE))
        async with aiohttp.ClientSession() as http:
            async with http.get(core.url + "/api/v1/health", ssl=verified) as r:
                assert r.status == 200
            # Neither plain HTTP on the TLS port nor a client that trusts only the system's CAs get in.
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{core.port}/api/v1/health") as r:
                    await r.read()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with http.get(core.url + "/api/v1/health") as r:
                    await r.read()
    finally:
        await core.stop()
    again = await RunningCore(tmp_path / "core", port=core.port, tls="on").start()
    try:
        assert again.fingerprint == pin and await served_fingerprint(again.port) == pin
    finally:
        await again.stop()


async def test_core_serves_the_users_own_certificate(tmp_path: Path) -> None:
    ca = CA.make(tmp_path / "ca")
    cert, key, pin = ca.issue(tmp_path / "server")
    core = await RunningCore(tmp_path / "core", tls="on", tls_cert=str(cert), tls_key=str(key)).start()
    try:
        assert core.fingerprint == pin and await served_fingerprint(core.port) == pin
        assert not (core.data_dir / TLS_CERT_FILE).exists() and not (core.data_dir / TLS_KEY_FILE).exists()
        verified = ssl.create_default_context(cafile=str(ca.path))
        async with aiohttp.ClientSession() as http, http.get(core.url + "/api/v1/health", ssl=verified) as r:
            assert r.status == 200
    finally:
        await core.stop()


# ---------------------------------------------------------------- the real command, beyond loopback


@pytest.fixture
def procs() -> Iterator[list[CoreProcess]]:
    started: list[CoreProcess] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.stop()


@pytest.mark.slow
def test_servermanager_core_beyond_loopback_serves_tls_and_hands_out_its_pin(
    tmp_path: Path, procs: list[CoreProcess]
) -> None:
    data = tmp_path / "data"
    # Bound to every address, as on a real server: TLS without being asked.
    proc = CoreProcess(data, host="0.0.0.0", tls=True)
    procs.append(proc)
    proc.start()
    status, body = proc.api("GET", "/api/v1/health")
    assert status == 200 and body["status"] == "ok"
    r = cli("admin", "fingerprint", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    pin = r.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", pin)
    assert asyncio.run(served_fingerprint(proc.port)) == pin
    log = proc.log()
    assert f"core listening on https://0.0.0.0:{proc.port}" in log and f"fingerprint {pin}" in log
    assert cli("admin", "tls-fingerprint", "--data-dir", str(data)).stdout.strip() == pin

    # The enrollment command the admin copies: the token alone on stdout, the command with the pin after.
    config = tmp_path / "core.toml"
    config.write_text(f'listen = "0.0.0.0:{proc.port}"\n')
    r = cli(
        "admin", "enroll-token", "--config", str(config), "--data-dir", str(data), "--core-host", "hub.lan"
    )
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("sme_") and "\n" not in token
    assert (
        f"SM_AGENT_ENROLL_TOKEN={token} servermanager agent --core wss://hub.lan:{proc.port} "
        f"--core-fingerprint {pin}"
    ) in r.stderr

    assert proc.terminate() == 0
    # Restarted: the same certificate, so every pin handed out stays good.
    again = CoreProcess(data, port=proc.port, host="0.0.0.0", tls=True)
    procs.append(again)
    again.start()
    assert asyncio.run(served_fingerprint(again.port)) == pin


@pytest.mark.slow
def test_plain_http_beyond_loopback_only_when_tls_is_off_and_then_with_a_warning(
    tmp_path: Path, procs: list[CoreProcess]
) -> None:
    proc = CoreProcess(tmp_path / "data", host="0.0.0.0", args=("--tls", "off"))
    procs.append(proc)
    proc.start()
    status, _ = proc.api("GET", "/api/v1/health")
    assert status == 200
    log = proc.log()
    assert f"core listening on http://0.0.0.0:{proc.port}" in log
    assert re.search(r"WARNING .*TLS is off \(tls = off\) while listening on 0\.0\.0\.0", log), log
    assert not (tmp_path / "data" / TLS_CERT_FILE).exists()
    r = cli("admin", "fingerprint", "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 1 and "no TLS certificate" in r.stderr


def test_a_missing_certificate_file_stops_the_core_with_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    env = {**os.environ, "SM_CORE_TLS_CERT": str(missing), "SM_CORE_TLS_KEY": str(missing)}
    r = cli("core", "--tls", "on", "--listen", "127.0.0.1:9", "--data-dir", str(tmp_path / "d"), env=env)
    assert r.returncode == 2 and f"no such file: {missing}" in r.stderr and "Traceback" not in r.stderr


def test_the_public_key_pin_is_what_openssl_makes_for_curl(tmp_path: Path) -> None:
    import base64
    import subprocess

    from servermanager.common.tls import pem_certificate
    from servermanager.core.tls import spki_pin
    from tests.helpers.tls import CA

    cert, _key, _pin = CA.make(tmp_path / "ca").issue(tmp_path / "server")
    # curl's manual: openssl x509 -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64
    pub = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"], capture_output=True, check=True
    )
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pub.stdout, capture_output=True, check=True
    )
    expected = "sha256//" + base64.b64encode(hashlib.sha256(der.stdout).digest()).decode()
    assert spki_pin(pem_certificate(cert.read_bytes())) == expected
