"""`servermanager agent` flags and entry; light to import, so the top-level CLI can always build its parser."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_FATAL = 2


SERVICE_ACTIONS = ("install-service", "uninstall-service")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `servermanager agent` flags, for the top-level CLI to reuse."""
    parser.add_argument(
        "service",
        nargs="?",
        choices=SERVICE_ACTIONS,
        metavar="install-service|uninstall-service",
        help="instead of running: install (enrolling first, with a token) or remove the agent as a "
        "Windows service or macOS LaunchDaemon, with these flags; on Linux the .deb's systemd unit does it",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (env SM_AGENT_CONFIG)")
    parser.add_argument(
        "--core", metavar="URL", help="core URL, e.g. ws://127.0.0.1:8760 (env SM_AGENT_CORE)"
    )
    parser.add_argument(
        "--enroll-token",
        metavar="TOKEN",
        help="one-time enrollment token; prefer env SM_AGENT_ENROLL_TOKEN (flags are visible in ps)",
    )
    parser.add_argument(
        "--core-fingerprint",
        "--pin",
        metavar="SHA256",
        help="pin of the core's TLS certificate, sha256:... as `servermanager admin fingerprint` prints it; "
        "kept with the credential (env SM_AGENT_CORE_FINGERPRINT)",
    )
    parser.add_argument(
        "--ca-file",
        metavar="FILE",
        help="CA certificate (PEM) the core's certificate is signed by (env SM_AGENT_CA_FILE)",
    )
    parser.add_argument(
        "--state-dir", metavar="DIR", help="credential and spool dir (env SM_AGENT_STATE_DIR)"
    )
    parser.add_argument(
        "--interval", metavar="SECONDS", help="sample interval, e.g. 5 or 5s (env SM_AGENT_INTERVAL)"
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Load settings from file, environment and the parsed flags, then main()."""
    if getattr(args, "service", None):
        from servermanager.agent import service

        return service.run(args.service, args)
    from servermanager.agent.lazyimports import defer_imports

    # Before anything imports the agent's libraries, which import the deferred modules.
    defer_imports()
    # Imported here: psutil and websockets are only needed once the agent really runs.
    from servermanager.agent.main import main
    from servermanager.agent.settings import enroll_token_from, load_agent_settings
    from servermanager.common.settings import SettingsError

    try:
        settings = load_agent_settings(
            config_file=args.config,
            overrides={
                "core": args.core,
                "core_fingerprint": args.core_fingerprint,
                "ca_file": args.ca_file,
                "state_dir": args.state_dir,
                "interval": args.interval,
            },
        )
    except SettingsError as exc:
        print(f"servermanager agent: {exc}", file=sys.stderr)
        return EXIT_FATAL
    return main(settings, enroll_token_from(args.enroll_token))


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="servermanager agent", description="Run the Server Manager agent.")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
