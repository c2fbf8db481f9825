"""Signed operator commands on the agent: the trusted keys, each request's signature, replays.

With trusted keys in [exec] (`trusted_keys`, `trusted_keys_file`) the agent runs only commands and
service requests that one of those keys signed, for this node, unexpired and never seen before;
anything else is refused with the reason. The core only relays signatures, so a stolen core (its
database, an admin password) runs nothing here.

Only an agent with trusted keys imports this module, and with it `cryptography`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from servermanager.common.protocol import Command
from servermanager.common.settings import SettingsError
from servermanager.common.signing import (
    CLOCK_SKEW,
    MAX_LIFETIME,
    KeyLineError,
    PublicKey,
    check_fields,
    decode_sig,
    parse_key_lines,
    signed_bytes,
)

log = logging.getLogger(__name__)

NONCE_FILE = "command-nonces"
# Nonces of accepted requests kept at most; only trusted keys can add one, and each leaves once
# its signature has expired, so this is reached only by a flood of long-lived signatures.
MAX_NONCES = 100_000
_POSIX = os.name == "posix"

UNSIGNED = (
    "not signed by a trusted key: this agent runs only requests signed by one of its [exec] trusted keys"
)


def _utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------- trusted keys


class TrustedKeys:
    """The keys of `[exec] trusted_keys` and of `trusted_keys_file`, the file re-read when it changes.

    A file that becomes unreadable, unsafe (writable by group or others) or malformed trusts nothing
    until it is fixed: it never turns the signature requirement off.
    """

    def __init__(self, inline: list[PublicKey], file: str | os.PathLike[str] | None) -> None:
        self.inline = list(inline)
        self.file = Path(file) if file else None
        self._stamp: tuple[int, ...] | None = None
        self._from_file: list[PublicKey] = []
        self.problem: str | None = None  # why the file's keys are not in use
        if self.file is not None:
            self._reload()
            if self.problem is not None:
                raise SettingsError(f"setting exec.trusted_keys_file: {self.problem}")
        if not self.keys():
            log.warning("trusted keys: %s holds no key yet, so every command is refused", self.file)

    def _reload(self) -> None:
        assert self.file is not None
        try:
            fd = os.open(self.file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            self._fail(f"cannot read {self.file}: {exc.strerror or exc}")
            return
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_mode)  # ctime: chmod
            if stamp == self._stamp:
                return
            if _POSIX and st.st_mode & 0o022:
                mode = stat.S_IMODE(st.st_mode)
                self._fail(
                    f"{self.file} is writable by group or others (mode {mode:04o}), so anyone could add "
                    f"a key; fix with: chmod 644 {self.file}"
                )
                return
            data = fh.read()
        try:
            keys = parse_key_lines(data.decode("utf-8"))
        except (UnicodeDecodeError, KeyLineError) as exc:
            self._fail(f"{self.file}: {exc}")
            return
        if self._stamp is not None:
            log.info("trusted keys file %s changed: %d key(s)", self.file, len(keys))
        self._stamp, self._from_file, self.problem = stamp, keys, None

    def _fail(self, problem: str) -> None:
        if problem != self.problem:
            log.error("trusted keys: %s; the file's keys are not used until it is fixed", problem)
        self._stamp, self._from_file, self.problem = None, [], problem

    def keys(self) -> dict[str, PublicKey]:
        """The keys trusted now, by key id."""
        if self.file is not None:
            self._reload()
        return {k.key_id: k for k in (*self.inline, *self._from_file)}


# ---------------------------------------------------------------- replay cache


class NonceStore:
    """The nonces of accepted signed requests, until they expire, and the node id requests must name.

    One append-only file in the state dir: `node <id>` and `<nonce> <expires_at>` lines. A request
    is accepted only once its nonce is on disk, so a restart (or a crash) reopens no replay window.
    Expired entries are dropped when the agent starts and whenever they outnumber the live ones.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.nonces: dict[str, int] = {}
        self.node_id: int | None = None
        self._lines = 0
        self._load()
        self._compact()

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SettingsError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        horizon = self.clock() - CLOCK_SKEW
        for line in text.splitlines():
            first, _, second = line.partition(" ")
            if not second.isdigit():
                continue  # a line cut short by a crash: its request was never run
            if first == "node":
                self.node_id = int(second)
            elif int(second) >= horizon:
                self.nonces[first] = int(second)

    def _compact(self) -> None:
        """Rewrite the file with the live entries only (atomically: a crash leaves one of the two)."""
        horizon = self.clock() - CLOCK_SKEW
        self.nonces = {n: exp for n, exp in self.nonces.items() if exp >= horizon}
        lines = [f"node {self.node_id}"] if self.node_id is not None else []
        lines += [f"{n} {exp}" for n, exp in self.nonces.items()]
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write("".join(f"{line}\n" for line in lines))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise SettingsError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._lines = len(lines)

    def _append(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "a", encoding="ascii") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._lines += 1

    def seen(self, nonce: str) -> bool:
        exp = self.nonces.get(nonce)
        return exp is not None and exp >= self.clock() - CLOCK_SKEW

    def full(self) -> bool:
        if len(self.nonces) < MAX_NONCES:
            return False
        horizon = self.clock() - CLOCK_SKEW
        return sum(1 for exp in self.nonces.values() if exp >= horizon) >= MAX_NONCES

    def add(self, nonce: str, expires_at: int) -> None:
        """Record a nonce on disk (OSError if it cannot be: then the request must not run)."""
        self._append(f"{nonce} {expires_at}")
        self.nonces[nonce] = expires_at
        if self._lines > 2 * len(self.nonces) + 1000:
            with contextlib.suppress(SettingsError):
                self._compact()

    def pin(self, node_id: int) -> None:
        with contextlib.suppress(OSError):
            self._append(f"node {node_id}")
        self.node_id = node_id


