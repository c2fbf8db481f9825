"""Signed commands from scripts: `servermanager keys`, `servermanager sign` and `servermanager run`.

An operator's key file signs each command for each target node (common.signing says over what);
agents with that key among their [exec] trusted keys run it, others refuse it. The core only
relays the signatures. Needs the `cryptography` library (the `sign` extra, or the agent's or the
desktop's); it is imported only by these subcommands.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import ssl
import stat
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from servermanager.common import signing
from servermanager.common.protocol import Command, CommandSignature, NodeInfo, ServiceRequest
from servermanager.common.rest import CommandInfo, CommandPreview, NodeList, ServiceList

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

EXIT_FAILED = 1  # a run did not end ok
EXIT_USAGE = 2
SERVICE_ACTIONS = ("list", "status", "start", "stop", "restart", "enable", "disable")
TOKEN_ENV = "SM_TOKEN"


class CliError(Exception):
    """Printed as `servermanager: <message>`, exit 2."""


# ---------------------------------------------------------------- keys


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise CliError("signing needs the cryptography library: pip install 'servermanager[sign]'") from None
    return serialization


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM (PKCS#8) or OpenSSH file only its owner can read."""
    serialization = _crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError as exc:
        raise CliError(f"cannot read key file {p}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if os.name == "posix" and st.st_mode & 0o077:
            mode = stat.S_IMODE(st.st_mode)
            raise CliError(
                f"key file {p} is readable by group or others (mode {mode:04o}); fix with: chmod 600 {p}"
            )
        data = fh.read()
    try:
        if b"BEGIN OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CliError(
            f"key file {p} is encrypted; signing takes an unencrypted key file (mode 0600)"
        ) from None
    except ValueError as exc:
        raise CliError(f"key file {p} is not a private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CliError(f"key file {p} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_raw(key: Ed25519PrivateKey) -> bytes:
    serialization = _crypto()
    raw: bytes = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def default_comment() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "operator"
    return f"{user}@{socket.gethostname()}"


def generate_key_file(out: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """A new key pair; the private key written to `out` (PEM, mode 0600, never over a file)."""
    serialization = _crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    p = Path(out)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CliError(f"{p} exists; not overwriting a key file") from None
    except OSError as exc:
        raise CliError(f"cannot write {p}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "wb") as fh:
        if os.name == "posix":
            os.fchmod(fh.fileno(), 0o600)
        fh.write(pem)
    return key


def sign_command(key: Ed25519PrivateKey, cmd: Command, node_id: int, lifetime: float) -> CommandSignature:
    """The signature block of `cmd` for `node_id`, valid for `lifetime` seconds."""
    block = signing.signature_block(node_id, signing.key_id(public_raw(key)), lifetime=lifetime)
    sig = key.sign(signing.signed_bytes(cmd, block))
    return msgspec.structs.replace(block, sig=signing.encode_sig(sig))


# ---------------------------------------------------------------- what to sign


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise CliError(f"--env {pair!r}: expected NAME=VALUE")
        env[name] = value
    return env


def command_from_args(args: argparse.Namespace, command_id: str) -> Command:
    """The Command the core will build from the request: the one that is signed."""
    env = parse_env(args.env or [])
    if args.service:
        action, *rest = args.service
        if action not in SERVICE_ACTIONS or len(rest) > 1 or (action != "list") != bool(rest):
            raise CliError(
                "--service takes ACTION NAME (start, stop, restart, enable, disable, status) or list"
            )
        if args.argv or args.shell is not None or env or args.cwd:
            raise CliError("--service takes no command, --shell, --env or --cwd")
        timeout = 30.0 if args.timeout is None else args.timeout
        return Command(
            command_id=command_id,
            timeout=timeout,
            service=ServiceRequest(action=action, name=rest[0] if rest else None),
        )
    timeout = 60.0 if args.timeout is None else args.timeout
    if args.shell is not None:
        if args.argv:
            raise CliError("give either --shell TEXT or an argv after --, not both")
        return Command(command_id=command_id, timeout=timeout, shell=args.shell, env=env, cwd=args.cwd)
    if not args.argv:
        raise CliError("nothing to run: give an argv after --, --shell TEXT or --service ACTION NAME")
    return Command(command_id=command_id, timeout=timeout, argv=list(args.argv), env=env, cwd=args.cwd)


def lifetime(args: argparse.Namespace) -> float:
    """How long the signatures stay valid: a queued command's expiry, else --lifetime."""
    seconds = float(args.expires_in if getattr(args, "queue_offline", False) else args.lifetime)
    if not 0 < seconds <= signing.MAX_LIFETIME:
        raise CliError(f"signatures last more than 0 and at most {signing.MAX_LIFETIME // 86400} days")
    return seconds


def command_body(
    cmd: Command, signatures: dict[int, CommandSignature], args: argparse.Namespace
) -> dict[str, Any]:
    """The POST /api/v1/commands body of a signed command."""
    body: dict[str, Any] = {
        "id": cmd.command_id,
        "targets": {"nodes": sorted(signatures)},
        "command": cmd.shell if cmd.shell is not None else cmd.argv,
        "timeout": cmd.timeout,
        "env": cmd.env,
        "signatures": {str(n): msgspec.to_builtins(s) for n, s in sorted(signatures.items())},
    }
    if cmd.cwd is not None:
        body["cwd"] = cmd.cwd
    if getattr(args, "queue_offline", False):
        body.update(queue_offline=True, expires_in=args.expires_in)
    return body


def service_body(
    cmd: Command, signatures: dict[int, CommandSignature], args: argparse.Namespace
) -> dict[str, Any]:
    """The POST /api/v1/services body of a signed service action on several nodes."""
    assert cmd.service is not None
    body: dict[str, Any] = {
        "id": cmd.command_id,
        "targets": {"nodes": sorted(signatures)},
        "action": cmd.service.action,
        "timeout": cmd.timeout,
        "signatures": {str(n): msgspec.to_builtins(s) for n, s in sorted(signatures.items())},
    }
    if cmd.service.name is not None:
        body["name"] = cmd.service.name
    if getattr(args, "queue_offline", False):
        body.update(queue_offline=True, expires_in=args.expires_in)
    return body


def service_path(cmd: Command, node_id: int, sig: CommandSignature) -> str:
    """The path and query of a signed service request (GET for list, POST otherwise)."""
    assert cmd.service is not None
    query = urllib.parse.urlencode(
        {
            "timeout": repr(cmd.timeout),
            "id": cmd.command_id,
            "key_id": sig.key_id,
            "nonce": sig.nonce,
            "expires_at": str(sig.expires_at),
            "sig": sig.sig,
        }
    )
    base = f"/api/v1/nodes/{node_id}/services"
    if cmd.service.action != "list":
        base += f"/{urllib.parse.quote(cmd.service.name or '', safe='')}/{cmd.service.action}"
    return f"{base}?{query}"


# ---------------------------------------------------------------- the core's REST API


class Core:
    """Blocking REST calls to a core with a bearer token (the standard library's HTTP client)."""

    def __init__(self, url: str, token: str, cafile: str | None = None, timeout: float = 30.0) -> None:
        url = url.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        self.url = url
        self.token = token
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=cafile) if url.startswith("https:") else None
        # Straight to the core, whatever proxy the environment names (as curl --noproxy would).
        handlers: list[Any] = [urllib.request.ProxyHandler({})]
        if self.context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self.context))
        self.opener = urllib.request.build_opener(*handlers)

    def call(self, method: str, path: str, body: Any = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                payload: bytes = response.read()
                return payload
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace")[:300] or exc.reason
            raise CliError(f"{method} {path.split('?')[0]}: HTTP {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach the core at {self.url}: {reason}") from None

    def get(self, path: str, type: type[Any]) -> Any:
        return msgspec.json.decode(self.call("GET", path), type=type)


def resolve(nodes: list[NodeInfo], args: argparse.Namespace) -> list[NodeInfo]:
    """The nodes the targets name, as the core resolves them (ids, group, tag or all)."""
    by_id = {n.id: n for n in nodes}
    chosen: dict[int, NodeInfo] = dict(by_id) if args.all else {}
    for nid in args.node or []:
        if nid not in by_id:
            raise CliError(f"no node with id {nid}")
        chosen[nid] = by_id[nid]
    if args.group is not None:
        chosen.update({n.id: n for n in nodes if n.group == args.group})
    if args.tag is not None:
        chosen.update({n.id: n for n in nodes if args.tag in n.tags})
    if not chosen:
        raise CliError("the targets match no node")
    return [chosen[k] for k in sorted(chosen)]


def token_from(args: argparse.Namespace) -> str:
    token = args.token or os.environ.get(TOKEN_ENV, "")
    if not token.strip():
        raise CliError(f"no API token: set {TOKEN_ENV} (or --token, which other users can see in ps)")
    return token.strip()


# ---------------------------------------------------------------- subcommands


def cmd_keys_generate(args: argparse.Namespace) -> int:
    key = generate_key_file(args.out)
    line = signing.public_key_line(public_raw(key), args.comment or default_comment())
    print(line)
    print(
        f"private key written to {args.out} (mode 0600). Trust it on an agent by adding the line above "
        "to its [exec] trusted_keys (or to its trusted_keys_file).",
        file=sys.stderr,
    )
    return 0


def cmd_keys_public(args: argparse.Namespace) -> int:
    key = load_private_key(args.key)
    print(signing.public_key_line(public_raw(key), args.comment or default_comment()))
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """Print what to send: the POST /commands body, or the path and query of a service request."""
    key = load_private_key(args.key)
    cmd = command_from_args(args, args.id or signing.new_command_id())
    if cmd.service is not None:
        if len(args.node) != 1:
            raise CliError("a service request is for one node: give exactly one --node")
        sig = sign_command(key, cmd, args.node[0], lifetime(args))
        print(service_path(cmd, args.node[0], sig))
        return 0
    signatures = {n: sign_command(key, cmd, n, lifetime(args)) for n in dict.fromkeys(args.node)}
    print(json.dumps(command_body(cmd, signatures, args), indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Resolve the targets, sign for each node, start the command, wait and print the results."""
    key = load_private_key(args.key)
    core = Core(args.core, token_from(args), args.cafile)
    cmd = command_from_args(args, signing.new_command_id())
    nodes = resolve(core.get("/api/v1/nodes", NodeList).nodes, args)
    names = {n.id: n.name for n in nodes}
    if args.dry_run:
        return dry_run(core, key, cmd, nodes, args)
    if cmd.service is not None and cmd.service.action == "list" and len(nodes) != 1:
        raise CliError(f"a service list is for one node; the targets match {len(nodes)}")
    if cmd.service is not None and len(nodes) == 1:
        sig = sign_command(key, cmd, nodes[0].id, lifetime(args))
        path = service_path(cmd, nodes[0].id, sig)
        if cmd.service.action == "list":
            listing = msgspec.json.decode(core.call("GET", path), type=ServiceList)
            for s in listing.services:
                print(f"{s.name}\t{s.active}\t{s.enabled or '-'}\t{s.description}")
            return 0
        info = msgspec.json.decode(core.call("POST", path), type=CommandInfo)
        return report(info, names)
    signatures = {n.id: sign_command(key, cmd, n.id, lifetime(args)) for n in nodes}
    if cmd.service is not None:  # one action on many nodes: POST /services, answered like a command
        body, path = service_body(cmd, signatures, args), "/api/v1/services"
    else:
        body, path = command_body(cmd, signatures, args), "/api/v1/commands"
    info = msgspec.json.decode(core.call("POST", path, body), type=CommandInfo)
    if args.no_wait or args.queue_offline:
        print(f"command {info.id} started on {len(info.runs)} node(s)")
        return 0
    deadline = time.monotonic() + cmd.timeout + 30
    while info.status == "running" and time.monotonic() < deadline:
        time.sleep(args.poll)
        info = core.get(f"/api/v1/commands/{info.id}", CommandInfo)
    return report(info, names)


def dry_run(
    core: Core, key: Ed25519PrivateKey, cmd: Command, nodes: list[NodeInfo], args: argparse.Namespace
) -> int:
    """Ask the core's preview who would run the signed request; EXIT_FAILED if any node would refuse."""
    signatures = {n.id: sign_command(key, cmd, n.id, lifetime(args)) for n in nodes}
    if cmd.service is not None:
        body, path = service_body(cmd, signatures, args), "/api/v1/services/preview"
    else:
        body, path = command_body(cmd, signatures, args), "/api/v1/commands/preview"
    preview = msgspec.json.decode(core.call("POST", path, body), type=CommandPreview)
    for run in preview.runs:
        print(f"{run.name} [{run.node_id}]\t{run.verdict}" + (f"\t{run.reason}" if run.reason else ""))
    print(
        f"{preview.run} would run, {preview.queue} queued, {preview.refused} refused, {preview.unknown} unknown "
        f"(matched as: {preview.line})",
        file=sys.stderr,
    )
    return EXIT_FAILED if preview.refused else 0


def report(info: CommandInfo, names: dict[int, str]) -> int:
    """Each node's output and outcome; EXIT_FAILED unless every run ended ok."""
    failed = False
    for run in info.runs:
        name = names.get(run.node_id, f"node {run.node_id}")
        how = run.status
        if run.exit_code is not None:
            how += f" (exit {run.exit_code})"
        if run.signal is not None:
            how += f" (signal {run.signal})"
        if run.message:
            how += f": {run.message}"
        print(f"== {name} [{run.node_id}] {how}")
        if run.stdout:
            print(run.stdout, end="" if run.stdout.endswith("\n") else "\n")
        if run.stderr:
            print(run.stderr, end="" if run.stderr.endswith("\n") else "\n", file=sys.stderr)
        failed = failed or run.status != "ok"
    return EXIT_FAILED if failed or info.status == "running" else 0


def main(fn: str, args: argparse.Namespace) -> int:
    try:
        result: int = globals()[fn](args)
        return result
    except CliError as exc:
        print(f"servermanager: {exc}", file=sys.stderr)
        return EXIT_USAGE
