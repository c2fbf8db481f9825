"""GPUs through NVML and disk health through `smartctl --json`, read now and then in a thread; where
either is missing (no library, no driver, no smartctl, not root) the reading says why instead."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from servermanager.common.metrics import DiskHealth, GpuInfo, Hardware
from servermanager.common.settings import SettingsError

log = logging.getLogger(__name__)

SMARTCTL_TIMEOUT = 20.0  # seconds one smartctl run may take (a sleeping disk is woken by -a)
MAX_DISKS = 64
MAX_GPUS = 16


class HardwareSettings(msgspec.Struct, kw_only=True):
    """The [hardware] table: NVIDIA GPUs and SMART disk health (env SM_AGENT_HARDWARE_<KEY>).

    Read-only. Each part is skipped, with the reason shown in the node view, where its tool is
    absent: NVML (the `gpu` extra, nvidia-ml-py, and an NVIDIA driver) or smartctl (smartmontools,
    and root).
    """

    gpu: bool = True
    smart: bool = True
    smart_devices: list[str] = []
    interval: float = 300.0

    __doc_fields__ = {
        "gpu": "read NVIDIA GPUs through NVML where the library and a driver are present",
        "smart": "read disk health with `smartctl --json -a` where smartctl is installed (needs root)",
        "smart_devices": "the disks to read (/dev/sda, ...); empty: those `smartctl --scan-open` finds",
        "interval": "seconds between two readings (SMART values change slowly; waking disks costs)",
    }

    def validate(self) -> None:
        if not 10 <= self.interval <= 86400:
            raise SettingsError(f"setting hardware.interval must be 10s to 1d (got {self.interval:g}s)")
        devices = [d.strip() for d in self.smart_devices]
        for d in devices:
            if not d.startswith("/dev/") or os.path.normpath(d) != d:
                raise SettingsError(f"setting hardware.smart_devices: {d!r} is not a /dev/ path")
        if len(devices) > MAX_DISKS:
            raise SettingsError(f"setting hardware.smart_devices: at most {MAX_DISKS} disks")
        self.smart_devices = devices

    def watcher(self) -> HardwareWatcher | None:
        return HardwareWatcher(self) if self.gpu or self.smart else None


# ---------------------------------------------------------------- GPU


class Nvml(Protocol):
    """The part of pynvml (nvidia-ml-py) read here; tests pass a typed fake."""

    NVML_TEMPERATURE_GPU: int
    NVMLError: type[Exception]

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...


def load_nvml() -> Nvml | str:
    """pynvml, or why not."""
    try:
        nvml: Nvml = importlib.import_module("pynvml")
        return nvml
    except ImportError:
        return "nvidia-ml-py is not installed (the agent's `gpu` extra)"


def read_gpus(nvml: Nvml) -> tuple[list[GpuInfo], str | None]:
    """Every GPU NVML sees, or none and why (no driver: NVML cannot initialise)."""
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return [], f"not present (no NVIDIA driver: {exc})"
    try:
        count = nvml.nvmlDeviceGetCount()
        if count == 0:
            return [], "not present (NVML finds no GPU)"
        out = []
        for i in range(min(count, MAX_GPUS)):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(h)
            util = mem = temp = power = None
            # Each reading on its own: a consumer card may refuse power or utilisation.
            with contextlib.suppress(nvml.NVMLError):
                util = nvml.nvmlDeviceGetUtilizationRates(h)
            with contextlib.suppress(nvml.NVMLError):
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
            with contextlib.suppress(nvml.NVMLError):
                temp = nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)
            with contextlib.suppress(nvml.NVMLError):
                power = nvml.nvmlDeviceGetPowerUsage(h)  # milliwatts
            out.append(
                GpuInfo(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    util_pct=None if util is None else float(util.gpu),
                    mem_used=None if mem is None else int(mem.used),
                    mem_total=None if mem is None else int(mem.total),
                    temp=None if temp is None else float(temp),
                    power_w=None if power is None else round(power / 1000.0, 1),
                )
            )
        return out, None
    except nvml.NVMLError as exc:
        return [], f"NVML failed: {exc}"
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


# ---------------------------------------------------------------- SMART


def parse_scan(doc: Any) -> list[tuple[str, str | None]]:
    """`smartctl --json --scan-open`: (device, type) of each disk it can open."""
    devices = doc.get("devices") if isinstance(doc, dict) else None
    out = []
    for d in devices if isinstance(devices, list) else []:
        if isinstance(d, dict) and isinstance(d.get("name"), str):
            kind = d.get("type")
            out.append((d["name"], kind if isinstance(kind, str) else None))
    return out[:MAX_DISKS]


def parse_smart(device: str, doc: Any) -> DiskHealth:
    """`smartctl --json -a DEVICE` as one disk's health; an error message of smartctl becomes the note."""
    if not isinstance(doc, dict):
        return DiskHealth(device=device, note="smartctl printed no JSON")
    model = doc.get("model_name") or doc.get("scsi_model_name") or ""
    status = doc.get("smart_status")
    passed = status.get("passed") if isinstance(status, dict) else None
    temp = (doc.get("temperature") or {}).get("current")
    hours = (doc.get("power_on_time") or {}).get("hours")
    note = None
    errors: list[str] = [
        m["string"]
        for m in (doc.get("smartctl") or {}).get("messages") or []
        if isinstance(m, dict) and m.get("severity") == "error" and isinstance(m.get("string"), str)
    ]
    if errors:
        note = "; ".join(errors)[:300]
    elif passed is None:
        note = "no SMART data (the device does not report it)"
    return DiskHealth(
        device=device,
        model=str(model)[:100],
        passed=passed if isinstance(passed, bool) else None,
        temp=float(temp) if isinstance(temp, int | float) and not isinstance(temp, bool) else None,
        power_on_hours=hours if isinstance(hours, int) and not isinstance(hours, bool) else None,
        note=note,
    )


