"""[hardware]: NVML through a typed fake, smartctl's JSON parsed, and the clean skips (no library, no
driver, no smartctl, no SMART disk) with the reason the node view shows."""

from __future__ import annotations

import json
import shutil
from typing import Any, NamedTuple

import pytest

from servermanager.agent.hardware import (
    HardwareSettings,
    HardwareWatcher,
    parse_scan,
    parse_smart,
    read_gpus,
    read_smart,
)
from servermanager.common.metrics import DiskHealth, GpuInfo
from servermanager.common.settings import SettingsError


class FakeNVMLError(Exception):
    pass


class Util(NamedTuple):
    gpu: int
    memory: int


class Mem(NamedTuple):
    total: int
    free: int
    used: int


class FakeNvml:
    """The pynvml calls read_gpus makes, over a list of cards; `driver=False` fails nvmlInit as
    pynvml does without a driver (NVMLError_LibraryNotFound / DriverNotLoaded)."""

    NVML_TEMPERATURE_GPU = 0
    NVMLError = FakeNVMLError

    def __init__(self, cards: list[dict[str, Any]], driver: bool = True) -> None:
        self.cards = cards
        self.driver = driver
        self.open = False

    def nvmlInit(self) -> None:
        if not self.driver:
            raise FakeNVMLError("Driver Not Loaded")
        self.open = True

    def nvmlShutdown(self) -> None:
        self.open = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return self.cards[index]

    def nvmlDeviceGetName(self, handle: Any) -> str | bytes:
        return handle["name"]

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        return Util(handle["util"], 0)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any:
        return Mem(handle["total"], handle["total"] - handle["used"], handle["used"])

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        return int(handle["temp"])

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        if handle.get("power") is None:
            raise FakeNVMLError("Not Supported")  # consumer cards refuse some readings
        return int(handle["power"])


def test_gpus_through_nvml() -> None:
    nvml = FakeNvml(
        [
            {
                "name": b"NVIDIA A100-SXM4-40GB",
                "util": 87,
                "total": 40 << 30,
                "used": 10 << 30,
                "temp": 61,
                "power": 251_234,
            },
            {"name": "NVIDIA GeForce RTX 3060", "util": 3, "total": 12 << 30, "used": 1 << 30, "temp": 40},
        ]
    )
    gpus, note = read_gpus(nvml)
    assert note is None and not nvml.open
    assert gpus == [
        GpuInfo(0, "NVIDIA A100-SXM4-40GB", 87.0, 10 << 30, 40 << 30, 61.0, 251.2),
        GpuInfo(1, "NVIDIA GeForce RTX 3060", 3.0, 1 << 30, 12 << 30, 40.0, None),
    ]
    assert read_gpus(FakeNvml([], driver=False)) == ([], "not present (no NVIDIA driver: Driver Not Loaded)")
    assert read_gpus(FakeNvml([])) == ([], "not present (NVML finds no GPU)")


def test_watcher_says_why_without_the_library() -> None:
    s = HardwareSettings(smart=False)
    s.validate()
    hw = HardwareWatcher(s, nvml="nvidia-ml-py is not installed (the agent's `gpu` extra)").read()
    assert (
        hw.gpus == [] and hw.gpu_note == "not read: nvidia-ml-py is not installed (the agent's `gpu` extra)"
    )
    assert hw.smart_note == "off in this agent's config ([hardware] smart = false)"
    on = HardwareWatcher(
        HardwareSettings(smart=False),
        nvml=FakeNvml([{"name": "T4", "util": 1, "total": 1, "used": 0, "temp": 30}]),
    )
    assert on.read().gpus[0].name == "T4" and on.take() is not None and on.take() is None


