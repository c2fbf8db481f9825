"""`servermanager agent` flags and entry; light to import, so the top-level CLI can always build its parser."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

EXIT_FATAL = 2

# Standard-library modules that the agent's libraries import at their top but, as the agent uses
# them, never touch. websockets.version imports importlib.metadata (email, zipfile, csv: 2.4 MB of
# RSS) for unreleased builds only; websockets.proxy imports urllib.request (http.client and more:
# 0.5 MB) for a proxy lookup that the agent makes only when a proxy is configured.
DEFERRED_MODULES = ("importlib.metadata", "urllib.request")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `servermanager agent` flags, for the top-level CLI to reuse."""
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
        "--state-dir", metavar="DIR", help="credential and spool dir (env SM_AGENT_STATE_DIR)"
    )
    parser.add_argument(
        "--interval", metavar="SECONDS", help="sample interval, e.g. 5 or 5s (env SM_AGENT_INTERVAL)"
    )


class _Deferred(types.ModuleType):
    """Holds a module's place in sys.modules until something reads one of its attributes.

    The stdlib LazyLoader cannot do this job on Python 3.11: the import statement itself reads the
    lazy module's __spec__, which loads it. This placeholder has a __spec__ of its own (None).
    """

    def __getattr__(self, attr: str) -> Any:
        return getattr(_materialize(self), attr)


_deferred_lock = threading.Lock()


def _materialize(stub: _Deferred) -> types.ModuleType:
    """Import the real module in the placeholder's stead, and copy it into the placeholder."""
    with _deferred_lock:
        name = stub.__name__
        if sys.modules.get(name) is stub:
            del sys.modules[name]
            # Sets the parent package's attribute to the real module too, as any import does.
            real = importlib.import_module(name)
            # Whoever bound the placeholder (`from a import b`) now reads the real contents.
            stub.__dict__.update({k: v for k, v in real.__dict__.items() if k != "__getattr__"})
        return sys.modules[name]


def defer_imports(names: Sequence[str] = DEFERRED_MODULES) -> None:
    """Import each module on its first attribute access rather than when a library imports it.

    A module that is already imported, or that cannot be found, is left as it is; whatever does use
    a deferred module gets it whole at that moment.
    """
    for name in names:
        if name in sys.modules or importlib.util.find_spec(name) is None:
            continue
        stub = _Deferred(name)
        sys.modules[name] = stub
        parent, _, child = name.rpartition(".")
        if parent:
            # `import a.b` binds a and later reads a.b: the parent holds it, as after a real import.
            setattr(sys.modules[parent], child, stub)


def run_from_args(args: argparse.Namespace) -> int:
    """Load settings from file, environment and the parsed flags, then main()."""
    defer_imports()
    # Imported here: psutil and websockets are only needed once the agent really runs.
    from servermanager.agent.main import main
    from servermanager.agent.settings import enroll_token_from, load_agent_settings
    from servermanager.common.settings import SettingsError

    try:
        settings = load_agent_settings(
            config_file=args.config,
            overrides={"core": args.core, "state_dir": args.state_dir, "interval": args.interval},
        )
    except SettingsError as exc:
        print(f"servermanager agent: {exc}", file=sys.stderr)
        return EXIT_FATAL
    return main(settings, enroll_token_from(args.enroll_token))


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="servermanager agent", description="Run the Server Manager agent.")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
