"""Signed operator commands: what is signed, byte for byte, and the public keys that may sign.

An operator signs each command (and each service request) for each node with an Ed25519 key; an
agent that lists trusted keys runs only what one of them signed. This module is the shared part:
the exact bytes signed (`signed_bytes`), the key line format and key ids, and the checks on a
signature block's fields. Signing and verifying (the `cryptography` library) live in the parts
that do them: the desktop and the CLI sign, the agent verifies; the core only relays.

The signed bytes are the compact JSON of `SignedCommand`, fields in this order:

    {"v":"sm-cmd-v1","key_id":..,"command_id":..,"node_id":..,"argv":[..]|null,"shell":..|null,
     "service":{"action":..,"name":..|null}|null,"env":[[name,value],..],"cwd":..|null,
     "timeout_ms":..,"nonce":..,"expires_at":..}

with env sorted by name and the timeout in whole milliseconds (a float's spelling differs between
languages; an integer's does not).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import struct
import time
from typing import Final

import msgspec

from servermanager.common.protocol import Command, CommandSignature, ServiceRequest

VERSION: Final = "sm-cmd-v1"
KEY_PREFIX: Final = "ed25519:"  # a public key line: ed25519:<base64 of the 32 raw bytes> [comment]
SSH_KEY_TYPE: Final = "ssh-ed25519"  # an OpenSSH public key line is accepted too
# An agent accepts signatures whose expiry is at most this far ahead (the longest a core queues a
# command for an offline node), and this much past it (clocks differ).
MAX_LIFETIME: Final = 7 * 86400
CLOCK_SKEW: Final = 60
DEFAULT_LIFETIME: Final = 600  # what the desktop and the CLI sign for, unless a command is queued

_KEY_ID = re.compile(r"^sha256:[0-9a-f]{16}\Z")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}\Z")
_SIG = re.compile(r"^[A-Za-z0-9+/]{86}==\Z")  # 64 bytes, standard base64


class KeyLineError(ValueError):
    """A public key line that cannot be read; the message says why."""


class SignedCommand(msgspec.Struct, frozen=True, gc=False):
    """What an operator's signature covers. Encoded compactly, fields in this order."""

    v: str
    key_id: str
    command_id: str
    node_id: int
    argv: list[str] | None
    shell: str | None
    service: ServiceRequest | None
    env: list[tuple[str, str]]
    cwd: str | None
    timeout_ms: int
    nonce: str
    expires_at: int


_encoder = msgspec.json.Encoder()


def timeout_ms(timeout: float) -> int:
    return round(timeout * 1000)


def signed_bytes(cmd: Command, sig: CommandSignature) -> bytes:
    """The bytes an operator signs for `cmd` on node `sig.node_id` (cmd.signature is not read)."""
    return _encoder.encode(
        SignedCommand(
            v=VERSION,
            key_id=sig.key_id,
            command_id=cmd.command_id,
            node_id=sig.node_id,
            argv=cmd.argv,
            shell=cmd.shell,
            service=cmd.service,
            env=sorted(cmd.env.items()),
            cwd=cmd.cwd,
            timeout_ms=timeout_ms(cmd.timeout),
            nonce=sig.nonce,
            expires_at=sig.expires_at,
        )
    )


def signature_block(node_id: int, key_id: str, *, lifetime: float = DEFAULT_LIFETIME) -> CommandSignature:
    """A signature block for one node with a fresh nonce and an expiry `lifetime` ahead, `sig` empty.

    Sign `signed_bytes(cmd, block)` and put the result in with `msgspec.structs.replace(block, sig=...)`.
    """
    return CommandSignature(
        key_id=key_id,
        node_id=node_id,
        nonce=new_nonce(),
        expires_at=int(time.time() + lifetime) + 1,
        sig="",
    )


def new_nonce() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 random bits


def new_command_id() -> str:
    """A command id a client picks itself (a signature covers it, so the core cannot choose it)."""
    return secrets.token_hex(8)


def encode_sig(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def decode_sig(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def check_fields(sig: CommandSignature) -> str | None:
    """None if the block is well formed, else what is wrong with it (the core says it with a 400)."""
    if not _KEY_ID.match(sig.key_id):
        return f"signature key_id {sig.key_id[:80]!r} is not sha256: and 16 hex digits"
    if not 1 <= sig.node_id <= 2**63 - 1:
        return f"signature node_id {sig.node_id} is out of range"
    if not _NONCE.match(sig.nonce):
        return "signature nonce must be 16 to 64 characters of A-Z a-z 0-9 _ -"
    if not 0 < sig.expires_at < 10**11:
        return f"signature expires_at {sig.expires_at} is not a time"
    if not _SIG.match(sig.sig):
        return "signature sig must be the base64 of 64 bytes"
    return None


# ---------------------------------------------------------------- public keys


def key_id(raw: bytes) -> str:
    """The short, stable name of a public key: sha256: and the first 16 hex digits of its hash."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def public_key_line(raw: bytes, comment: str = "") -> str:
    """The line an agent's trusted_keys (or trusted_keys_file) takes."""
    line = KEY_PREFIX + base64.b64encode(raw).decode()
    comment = " ".join(comment.split())
    return f"{line} {comment}" if comment else line


class PublicKey(msgspec.Struct, frozen=True):
    raw: bytes  # the 32 bytes of the Ed25519 public key
    comment: str = ""

    @property
    def key_id(self) -> str:
        return key_id(self.raw)

    @property
    def label(self) -> str:
        """How logs name it: the key id, and the comment when there is one."""
        return f"{self.key_id} ({self.comment})" if self.comment else self.key_id


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyLineError(f"{what} is not valid base64") from None


def parse_public_key(line: str) -> PublicKey:
    """`ed25519:<base64> [comment]` or an OpenSSH `ssh-ed25519 <base64> [comment]` line."""
    text = line.strip()
    if text.startswith(KEY_PREFIX):
        body, _, comment = text[len(KEY_PREFIX) :].partition(" ")
        raw = _b64(body, "the key")
    elif text.startswith(SSH_KEY_TYPE + " "):
        body, _, comment = text[len(SSH_KEY_TYPE) + 1 :].strip().partition(" ")
        raw = _ssh_key(_b64(body, "the ssh-ed25519 key"))
    else:
        shown = text[:40] + ("..." if len(text) > 40 else "")
        raise KeyLineError(f"{shown!r} is not a public key line (ed25519:<base64> or ssh-ed25519 <base64>)")
    if len(raw) != 32:
        raise KeyLineError(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return PublicKey(raw, " ".join(comment.split()))


def _ssh_key(blob: bytes) -> bytes:
    """The raw key from an OpenSSH public key blob: string "ssh-ed25519", string key."""
    fields = []
    try:
        while blob:
            (n,) = struct.unpack(">I", blob[:4])
            fields.append(blob[4 : 4 + n])
            if len(fields[-1]) != n:
                raise struct.error("short")
            blob = blob[4 + n :]
    except struct.error:
        raise KeyLineError("the ssh-ed25519 key is cut short") from None
    if len(fields) != 2 or fields[0] != SSH_KEY_TYPE.encode():
        raise KeyLineError("the ssh-ed25519 key's blob is not an Ed25519 key")
    return fields[1]


def parse_key_lines(text: str) -> list[PublicKey]:
    """Keys of an authorized_keys-like file: one a line; blank lines and # comments skipped.

    KeyLineError names the line that cannot be read."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            keys.append(parse_public_key(stripped))
        except KeyLineError as exc:
            raise KeyLineError(f"line {number}: {exc}") from None
    return keys
