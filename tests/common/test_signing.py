"""The signed-command contract: the exact bytes signed, key lines and key ids, the field checks."""

from __future__ import annotations

import base64

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization

from servermanager.common import signing
from servermanager.common.protocol import Command, CommandSignature, ServiceRequest, decode, decoder, encode
from tests.helpers.signing import Operator

BLOCK = CommandSignature(
    key_id="sha256:0123456789abcdef", node_id=9, nonce="n" * 24, expires_at=1_900_000_000, sig=""
)


def test_the_signed_bytes_are_pinned() -> None:
    # This is the wire contract third-party signers follow: changing it breaks every signature.
    cmd = Command(
        command_id="c0ffee00", timeout=2.5, argv=["echo", "hé"], env={"B": "2", "A": "1"}, cwd="/tmp"
    )
    assert signing.signed_bytes(cmd, BLOCK) == (
        b'{"v":"sm-cmd-v1","key_id":"sha256:0123456789abcdef","command_id":"c0ffee00","node_id":9,'
        b'"argv":["echo","h\xc3\xa9"],"shell":null,"service":null,"env":[["A","1"],["B","2"]],'
        b'"cwd":"/tmp","timeout_ms":2500,"nonce":"nnnnnnnnnnnnnnnnnnnnnnnn","expires_at":1900000000}'
    )
    service = Command(command_id="c0ffee01", timeout=30, service=ServiceRequest("restart", "nginx"))
    assert b'"service":{"action":"restart","name":"nginx"}' in signing.signed_bytes(service, BLOCK)


def test_every_field_of_the_request_is_covered() -> None:
    cmd = Command(command_id="c1", timeout=60, shell="uptime", env={"A": "1", "B": "2"}, cwd="/srv")
    base = signing.signed_bytes(cmd, BLOCK)
    changes = [
        msgspec.structs.replace(cmd, command_id="c2"),
        msgspec.structs.replace(cmd, timeout=61),
        msgspec.structs.replace(cmd, shell="uptime;"),
        msgspec.structs.replace(cmd, shell=None, argv=["uptime"]),
        msgspec.structs.replace(cmd, env={"A": "1", "B": "3"}),
        msgspec.structs.replace(cmd, env={"A": "1", "B": "2", "C": ""}),
        msgspec.structs.replace(cmd, env={"A": "1"}),
        msgspec.structs.replace(cmd, cwd="/"),
        msgspec.structs.replace(cmd, cwd=None),
    ]
    assert all(signing.signed_bytes(c, BLOCK) != base for c in changes)
    for field, value in (
        ("node_id", 10),
        ("nonce", "m" * 24),
        ("expires_at", 1),
        ("key_id", "sha256:" + "f" * 16),
    ):
        assert signing.signed_bytes(cmd, msgspec.structs.replace(BLOCK, **{field: value})) != base
    # What does not change the request does not change the bytes: env order, the timeout's spelling.
    same = msgspec.structs.replace(cmd, env={"B": "2", "A": "1"}, timeout=60.0)
    assert signing.signed_bytes(same, BLOCK) == base


def test_the_signature_travels_in_the_command_frame() -> None:
    op = Operator()
    cmd = op.signed(Command(command_id="c1", timeout=5, argv=["true"]), 3)
    back = decode(decoder(Command), encode(cmd))
    assert back == cmd and back.signature is not None
    assert signing.check_fields(back.signature) is None
    # An older core's frame (no signature field) still decodes, unsigned.
    assert decode(decoder(Command), b'{"type":"command","command_id":"x","timeout":1}').signature is None


def test_public_key_lines_and_ids() -> None:
    op = Operator("alice  @ desk")
    line = signing.public_key_line(op.raw, "alice  @ desk")
    assert line == "ed25519:" + base64.b64encode(op.raw).decode() + " alice @ desk"
    key = signing.parse_public_key(line)
    assert (key.raw, key.comment, key.key_id) == (op.raw, "alice @ desk", op.key_id)
    assert key.key_id.startswith("sha256:") and len(key.key_id) == 7 + 16
    assert key.label == f"{op.key_id} (alice @ desk)"
    # The same key as OpenSSH writes it has the same id.
    ssh = op.key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert signing.parse_public_key(ssh.decode() + " bob@laptop").key_id == op.key_id


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ssh-rsa AAAAB3NzaC1yc2E bob", "is not a public key line"),
        ("ed25519:not-base64! x", "the key is not valid base64"),
        ("ed25519:" + base64.b64encode(b"x" * 31).decode(), "is 32 bytes, this one is 31"),
        ("ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x07ssh-rsa").decode(), "not an Ed25519 key"),
        ("ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x30ssh").decode(), "cut short"),
    ],
)
def test_bad_key_lines_say_why(line: str, message: str) -> None:
    with pytest.raises(signing.KeyLineError, match=message):
        signing.parse_public_key(line)


def test_key_files_skip_comments_and_name_the_bad_line() -> None:
    a, b = Operator("a"), Operator("b")
    text = f"# operators\n\n{a.line}\n  {b.line}  \n"
    assert [k.key_id for k in signing.parse_key_lines(text)] == [a.key_id, b.key_id]
    with pytest.raises(signing.KeyLineError, match="line 3: "):
        signing.parse_key_lines(f"{a.line}\n# x\nssh-dss AAAA\n")


def test_field_checks() -> None:
    op = Operator()
    good = op.signature(Command(command_id="c1", timeout=5, argv=["true"]), 3)
    assert signing.check_fields(good) is None
    bad = {
        "key_id": "sha256:XYZ",
        "node_id": 0,
        "nonce": "short",
        "expires_at": -1,
        "sig": "AAAA",
    }
    for field, value in bad.items():
        message = signing.check_fields(msgspec.structs.replace(good, **{field: value}))
        assert message is not None and field in message, (field, message)
