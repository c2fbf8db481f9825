"""An operator's Ed25519 key for tests: real keys, real signatures over common.signing's bytes."""

from __future__ import annotations

import time

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from servermanager.common import signing
from servermanager.common.protocol import Command, CommandSignature


class Operator:
    """One operator's key pair; signs commands for nodes like the desktop and the CLI do."""

    def __init__(self, name: str = "alice@desk") -> None:
        self.name = name
        self.key = Ed25519PrivateKey.generate()
        self.raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def line(self) -> str:
        """What goes in an agent's [exec] trusted_keys."""
        return signing.public_key_line(self.raw, self.name)

    @property
    def key_id(self) -> str:
        return signing.key_id(self.raw)

    def signature(
        self,
        cmd: Command,
        node_id: int,
        *,
        expires_at: int | None = None,
        nonce: str | None = None,
    ) -> CommandSignature:
        block = CommandSignature(
            key_id=self.key_id,
            node_id=node_id,
            nonce=nonce or signing.new_nonce(),
            expires_at=int(time.time()) + 600 if expires_at is None else expires_at,
            sig="",
        )
        sig = self.key.sign(signing.signed_bytes(cmd, block))
        return msgspec.structs.replace(block, sig=signing.encode_sig(sig))

    def signed(
        self, cmd: Command, node_id: int, *, expires_at: int | None = None, nonce: str | None = None
    ) -> Command:
        """`cmd` carrying this operator's signature for `node_id`."""
        sig = self.signature(cmd, node_id, expires_at=expires_at, nonce=nonce)
        return msgspec.structs.replace(cmd, signature=sig)

    def private_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