# ---------------------------------------------------------------- the check


class Verifier:
    """Checks each request's signature: a trusted key, this node, unexpired, a nonce never seen.

    The node id is the one this agent was enrolled as, pinned in the nonce file the first time it is
    known: a core that later calls the agent by another node's id (to replay that node's signed
    requests here) gets every such request refused. A fresh enrollment (no credential file when the
    agent starts: someone on this host removed it) pins again.
    """

    def __init__(
        self,
        keys: TrustedKeys,
        nonces: NonceStore,
        node_id: Callable[[], int | None],
        *,
        fresh_enrollment: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.nonces = nonces
        self._node_id = node_id
        self.clock = clock
        self._renamed_warned: int | None = None
        if fresh_enrollment:
            nonces.node_id = None

    def node(self) -> int | None:
        """The node id signatures must name: the pinned one, else the one the agent has now."""
        current = self._node_id()
        pinned = self.nonces.node_id
        if pinned is None:
            if current is not None:
                self.nonces.pin(current)
                log.info("signed requests must name node %d", current)
            return current
        if current is not None and current != pinned and self._renamed_warned != current:
            self._renamed_warned = current
            log.warning(
                "the core calls this agent node %d, but it was enrolled as node %d: signed requests "
                "must still name node %d (remove %s with the credential to enroll anew)",
                current,
                pinned,
                pinned,
                self.nonces.path,
            )
        return pinned

    def check(self, cmd: Command) -> str | None:
        """None if `cmd` may go on to the [exec] policy, else why it is refused."""
        sig = cmd.signature
        if sig is None:
            return UNSIGNED
        trusted = self.keys.keys()
        if self.keys.problem is not None and not trusted:
            return f"not signed by a trusted key: {self.keys.problem}"
        bad = check_fields(sig)
        if bad is not None:
            return f"signature does not match the request: {bad}"
        key = trusted.get(sig.key_id)
        if key is None:
            return f"not signed by a trusted key: {sig.key_id} is not one of this agent's [exec] trusted keys"
        try:
            Ed25519PublicKey.from_public_bytes(key.raw).verify(decode_sig(sig.sig), signed_bytes(cmd, sig))
        except (InvalidSignature, ValueError):
            return "signature does not match the request: it was changed after signing, or not signed with that key"
        me = self.node()
        if me is None or sig.node_id != me:
            return (
                f"signed for node {sig.node_id}, this is node {me if me is not None else '(not yet known)'}"
            )
        now = self.clock()
        if sig.expires_at + CLOCK_SKEW < now:
            return f"signature expired at {_utc(sig.expires_at)} (this agent's clock says {_utc(now)})"
        if sig.expires_at > now + MAX_LIFETIME + CLOCK_SKEW:
            return f"signature expires too far ahead ({_utc(sig.expires_at)}): at most {MAX_LIFETIME // 86400} days"
        if self.nonces.seen(sig.nonce):
            return "replayed nonce: this agent has already received this signed request"
        if self.nonces.full():
            return f"{MAX_NONCES} signed requests are still unexpired here; try again later"
        try:
            self.nonces.add(sig.nonce, sig.expires_at)
        except OSError as exc:
            return f"cannot record the request's nonce ({exc.strerror or exc}), so it could be replayed"
        log.debug("command %s: signed by %s for node %d", cmd.command_id, key.label, sig.node_id)
        return None


def make_verifier(
    inline: list[str],
    file: str,
    state_dir: str | os.PathLike[str],
    node_id: Callable[[], int | None],
    *,
    fresh_enrollment: bool = False,
) -> Verifier:
    """The verifier of an agent with trusted keys; SettingsError if they cannot be read."""
    try:
        keys = [k for line in inline for k in parse_key_lines(line)]
    except KeyLineError as exc:
        raise SettingsError(f"setting exec.trusted_keys: {exc}") from None
    trusted = TrustedKeys(keys, file or None)
    nonces = NonceStore(Path(state_dir) / NONCE_FILE)
    verifier = Verifier(trusted, nonces, node_id, fresh_enrollment=fresh_enrollment)
    log.info(
        "signed requests only: %d trusted key(s): %s",
        len(trusted.keys()),
        ", ".join(k.label for k in trusted.keys().values()),
    )
    return verifier
