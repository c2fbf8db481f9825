"""HTTPS/WSS for the core: when it is on, which certificate it serves, and the one it makes for itself.

`tls = auto` (the default) serves TLS whenever the core listens beyond loopback; `on` always, `off`
never (plain HTTP behind a TLS-terminating proxy). The certificate is the user's (`tls_cert`,
`tls_key`) or, without one, a self-signed ECDSA P-256 certificate generated on the first start and
kept in the data dir (0600), so its fingerprint, which agents and the desktop pin, stays the same.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import os
import re
import secrets
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from servermanager.common.settings import SettingsError
from servermanager.common.tls import fingerprint, pem_certificate
from servermanager.core.datadir import TLS_CERT_FILE, TLS_KEY_FILE
from servermanager.core.settings import CoreSettings

log = logging.getLogger(__name__)

VALID_DAYS = 3650  # a pinned certificate is trusted for what it is, not for its dates
WARN_EXPIRY_DAYS = 30
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class TLSSetupError(SettingsError):
    """The certificate or key cannot be used; the message names the file and what to do."""


def is_loopback(host: str) -> bool:
    """Whether binding `host` reaches this machine only. Any other name counts as the network."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tls_enabled(settings: CoreSettings) -> bool:
    if settings.tls == "on":
        return True
    if settings.tls == "off":
        return False
    return not is_loopback(settings.host)


@dataclass(frozen=True)
class ServerTLS:
    """What the core serves TLS with."""

    context: ssl.SSLContext
    cert: Path
    key: Path
    fingerprint: str
    own: bool  # the user's tls_cert; False: the certificate the core made for itself
    generated: bool  # made by this start


def certificate_paths(settings: CoreSettings, folder: Path) -> tuple[Path, Path, bool]:
    """(certificate, key, the user's own) for these settings and data dir."""
    if settings.tls_cert:
        return Path(settings.tls_cert).expanduser(), Path(settings.tls_key).expanduser(), True
    return folder / TLS_CERT_FILE, folder / TLS_KEY_FILE, False


def read_fingerprint(cert: Path) -> str:
    """The pin of the first certificate in a PEM file."""
    try:
        data = cert.read_bytes()
    except OSError as exc:
        raise TLSSetupError(f"cannot read the TLS certificate {cert}: {exc.strerror or exc}") from None
    try:
        return fingerprint(pem_certificate(data))
    except ValueError as exc:
        raise TLSSetupError(f"the TLS certificate {cert} is not a PEM certificate: {exc}") from None


def current_fingerprint(settings: CoreSettings, folder: Path) -> str | None:
    """The pin of the certificate the core serves (or will serve) with; None before it made one."""
    cert, _key, own = certificate_paths(settings, folder)
    if not own and not cert.exists():
        return None
    return read_fingerprint(cert)


