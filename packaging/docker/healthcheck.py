"""The core image's HEALTHCHECK: exit 0 if the core on this container's port says it is ok, else 1."""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.request


def healthy(port: str) -> bool:
    # The core's own certificate over loopback inside its own container: nothing to verify it
    # against (it may be self-signed) and no one in between, so the probe does not check it.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # https first (tls = auto is on when the core listens beyond loopback), then plain http.
    for scheme in ("https", "http"):
        url = f"{scheme}://127.0.0.1:{port}/api/v1/health"
        try:
            with urllib.request.urlopen(url, timeout=4, context=context) as answer:
                return bool(json.load(answer).get("status") == "ok")
        except (OSError, ValueError):
            continue
    return False


if __name__ == "__main__":
    listen = os.environ.get("SM_CORE_LISTEN", "0.0.0.0:8760")
    sys.exit(0 if healthy(listen.rpartition(":")[2]) else 1)
