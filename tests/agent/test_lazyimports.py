"""Deferred imports: a placeholder until the first attribute read, then the real module in its place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# Deferral in a fresh interpreter: the test process has long imported everything for real.
DEFERRAL = """
import importlib, json, sys
from servermanager.agent.lazyimports import defer_imports

already = sys.modules["json"]
defer_imports(["importlib.metadata", "urllib.request", "json", "no_such_module_here"])
out = {"json_kept": sys.modules["json"] is already, "unknown_absent": "no_such_module_here" not in sys.modules}
import importlib.metadata          # the import statement alone must not load it
import urllib.request
out["after_import"] = [m in sys.modules for m in ("email", "http.client")]
stub = importlib.metadata
from importlib.metadata import version   # the first attribute read loads it whole
out["version"] = version("msgspec")
out["email_loaded"] = "email" in sys.modules
out["real_in_place"] = type(sys.modules["importlib.metadata"]).__name__ == "module"
out["parent_has_real"] = importlib.metadata is sys.modules["importlib.metadata"]
out["stub_sees_real"] = stub.version is version
out["proxies"] = urllib.request.getproxies()
print(json.dumps(out))
"""


def test_deferred_modules_load_on_first_attribute_read() -> None:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["https_proxy"] = "http://proxy.invalid:3128"
    done = subprocess.run(
        [sys.executable, "-c", DEFERRAL], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    import msgspec

    assert json.loads(done.stdout) == {
        "json_kept": True,
        "unknown_absent": True,
        "after_import": [False, False],
        "version": msgspec.__version__,
        "email_loaded": True,
        "real_in_place": True,
        "parent_has_real": True,
        "stub_sees_real": True,
        "proxies": {"https": "http://proxy.invalid:3128"},
    }
