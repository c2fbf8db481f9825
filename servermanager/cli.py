"""The `servermanager` command: its parser and the dispatch to core, agent, desktop, demo and admin."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from servermanager.agent.cli import add_arguments as agent_arguments
from servermanager.common import __version__
from servermanager.common.settings import SettingsError, parse_duration

# Each subcommand imports what it needs when it runs: `servermanager agent` starts here too, and
# every import stays in the agent's RSS.


def cmd_core(args: argparse.Namespace) -> int:
    from servermanager.core.admin import core_settings
    from servermanager.core.runtime import serve

    return serve(core_settings(args))


def cmd_agent(args: argparse.Namespace) -> int:
    from servermanager.agent.cli import run_from_args

    return run_from_args(args)


def cmd_desktop(args: argparse.Namespace) -> int:
    try:
        from servermanager.desktop.main import main as desktop_main
    except ImportError as exc:
        print(f"the desktop app is not available in this install: {exc}", file=sys.stderr)
        return 2
    return int(desktop_main(args))


def cmd_polkit_rule(args: argparse.Namespace) -> int:
    from pathlib import Path

    from servermanager.agent.exec import polkit

    return polkit.main(args.config, user=args.user, install=args.install, rules_dir=Path(args.rules_dir))


def cmd_demo(args: argparse.Namespace) -> int:
    from servermanager.demo import run_demo

    return run_demo(args)


def _admin(name: str) -> Callable[[argparse.Namespace], int]:
    """An admin subcommand, imported from core.admin only when it runs."""

    def run(args: argparse.Namespace) -> int:
        import sqlite3

        from servermanager.core import admin

        try:
            return int(getattr(admin, name)(args))
        except sqlite3.Error as exc:
            # The database cannot be used (PostgreSQL unreachable, a file that is not one): one line.
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def _sign(name: str) -> Callable[[argparse.Namespace], int]:
    """A signing subcommand (keys, sign, run), imported from servermanager.sign only when it runs."""

    def run(args: argparse.Namespace) -> int:
        from servermanager.sign import main

        return main(name, args)

    return run


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _signing_opts(p: argparse.ArgumentParser) -> None:
    """What a signed request is: the command (argv after --, --shell or --service) and its options."""
    p.add_argument("--key", metavar="FILE", required=True, help="your private key file (keys generate)")
    p.add_argument("--shell", metavar="TEXT", help="run TEXT through the agent's shell instead of an argv")
    p.add_argument(
        "--service", nargs="+", metavar="ARG", help="a service request instead: ACTION NAME, or list"
    )
    p.add_argument("--timeout", type=_duration, help="the command's timeout (default 60s; services 30s)")
    p.add_argument("--env", action="append", metavar="NAME=VALUE", help="an environment variable (repeat)")
    p.add_argument("--cwd", metavar="DIR", help="working directory on the node")
    p.add_argument(
        "--lifetime", type=_duration, default=600.0, help="how long the signatures stay valid (default 10m)"
    )
    p.add_argument("argv", nargs="*", help="the command and its arguments, after --")


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="servermanager", description="Server Manager: fleet monitoring and operations"
    )
    ap.add_argument("--version", action="version", version=f"servermanager {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def core_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML config file (env SM_CORE_CONFIG)")
        p.add_argument("--data-dir", help="directory of the core's database")

    p = sub.add_parser("core", help="run the core daemon")
    core_opts(p)
    p.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8760)")
    p.add_argument(
        "--tls",
        choices=["auto", "on", "off"],
        help="HTTPS/WSS: auto (default) unless listening on loopback only; off only behind a TLS proxy",
    )
    p.add_argument(
        "--database",
        metavar="URL",
        help="sqlite (default: the data dir's file) or postgresql://USER@HOST:PORT/DBNAME (env SM_CORE_DATABASE)",
    )
    p.add_argument(
        "--bus",
        help="local (default) or a redis:// URL shared by several cores serving one fleet (env SM_CORE_BUS)",
    )
    p.set_defaults(fn=cmd_core)

    p = sub.add_parser("agent", help="run the agent daemon")
    agent_arguments(p)
    p.set_defaults(fn=cmd_agent)

    p = sub.add_parser(
        "polkit-rule",
        help="print (or --install) the polkit rule that lets the agent's user start, stop and restart "
        "the services its [exec] allow list names",
    )
    p.add_argument("--config", metavar="FILE", help="the agent's TOML settings file (env SM_AGENT_CONFIG)")
    p.add_argument("--user", default="servermanager-agent", help="the agent's user (default %(default)s)")
    p.add_argument(
        "--install",
        action="store_true",
        help="write it into polkit's rules dir (as root) instead of printing",
    )
    p.add_argument("--rules-dir", default="/etc/polkit-1/rules.d", help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_polkit_rule)

    p = sub.add_parser("desktop", help="open the desktop app")
    p.add_argument("--core", help="core URL to connect to")
    p.add_argument("--demo-login", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--self-test",
        action="store_true",
        help="open the main window offscreen, then quit: exit 0 when this install can run the app",
    )
    p.set_defaults(fn=cmd_desktop)

    p = sub.add_parser("demo", help="core, a local agent and the desktop app on a throwaway data dir")
    p.add_argument("--listen", default="127.0.0.1:8760")
    p.add_argument("--data-dir", help="keep the demo's data here instead of a temporary dir")
    p.add_argument("--no-desktop", action="store_true", help="do not open the desktop app")
    p.set_defaults(fn=cmd_demo)

    keys = sub.add_parser("keys", help="operator signing keys for signed commands").add_subparsers(
        dest="keys", required=True
    )
    p = keys.add_parser("generate", help="a new key pair: the private key to FILE, the public line printed")
    p.add_argument("--out", metavar="FILE", required=True, help="where the private key goes (mode 0600)")
    p.add_argument("--comment", help="the name after the public key (default user@host)")
    p.set_defaults(fn=_sign("cmd_keys_generate"))
    p = keys.add_parser("public", help="print the public key line of a private key file")
    p.add_argument("key", metavar="FILE")
    p.add_argument("--comment", help="the name after the public key (default user@host)")
    p.set_defaults(fn=_sign("cmd_keys_public"))

    p = sub.add_parser(
        "sign", help="sign a command for nodes: prints the POST /api/v1/commands body (or a service URL)"
    )
    _signing_opts(p)
    p.add_argument("--node", type=int, action="append", required=True, help="a target node id (repeat)")
    p.add_argument("--id", help="the command id to sign (default: a new random one)")
    p.add_argument("--queue-offline", action="store_true", help="let the core hold it for offline nodes")
    p.add_argument("--expires-in", type=_duration, default=3600.0, help="with --queue-offline (default 1h)")
    p.set_defaults(fn=_sign("cmd_sign"))

    p = sub.add_parser("run", help="sign and run a command on nodes through a core, print each node's result")
    _signing_opts(p)
    p.add_argument("--core", metavar="URL", required=True, help="the core, e.g. https://core.example:8760")
    p.add_argument("--token", help="API token (prefer env SM_TOKEN: flags are visible in ps)")
    p.add_argument("--cafile", metavar="FILE", help="CA certificate(s) to verify an https core with")
    p.add_argument("--node", type=int, action="append", help="a target node id (repeat)")
    p.add_argument("--group", help="every node of this group")
    p.add_argument("--tag", help="every node with this tag")
    p.add_argument("--all", action="store_true", help="every node")
    p.add_argument("--queue-offline", action="store_true", help="hold it for offline nodes (does not wait)")
    p.add_argument("--expires-in", type=_duration, default=3600.0, help="with --queue-offline (default 1h)")
    p.add_argument("--no-wait", action="store_true", help="print the command id and return")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="run nothing: print which nodes would run it, and which would refuse and why",
    )
    p.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(fn=_sign("cmd_run"))

    adm = sub.add_parser("admin", help="administer the core's data dir").add_subparsers(
        dest="admin", required=True
    )
    p = adm.add_parser("create-user", help="create a user; the password comes from stdin or a prompt")
    core_opts(p)
    p.add_argument("name")
    p.add_argument("--role", choices=["admin", "operator", "viewer"], required=True)
    p.set_defaults(fn=_admin("cmd_create_user"))
    p = adm.add_parser("enroll-token", help="print a new agent enrollment token")
    core_opts(p)
    p.add_argument("--ttl", type=_duration, default="1h", help="lifetime, e.g. 30m, 1h, 7d")
    p.add_argument("--uses", type=int, default=1, help="how many agents may enroll with it")
    p.add_argument(
        "--core-host",
        help="the core's name as agents reach it, for the printed command (default: --listen's)",
    )
    p.set_defaults(fn=_admin("cmd_enroll_token"))
    p = adm.add_parser(
        "fingerprint",
        aliases=["tls-fingerprint"],
        help="print the fingerprint (sha256:...) of the core's TLS certificate, for agents to pin",
    )
    core_opts(p)
    p.set_defaults(fn=_admin("cmd_fingerprint"))
    p = adm.add_parser("api-token", help="print a long-lived API token for scripts")
    core_opts(p)
    p.add_argument("name")
    p.add_argument("--role", choices=["admin", "operator", "viewer"], required=True)
    p.set_defaults(fn=_admin("cmd_api_token"))
    p = adm.add_parser("passwd", help="set a user's password (from stdin or a prompt); signs them out")
    core_opts(p)
    p.add_argument("name")
    p.add_argument("--temporary", action="store_true", help="the user must change it at the next sign-in")
    p.set_defaults(fn=_admin("cmd_passwd"))
    p = adm.add_parser("users", help="list users with role, state and two-factor")
    core_opts(p)
    p.set_defaults(fn=_admin("cmd_users"))
    p = adm.add_parser("set-role", help="change a user's role (takes effect at once)")
    core_opts(p)
    p.add_argument("name")
    p.add_argument("role", choices=["admin", "operator", "viewer"])
    p.set_defaults(fn=_admin("cmd_set_role"))
    for verb, what in (
        ("disable", "disable a user: signed out everywhere at once"),
        ("enable", "enable a disabled user"),
    ):
        p = adm.add_parser(verb, help=what)
        core_opts(p)
        p.add_argument("name")
        p.set_defaults(fn=_admin(f"cmd_{verb}"))
    p = adm.add_parser("reset-2fa", help="turn a user's two-factor sign-in off (lost authenticator)")
    core_opts(p)
    p.add_argument("name")
    p.set_defaults(fn=_admin("cmd_reset_2fa"))
    p = adm.add_parser("delete-user", help="delete a user and every token of theirs")
    core_opts(p)
    p.add_argument("name")
    p.set_defaults(fn=_admin("cmd_delete_user"))
    p = adm.add_parser("tokens", help="list live tokens (never their secrets) and enrollment tokens")
    core_opts(p)
    p.add_argument("--user", help="only this user's")
    p.set_defaults(fn=_admin("cmd_tokens"))
    p = adm.add_parser("revoke", help="revoke a token (a whole sign-in) or an enrollment token by its id")
    core_opts(p)
    p.add_argument("id")
    p.set_defaults(fn=_admin("cmd_revoke"))
    p = adm.add_parser("backup", help="online backup of the database to FILE")
    core_opts(p)
    p.add_argument("file")
    p.set_defaults(fn=_admin("cmd_backup"))
    p = adm.add_parser(
        "restore", help="restore the database from FILE (refused while a core runs; keeps the old one)"
    )
    core_opts(p)
    p.add_argument("file")
    p.set_defaults(fn=_admin("cmd_restore"))
    p = adm.add_parser(
        "migrate",
        help="copy the data dir's SQLite database into PostgreSQL and verify the row counts "
        "(refused while a core uses the data dir)",
    )
    core_opts(p)
    p.add_argument(
        "--to", metavar="URL", required=True, help="postgresql://USER@HOST:PORT/DBNAME (an existing database)"
    )
    p.add_argument("--force", action="store_true", help="replace the rows a non-empty target holds")
    p.set_defaults(fn=_admin("cmd_migrate"))
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except SettingsError as exc:
        print(f"servermanager: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