def spki_pin(der: bytes) -> str:
    """curl's `--pinnedpubkey` pin of a DER certificate: `sha256//` and the base64 SHA-256 of its
    SubjectPublicKeyInfo. The install one-liner's curl knows only this form; agents and the desktop
    pin the certificate itself (`sha256:<hex>`, common.tls)."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def current_pins(settings: CoreSettings, folder: Path) -> tuple[str, str] | None:
    """(certificate pin `sha256:<hex>`, public-key pin `sha256//<base64>` for curl) of the certificate
    the core serves; None before it made one."""
    cert, _key, own = certificate_paths(settings, folder)
    if not own and not cert.exists():
        return None
    pin = read_fingerprint(cert)  # the readable-PEM checks and their messages
    return pin, spki_pin(pem_certificate(cert.read_bytes()))


def server_tls(settings: CoreSettings, folder: Path) -> ServerTLS | None:
    """The TLS set-up for these settings, making the certificate on first use; None: plain HTTP."""
    if not tls_enabled(settings):
        return None
    cert, key, own = certificate_paths(settings, folder)
    generated = False
    if not own and not (cert.exists() and key.exists()):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        generate_certificate(cert, key, settings.host)
        generated = True
    for path, setting in ((cert, "tls_cert"), (key, "tls_key")):
        if not path.is_file():
            raise TLSSetupError(f"TLS: no such file: {path}" + (f" (setting {setting})" if own else ""))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        fix = (
            "check that tls_key is the key of tls_cert, both in PEM"
            if own
            else f"delete {cert} and {key} to make a new pair (agents and desktops must then be re-pinned)"
        )
        raise TLSSetupError(f"cannot use the TLS certificate {cert} with key {key}: {exc}; {fix}") from None
    return ServerTLS(context, cert, key, read_fingerprint(cert), own, generated)


def announce(settings: CoreSettings, tls: ServerTLS | None) -> None:
    """Log how the core serves: the scheme, and the certificate's fingerprint or why there is none."""
    scheme = "https" if tls else "http"
    log.info("core listening on %s://%s:%d", scheme, settings.host, settings.port)
    if tls is not None:
        what = "own certificate" if tls.own else "generated certificate" if tls.generated else "certificate"
        log.info("TLS with %s %s, fingerprint %s", what, tls.cert, tls.fingerprint)
        _warn_expiry(tls.cert)
    elif settings.tls == "off" and not is_loopback(settings.host):
        log.warning(
            "TLS is off (tls = off) while listening on %s: serving plain HTTP. Passwords, tokens and "
            "agent credentials cross the network in the clear unless a TLS-terminating proxy is in front",
            settings.listen,
        )


def _warn_expiry(cert: Path) -> None:
    from cryptography import x509

    with contextlib.suppress(ValueError, OSError):
        not_after = x509.load_der_x509_certificate(pem_certificate(cert.read_bytes())).not_valid_after_utc
        left = not_after - dt.datetime.now(dt.UTC)
        if left < dt.timedelta(days=WARN_EXPIRY_DAYS):
            log.warning(
                "the TLS certificate %s %s on %s", cert, "expired" if left.days < 0 else "expires", not_after
            )


def subject_names(host: str) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """The DNS names and addresses a generated certificate names: this machine's names, the listen
    address and loopback, so plain CA-style verification also works where the desktop or curl use one."""
    names = ["localhost"]
    with contextlib.suppress(OSError):
        names += [socket.gethostname(), socket.getfqdn()]
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    try:
        listen = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        names.append(host)
    else:
        if not listen.is_unspecified:
            addresses.append(listen)
    dns = list(dict.fromkeys(n.lower() for n in names if n and _DNS_NAME.match(n)))
    return dns, list(dict.fromkeys(addresses))


def generate_certificate(cert: Path, key: Path, host: str) -> None:
    """A self-signed ECDSA P-256 certificate for `host` and this machine, valid VALID_DAYS; both files 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    dns, addresses = subject_names(host)
    common = (dns[1] if len(dns) > 1 else dns[0])[:64]
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Server Manager"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [*(x509.DNSName(n) for n in dns), *(x509.IPAddress(a) for a in addresses)]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False)
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The key first: a pair is used only when both files are there.
    _write_private(key, key_pem)
    _write_private(cert, certificate.public_bytes(serialization.Encoding.PEM))
    log.info(
        "generated a self-signed TLS certificate %s (key %s), valid %d days, for %s",
        cert,
        key,
        VALID_DAYS,
        ", ".join([*dns, *(str(a) for a in addresses)]),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a 0600 file atomically: a crash leaves the old file or none, never half of one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            if os.name == "posix":
                os.fchmod(fh.fileno(), 0o600)  # the umask may have taken bits from 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def agent_url(settings: CoreSettings, host: str | None = None) -> str:
    """The core's address as an agent dials it (for the enrollment command an admin copies)."""
    name = host or settings.host
    if not host and (not name or ipaddress_unspecified(name)):
        name = socket.getfqdn()
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"  # an IPv6 address in a URL
    return f"{'wss' if tls_enabled(settings) else 'ws'}://{name}:{settings.port}"


def ipaddress_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False
