"""The certificate pin's one format: computed from DER, read from PEM chains, parsed from what people paste."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import pytest

from servermanager.common.tls import (
    digest_pin,
    fingerprint,
    fingerprint_digest,
    parse_fingerprint,
    pem_certificate,
)
from tests.helpers.tls import CA


def test_the_pin_is_the_sha256_of_the_der_certificate_and_reads_from_a_chain(tmp_path: Path) -> None:
    ca = CA.make(tmp_path / "ca")
    cert, _key, pin = ca.issue(tmp_path / "server")
    leaf = cert.read_bytes()
    der = ssl.PEM_cert_to_DER_cert(leaf.decode())
    assert fingerprint(der) == pin == "sha256:" + hashlib.sha256(der).hexdigest()
    # A chain file (leaf first, then the CA): the pin is the server's own certificate.
    assert fingerprint(pem_certificate(leaf + ca.path.read_bytes())) == pin
    assert digest_pin(fingerprint_digest(pin)) == pin
    with pytest.raises(ValueError, match="no PEM certificate"):
        pem_certificate(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


@pytest.mark.parametrize(
    "pasted",
    [
        "sha256:" + "ab" * 32,
        "SHA256:" + "AB" * 32,
        ":".join(["AB"] * 32),  # openssl x509 -fingerprint -sha256
        "  " + "ab" * 32 + "\n",
    ],
)
def test_pasted_pins_are_normalised(pasted: str) -> None:
    assert parse_fingerprint(pasted) == "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "bad", ["", "sha256:", "sha256:" + "ab" * 31, "sha1:" + "ab" * 20, "sha256:" + "zz" * 32]
)
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a certificate fingerprint"):
        parse_fingerprint(bad)