Run = Callable[[list[str]], tuple[int, str]]


def run_smartctl(argv: list[str]) -> tuple[int, str]:
    """smartctl's exit status and stdout; never a shell, bounded in time."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=SMARTCTL_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return -1, ""
    return done.returncode, done.stdout


def read_smart(
    devices: list[str], exe: str | None, run: Run = run_smartctl
) -> tuple[list[DiskHealth], str | None]:
    """Each disk's health, or none and why."""
    if exe is None:
        return [], "smartctl not installed (smartmontools)"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return [], "smartctl needs root; this agent runs as another user"
    targets: list[tuple[str, str | None]] = [(d, None) for d in devices]
    if not targets:
        code, out = run([exe, "--json", "--scan-open"])
        try:
            targets = parse_scan(json.loads(out))
        except ValueError:
            return [], f"smartctl --scan-open failed (exit {code})"
        if not targets:
            return [], "no disk with SMART found (smartctl --scan-open lists none: virtual disks have none)"
    out_list = []
    for dev, kind in targets:
        argv = [exe, "--json", "-a", *(["-d", kind] if kind else []), dev]
        code, text = run(argv)
        if code == -1:
            out_list.append(DiskHealth(device=dev, note=f"smartctl took over {SMARTCTL_TIMEOUT:g}s"))
            continue
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        out_list.append(parse_smart(dev, doc))
    return out_list, None


# ---------------------------------------------------------------- the watcher


class HardwareWatcher:
    """Reads GPUs and SMART every `interval` in a thread; `take()` hands a new reading once."""

    def __init__(self, settings: HardwareSettings, nvml: Nvml | str | None = None) -> None:
        self.settings = settings
        self._nvml = nvml
        self._lock = threading.Lock()
        self._fresh: Hardware | None = None
        self.latest: Hardware | None = None
        self.readings = 0

    def take(self) -> Hardware | None:
        with self._lock:
            out, self._fresh = self._fresh, None
        return out

    def read(self) -> Hardware:
        """One reading (blocking: run it in a thread)."""
        s = self.settings
        gpus: list[GpuInfo] = []
        gpu_note: str | None = "off in this agent's config ([hardware] gpu = false)"
        if s.gpu:
            if self._nvml is None:
                self._nvml = load_nvml()
            if isinstance(self._nvml, str):
                gpu_note = f"not read: {self._nvml}"
            else:
                gpus, gpu_note = read_gpus(self._nvml)
        disks: list[DiskHealth] = []
        smart_note: str | None = "off in this agent's config ([hardware] smart = false)"
        if s.smart:
            disks, smart_note = read_smart(s.smart_devices, shutil.which("smartctl"))
        hw = Hardware(gpus=gpus, gpu_note=gpu_note, smart=disks, smart_note=smart_note)
        with self._lock:
            self._fresh = self.latest = hw
        self.readings += 1
        return hw

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.read)
            except Exception as exc:  # a broken driver must not end the agent's other work
                log.warning("hardware reading failed: %r", exc)
            await asyncio.sleep(self.settings.interval)
