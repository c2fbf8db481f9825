"""What the core shows about a host (HostFacts) and this agent's version."""

from __future__ import annotations

import os
import platform
import socket
import sys

import psutil

from servermanager.common import __version__
from servermanager.common.metrics import HostFacts


def agent_version() -> str:
    # Not importlib.metadata: it costs the agent about 1 MB of RSS for one string.
    return __version__


def _cpu_model() -> str:
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    key, sep, value = line.partition(":")
                    # x86 says "model name"; many ARM kernels only say "Hardware" or "Processor".
                    if sep and key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                        return value.strip()
        except OSError:
            pass
    return platform.processor() or platform.machine() or "unknown"


def _os_name_version() -> tuple[str, str]:
    system = platform.system() or sys.platform
    if system == "Linux":
        try:
            rel = platform.freedesktop_os_release()
        except OSError:
            rel = {}
        name = rel.get("NAME") or "Linux"
        version = rel.get("VERSION") or rel.get("VERSION_ID") or rel.get("BUILD_ID") or platform.version()
        return name, version
    if system == "Darwin":
        return "macOS", platform.mac_ver()[0] or platform.release()
    if system == "Windows":
        return "Windows", platform.version()
    return system, platform.version()


def host_facts() -> HostFacts:
    """What the core shows about a host; blocking (reads /proc), so call it via to_thread."""
    os_name, os_version = _os_name_version()
    try:
        boot: float | None = psutil.boot_time()
    except OSError:
        boot = None
    return HostFacts(
        hostname=socket.gethostname() or platform.node() or "unknown",
        os=os_name or "unknown",
        os_version=os_version or "unknown",
        kernel=platform.release() or "unknown",
        arch=platform.machine() or "unknown",
        cpu_model=_cpu_model(),
        cpu_count=psutil.cpu_count() or os.cpu_count() or 1,
        mem_total=int(psutil.virtual_memory().total),
        agent_version=agent_version(),
        boot_time=boot,
    )