# smartctl 7.3 --json -a output, cut to what is read (the layout of smartmontools' JSON format 1.0).
SATA_OK = {
    "json_format_version": [1, 0],
    "smartctl": {"version": [7, 3], "argv": ["smartctl", "--json", "-a", "/dev/sda"], "exit_status": 0},
    "device": {"name": "/dev/sda", "info_name": "/dev/sda [SAT]", "type": "sat", "protocol": "ATA"},
    "model_name": "Samsung SSD 870 EVO 1TB",
    "smart_status": {"passed": True},
    "temperature": {"current": 31},
    "power_on_time": {"hours": 12873},
}
NVME_FAILING = {
    "smartctl": {"version": [7, 3], "exit_status": 8},
    "device": {"name": "/dev/nvme0", "type": "nvme", "protocol": "NVMe"},
    "model_name": "INTEL SSDPEKNW010T8",
    "smart_status": {"passed": False, "nvme": {"value": 4}},
    "nvme_smart_health_information_log": {"temperature": 36, "power_on_hours": 2401},
    "temperature": {"current": 36},
    "power_on_time": {"hours": 2401},
}
# Captured on this machine kind: a virtio disk, which smartctl cannot even classify.
VIRTIO = {
    "json_format_version": [1, 0],
    "smartctl": {
        "version": [7, 3],
        "svn_revision": "5338",
        "argv": ["smartctl", "--json", "-a", "/dev/vda"],
        "messages": [{"string": "/dev/vda: Unable to detect device type", "severity": "error"}],
        "exit_status": 1,
    },
    "local_time": {"time_t": 1796042804, "asctime": "Mon Nov 30 12:46:44 2026 UTC"},
}


def test_smart_json_parsed() -> None:
    assert parse_smart("/dev/sda", SATA_OK) == DiskHealth(
        "/dev/sda", "Samsung SSD 870 EVO 1TB", True, 31.0, 12873
    )
    bad = parse_smart("/dev/nvme0", NVME_FAILING)
    assert bad.passed is False and bad.power_on_hours == 2401 and bad.note is None
    vda = parse_smart("/dev/vda", VIRTIO)
    assert vda.passed is None and vda.note == "/dev/vda: Unable to detect device type"
    assert parse_smart("/dev/x", None).note == "smartctl printed no JSON"
    scan = {
        "devices": [{"name": "/dev/sda", "type": "sat"}, {"name": "/dev/nvme0", "type": "nvme"}, {"bogus": 1}]
    }
    assert parse_scan(scan) == [("/dev/sda", "sat"), ("/dev/nvme0", "nvme")]


def test_read_smart_runs_smartctl_per_scanned_disk() -> None:
    calls: list[list[str]] = []

    def run(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        if "--scan-open" in argv:
            return 0, json.dumps({"devices": [{"name": "/dev/sda", "type": "sat"}]})
        return 0, json.dumps(SATA_OK)

    disks, note = read_smart([], "/usr/sbin/smartctl", run)
    assert note is None and disks[0].passed is True
    assert calls[1] == ["/usr/sbin/smartctl", "--json", "-a", "-d", "sat", "/dev/sda"]
    assert read_smart([], None, run) == ([], "smartctl not installed (smartmontools)")


@pytest.mark.skipif(shutil.which("smartctl") is None, reason="smartctl is not installed (smartmontools)")
def test_real_smartctl_skips_cleanly_without_smart_disks() -> None:
    # This machine kind has only virtio disks, which have no SMART: the reading must say so, not fail.
    disks, note = read_smart([], shutil.which("smartctl"))
    if disks:
        pytest.skip("this host has SMART disks: the clean skip cannot be shown here")
    assert note is not None and ("no disk with SMART" in note or "needs root" in note)


def test_bad_settings_are_refused() -> None:
    for over, message in (
        ({"interval": 1.0}, "hardware.interval"),
        ({"smart_devices": ["sda"]}, "not a /dev/ path"),
        ({"smart_devices": ["/dev/../etc/passwd"]}, "not a /dev/ path"),
    ):
        with pytest.raises(SettingsError, match=message):
            HardwareSettings(**over).validate()  # type: ignore[arg-type]
