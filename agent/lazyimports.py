"""Deferred imports: a placeholder holds a module's place in sys.modules until first attribute use."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

# Standard-library modules that the agent's libraries import at their top but, as the agent uses
# them, never touch. websockets.version imports importlib.metadata (email, zipfile, csv: 2.4 MB of
# RSS) for unreleased builds only; websockets.proxy imports urllib.request (http.client and more:
# 0.5 MB) for a proxy lookup that the agent makes only when a proxy is configured.
DEFERRED_MODULES = ("importlib.metadata", "urllib.request")


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
