"""Host readings from psutil, one collector per metric family, combined and rounded into Metrics."""

from __future__ import annotations

import logging
import math
import os
import re
import select
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

import msgspec
import psutil

from servermanager.agent.processes import ProcessCollector
from servermanager.agent.rates import RateTracker
from servermanager.common.metrics import (
    FIELDS,
    MAX_DISK_IO,
    Battery,
    ContainerInfo,
    DiskIO,
    DiskUsage,
    Field,
    Hardware,
    Metrics,
    MetricsBase,
    NetIface,
    ProcInfo,
    Temperature,
)

log = logging.getLogger(__name__)

Clock = Callable[[], float]
T = TypeVar("T")
ScalarCollector = Callable[[], float | None]

# Collectors of the metric table's rows that are not built-in fields of MetricsBase, by row name.
# Such a row is an optional float field of Metrics already (common.metrics), so adding a scalar
# metric is its row in FIELDS plus its entry here. Each runs once per sample, like an optional
# family: one that fails is logged once and its value sent as None.
SCALAR_COLLECTORS: dict[str, ScalarCollector] = {}

# File systems that never hold user data or are always "100% full" by design (snap squashfs, ISO
# images); reporting them would make disk_pct, the fullest mount, permanently alarming.
PSEUDO_FSTYPES = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fuse.lxcfs",
        "fuse.snapfuse",
        "fusectl",
        "hugetlbfs",
        "iso9660",
        "mqueue",
        "nsfs",
        "nullfs",
        "overlay",
        "proc",
        "pstore",
        "ramfs",
        "securityfs",
        "squashfs",
        "sysfs",
        "tmpfs",
        "tracefs",
        "udf",
    }
)
# macOS mounts every APFS volume of the system container; they share one pool of space, so only
# the root and the data volume say anything an operator can act on.
_MAC_KEEP = ("/", "/System/Volumes/Data")


class CpuReading(NamedTuple):
    pct: float
    per_core: list[float]


def _busy_and_total(times: Any) -> tuple[float, float]:
    """psutil's own accounting: guest time is already inside user/nice, iowait is idle time."""
    total = float(sum(times))
    if sys.platform.startswith("linux"):
        total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    busy = total - times.idle - getattr(times, "iowait", 0.0)
    return busy, total


def _cpu_pct(before: Any, after: Any) -> float:
    # Each field is clamped at zero like psutil does: Linux iowait is known to step backwards.
    deltas = type(after)(*(max(0.0, a - b) for a, b in zip(after, before, strict=True)))
    busy, total = _busy_and_total(deltas)
    if total <= 0:
        return 0.0
    return min(100.0, max(0.0, busy / total * 100.0))


class LinuxCpuTimes(NamedTuple):
    """One line of /proc/stat in seconds, with psutil's field names (scputimes on Linux)."""

    user: float
    nice: float
    system: float
    idle: float
    iowait: float
    irq: float
    softirq: float
    steal: float
    guest: float
    guest_nice: float


def _linux_cpu_times(path: str) -> tuple[LinuxCpuTimes, list[LinuxCpuTimes]]:
    """The machine's and each CPU's times from one read of /proc/stat (psutil reads it twice).

    The kernel writes the whole file (interrupt counts of every CPU included) on each read, so
    one read is half the work of two. ValueError for a kernel older than 2.6.33 (fewer fields).
    """
    tick = _CLOCK_TICKS
    total: LinuxCpuTimes | None = None
    per: list[LinuxCpuTimes] = []
    with open(path, "rb") as f:
        for line in f:
            if not line.startswith(b"cpu"):
                break
            fields = line.split()
            if len(fields) < 11:
                raise ValueError(f"{path}: fewer CPU time fields than expected")
            times = LinuxCpuTimes(*(int(v) / tick for v in fields[1:11]))
            if fields[0] == b"cpu":
                total = times
            else:
                per.append(times)
    if total is None:
        raise ValueError(f"{path}: no cpu line")
    return total, per


_CLOCK_TICKS = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0


class CpuCollector:
    """CPU % since the previous call, like psutil.cpu_percent(interval=None).

    psutil keeps that function's baseline per *thread*, and asyncio.to_thread runs each collect
    on whichever pool thread is free, so its first value in every new thread would be garbage.
    Keeping the baseline in the instance gives the same numbers without that trap. The
    constructor takes the first baseline, so the very first collect() is already meaningful.
    """

    def __init__(self, proc_stat: str = "/proc/stat") -> None:
        self._proc_stat = proc_stat if sys.platform.startswith("linux") else ""
        self._total, self._per = self._times()

    def _times(self) -> tuple[Any, list[Any]]:
        if self._proc_stat:
            try:
                return _linux_cpu_times(self._proc_stat)
            except (OSError, ValueError, IndexError):
                self._proc_stat = ""  # an odd kernel: psutil from now on
        return psutil.cpu_times(), psutil.cpu_times(percpu=True)

    def collect(self) -> CpuReading:
        total, per = self._times()
        pct = _cpu_pct(self._total, total)
        if len(per) == len(self._per):
            per_core = [_cpu_pct(b, a) for b, a in zip(self._per, per, strict=True)]
        else:
            # A CPU went on- or offline: there is no matching baseline, so report idle once.
            per_core = [0.0] * len(per)
        self._total, self._per = total, per
        return CpuReading(pct, per_core)


class LoadReading(NamedTuple):
    load1: float
    load5: float
    load15: float


class LoadCollector:
    """1/5/15-minute load average (emulated by psutil on Windows, where it starts at zero)."""

    def collect(self) -> LoadReading:
        try:
            l1, l5, l15 = psutil.getloadavg()
        except (OSError, AttributeError):
            return LoadReading(0.0, 0.0, 0.0)
        return LoadReading(l1, l5, l15)


class MemoryReading(NamedTuple):
    mem_total: int
    mem_used: int
    mem_pct: float
    swap_total: int
    swap_used: int
    swap_pct: float


_MEMINFO_KEYS = (b"MemTotal", b"MemAvailable", b"SwapTotal", b"SwapFree")


def _pct(used: int, total: int) -> float:
    # psutil's usage_percent(used, total, round_=1), so either path gives the same figure.
    return round(used / total * 100, 1) if total > 0 else 0.0


class MemoryCollector:
    """RAM and swap; "used" is total - available so it agrees with the percentage.

    On Linux one read of /proc/meminfo gives both (psutil reads it twice, and /proc/vmstat too,
    for swap-in and swap-out counts no one here uses); elsewhere, or on a kernel without
    MemAvailable (before 3.14), psutil's own estimate.
    """

    def __init__(self, meminfo: str = "/proc/meminfo") -> None:
        self._meminfo = meminfo if sys.platform.startswith("linux") else ""

    def _linux(self) -> MemoryReading | None:
        try:
            with open(self._meminfo, "rb") as f:
                data = f.read()
        except OSError:
            return None
        found: dict[bytes, int] = {}
        for line in data.split(b"\n"):
            name, _, rest = line.partition(b":")
            if name in _MEMINFO_KEYS:
                found[name] = int(rest.split()[0]) * 1024  # kB
        if len(found) < len(_MEMINFO_KEYS):
            return None
        total, avail = found[b"MemTotal"], found[b"MemAvailable"]
        swap_total = found[b"SwapTotal"]
        swap_used = swap_total - found[b"SwapFree"]
        used = total - avail
        return MemoryReading(
            total, used, _pct(used, total), swap_total, swap_used, _pct(swap_used, swap_total)
        )

    def collect(self) -> MemoryReading:
        if self._meminfo:
            fast = self._linux()
            if fast is not None:
                return fast
            self._meminfo = ""  # not this kernel: psutil from now on
        vm = psutil.virtual_memory()
        try:
            sw = psutil.swap_memory()
            swap = (int(sw.total), int(sw.used), float(sw.percent))
        except (OSError, RuntimeError):
            # Some containers and BSD jails refuse swap queries; no swap is the honest answer.
            swap = (0, 0, 0.0)
        return MemoryReading(int(vm.total), int(vm.total - vm.available), float(vm.percent), *swap)


class DiskReading(NamedTuple):
    disks: list[DiskUsage]
    read_bps: float | None
    write_bps: float | None
    read_iops: float | None
    write_iops: float | None
    devices: list[DiskIO] = []


class Mount(NamedTuple):
    """One line of a mount table, as psutil.disk_partitions() gives it."""

    device: str
    mountpoint: str
    fstype: str
    opts: str


def _unescape(field: str) -> str:
    # The kernel writes a space in a mount table field as \040, a tab as \011, a backslash as \134.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def host_mounts(host_root: str) -> list[Mount]:
    """The host's mounts of real file systems, from its procfs under `host_root` (a container's view).

    psutil cannot give them: with its PROCFS_PATH moved it still reads the calling process's own
    mount table (`self/mounts`), which in a container lists the container's mounts. The host's init
    (pid 1 of the host's procfs) has the host's. As psutil does, file systems the kernel marks
    `nodev` (proc, tmpfs, network shares...) are left out, zfs apart.
    """
    proc = os.path.join(host_root, "proc")
    with open(os.path.join(proc, "filesystems"), encoding="utf-8") as f:
        kinds = {
            parts[-1] for line in f if (parts := line.split()) and (parts[0] != "nodev" or parts[-1] == "zfs")
        }
    mounts: list[Mount] = []
    with open(os.path.join(proc, "1", "mounts"), encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 4 and fields[2] in kinds and fields[0] not in ("", "none"):
                mounts.append(Mount(_unescape(fields[0]), _unescape(fields[1]), fields[2], fields[3]))
    return mounts


class DiskCounters(NamedTuple):
    """One line of /proc/diskstats, the fields used, with psutil's names (bytes, not sectors)."""

    read_count: int
    write_count: int
    read_bytes: int
    write_bytes: int


def linux_diskstats(path: str = "/proc/diskstats") -> dict[str, DiskCounters]:
    """Every device's counters, as psutil.disk_io_counters(perdisk=True) reads them, for the four
    fields used: without its generic parse of eleven fields per line. Sectors are 512 bytes in this
    file whatever the device's own sector size. ValueError for a layout psutil knows and this does
    not (Linux 2.4's)."""
    out: dict[str, DiskCounters] = {}
    with open(path, "rb") as f:
        data = f.read()
    for line in data.splitlines():
        fields = line.split()
        n = len(fields)
        if n == 14 or n >= 18:  # a disk, or a partition on 2.6.25 and later
            out[fields[2].decode()] = DiskCounters(
                int(fields[3]), int(fields[7]), int(fields[5]) * 512, int(fields[9]) * 512
            )
        elif n == 7:  # a partition, before 2.6.25
            out[fields[2].decode()] = DiskCounters(
                int(fields[3]), int(fields[5]), int(fields[4]) * 512, int(fields[6]) * 512
            )
        elif n:
            raise ValueError(f"{path}: a line of {n} fields")
    return out


# Block devices left out of the per-device I/O: loop devices (snap images, whose reads the disk
# under them counts again), RAM disks and compressed swap in RAM, floppies. Their I/O still counts
# in the totals, as it always has (psutil's own rule for whole disks).
_NO_DEVICE_IO = ("loop", "ram", "zram", "fd")
# Mounts are listed again at least this often (seconds) where the mount table cannot say it changed.
MOUNTS_MAX_AGE = 30.0
# The rate keys of the totals.
_TOTALS = ("read_bytes", "write_bytes", "read_count", "write_count")


class _MountWatch:
    """Whether a mount table changed since the last look: the kernel marks /proc/PID/mounts with
    POLLPRI on every mount and unmount, so one poll(0) replaces reading and parsing the table (and
    /proc/filesystems) every sample. Elsewhere, or for a file that is not procfs's, the table is
    read again every MOUNTS_MAX_AGE seconds."""

    def __init__(self, path: str, clock: Clock) -> None:
        self._clock = clock
        self._listed_at: float | None = None
        self._poll: Any = None
        self._fd = -1
        if hasattr(select, "poll") and os.path.exists(path):
            try:
                self._fd = os.open(path, os.O_RDONLY)
                self._poll = select.poll()
                self._poll.register(self._fd, select.POLLPRI)
            except OSError:
                self.close()

    def changed(self) -> bool:
        now = self._clock()
        stale = self._listed_at is None or now - self._listed_at >= MOUNTS_MAX_AGE
        if self._poll is not None:
            try:
                # Polling also resets the mark: a change after this is seen by the next call.
                stale = bool(self._poll.poll(0)) or stale
            except OSError:
                stale = True
        if stale:
            self._listed_at = now
        return stale

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._poll = None

    def __del__(self) -> None:
        self.close()


class DiskCollector:
    """Usage per real mount, I/O rates per block device and in total, from the kernel's counters.

    With `host_root` (the host's / mounted there, as in a container) the mounts are the host's,
    each measured under that path and reported by its path on the host. The I/O counters need no
    such help: /proc/diskstats is the same in every mount namespace. The mounts are listed again
    only when the mount table changes (see _MountWatch); their usage is measured every sample.
    """

    def __init__(self, clock: Clock = time.monotonic, host_root: str = "") -> None:
        self._rates = RateTracker(clock)
        self._warned: set[str] = set()
        self._host_root = host_root.rstrip("/")
        table = f"{self._host_root}/proc/1/mounts" if self._host_root else "/proc/self/mounts"
        self._mounts_changed = _MountWatch(table, clock)
        self._mounts: list[Mount] = []
        # Which of /proc/diskstats' names are whole disks (not partitions), asked of sysfs once per name.
        self._whole: dict[str, bool] = {}
        self._sys_block = os.path.isdir("/sys/block")
        self._diskstats = "/proc/diskstats" if sys.platform.startswith("linux") else ""
        self._io()  # baseline, so the first collect() already has rates

    def collect(self) -> DiskReading:
        return DiskReading(self._usage(), *self._io())

    def _partitions(self) -> list[Mount]:
        if self._host_root:
            return host_mounts(self._host_root)
        return [Mount(p.device, p.mountpoint, p.fstype, p.opts) for p in psutil.disk_partitions(all=False)]

    def _listed(self) -> list[Mount]:
        """The mounts worth measuring, shortest mount point first, listed again only on a change."""
        if not self._mounts_changed.changed():
            return self._mounts
        try:
            parts = self._partitions()
        except OSError as exc:
            self._warn_once("partitions", f"cannot list mounts: {exc}")
            self._mounts = []
            return []
        # Shortest mount point first, so a bind mount never hides the real one.
        parts = sorted(parts, key=lambda p: (len(p.mountpoint), p.mountpoint))
        kept: list[Mount] = []
        for p in parts:
            if p.fstype in PSEUDO_FSTYPES or not p.fstype:
                continue
            if "cdrom" in p.opts:
                continue  # an empty Windows optical drive raises on every query
            if sys.platform == "darwin" and p.mountpoint.startswith("/System/Volumes/"):
                if p.mountpoint not in _MAC_KEEP:
                    continue
            kept.append(p)
        self._mounts = kept
        return kept

    def _usage(self) -> list[DiskUsage]:
        seen_devices: set[str] = set()
        seen_mounts: set[str] = set()
        out: list[DiskUsage] = []
        for p in self._listed():
            if p.mountpoint in seen_mounts:
                continue
            if p.device and p.device in seen_devices:
                continue  # same block device mounted twice (bind mounts, btrfs subvolumes)
            try:
                u = psutil.disk_usage(self._host_root + p.mountpoint)
            except OSError as exc:
                # Unmounted between the listing and now, or not ours to read: skip, quietly after
                # the first time so a permanently unreadable mount does not flood the log.
                self._warn_once(p.mountpoint, f"skipping mount {p.mountpoint}: {exc}")
                continue
            if u.total <= 0:
                continue
            seen_mounts.add(p.mountpoint)
            if p.device:
                seen_devices.add(p.device)
            out.append(DiskUsage(p.mountpoint, p.fstype, int(u.total), int(u.used), float(u.percent)))
        return out

    def _is_whole(self, name: str) -> bool:
        """psutil's rule for its totals: a name under /sys/block is a disk, anything else a partition."""
        whole = self._whole.get(name)
        if whole is None:
            whole = not self._sys_block or os.path.exists(f"/sys/block/{name.replace('/', '!')}")
            self._whole[name] = whole
        return whole

    def _counters(self) -> Mapping[str, Any]:
        """Every block device's counters, from one read of the kernel's (the totals and the devices)."""
        if self._diskstats:
            try:
                return linux_diskstats(self._diskstats)
            except (OSError, ValueError, IndexError):
                self._diskstats = ""  # an odd kernel (2.4's layout): psutil from now on
        return psutil.disk_io_counters(perdisk=True) or {}

    def _io(self) -> tuple[float | None, float | None, float | None, float | None, list[DiskIO]]:
        try:
            per = self._counters()
        except (OSError, RuntimeError, NotImplementedError) as exc:
            self._warn_once("io", f"disk I/O counters unavailable: {exc}")
            per = {}
        if not per:  # no disks at all (some containers, some VMs)
            return None, None, None, None, []
        now = self._rates.now()
        rate = self._rates.rate
        totals = [0, 0, 0, 0]
        whole = False
        devices: list[DiskIO] = []
        names: list[str] = []
        for name in sorted(per):
            if not self._is_whole(name):
                continue
            whole = True
            c = per[name]
            totals[0] += c.read_bytes
            totals[1] += c.write_bytes
            totals[2] += c.read_count
            totals[3] += c.write_count
            if name.startswith(_NO_DEVICE_IO) or len(devices) >= MAX_DISK_IO:
                continue
            if not (c.read_count or c.write_count):
                continue  # never used since boot (an empty drive, an unused nbd): nothing to chart
            names.append(name)
            devices.append(
                DiskIO(
                    name[:64],
                    rate(f"{name}.rb", c.read_bytes, now),
                    rate(f"{name}.wb", c.write_bytes, now),
                    rate(f"{name}.r", c.read_count, now),
                    rate(f"{name}.w", c.write_count, now),
                )
            )
        if not whole:
            return None, None, None, None, []
        # Forget devices that went away, so hot-plugging cannot grow memory.
        if len(self._rates) > len(_TOTALS) + 4 * len(names):
            self._rates.retain([*_TOTALS, *(f"{n}.{k}" for n in names for k in ("rb", "wb", "r", "w"))])
        if len(self._whole) > 2 * len(per):
            self._whole = {n: w for n, w in self._whole.items() if n in per}
        rb, wb, rc, wc = (rate(key, value, now) for key, value in zip(_TOTALS, totals, strict=True))
        return rb, wb, rc, wc, devices

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)


class NetReading(NamedTuple):
    nets: list[NetIface]
    rx_bps: float | None
    tx_bps: float | None


class NetCollector:
    """Per-interface byte counters and rates; the aggregate leaves loopback out."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._rates = RateTracker(clock)
        self._loopback: dict[str, bool] = {}
        self.collect()  # baseline, so the first real collect() already has rates

    def _is_loopback(self, name: str) -> bool:
        known = self._loopback.get(name)
        if known is not None:
            return known
        flags = ""
        try:
            st = psutil.net_if_stats().get(name)
            flags = getattr(st, "flags", "") if st is not None else ""
        except OSError:
            pass
        lo = "loopback" in flags.split(",") or name in ("lo", "lo0") or name.lower().startswith("loopback")
        self._loopback[name] = lo
        return lo

    def collect(self) -> NetReading:
        try:
            counters = psutil.net_io_counters(pernic=True)
        except OSError as exc:
            log.warning("network counters unavailable: %s", exc)
            return NetReading([], None, None)
        now = self._rates.now()
        nets: list[NetIface] = []
        rx_sum: float | None = None
        tx_sum: float | None = None
        for name in sorted(counters):
            c = counters[name]
            rx = self._rates.rate(f"{name}.rx", c.bytes_recv, now)
            tx = self._rates.rate(f"{name}.tx", c.bytes_sent, now)
            nets.append(NetIface(name, int(c.bytes_recv), int(c.bytes_sent), rx, tx))
            if self._is_loopback(name):
                continue
            # Summing per-interface rates (not the summed counters) keeps the total meaningful
            # when an interface disappears: a shrinking sum would look like a counter reset.
            if rx is not None:
                rx_sum = (rx_sum or 0.0) + rx
            if tx is not None:
                tx_sum = (tx_sum or 0.0) + tx
        self._rates.retain(k for name in counters for k in (f"{name}.rx", f"{name}.tx"))
        for gone in [n for n in self._loopback if n not in counters]:
            del self._loopback[gone]
        return NetReading(nets, rx_sum, tx_sum)


class SystemReading(NamedTuple):
    uptime: float
    procs: int


class SystemCollector:
    """Uptime and process count."""

    def __init__(self) -> None:
        self._boot = psutil.boot_time()

    def collect(self, procs: int | None = None) -> SystemReading:
        """`procs`: the count a process scan of this sample already made, instead of listing again."""
        return SystemReading(
            max(0.0, time.time() - self._boot), len(psutil.pids()) if procs is None else procs
        )


class SensorsReading(NamedTuple):
    temps: list[Temperature]
    battery: Battery | None


# A host that showed no temperature sensor is looked at again only this often (seconds).
NO_SENSORS_RECHECK = 60.0


class SensorsCollector:
    """Temperatures and battery where psutil supports them; anything missing reads as empty.

    Finding no sensor costs as much as reading them (psutil lists the hwmon and thermal
    directories every time), and most virtual machines have none: such a host is looked at again
    every NO_SENSORS_RECHECK seconds, not every sample.
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._warned = False
        self._clock = clock
        self._none_until = float("-inf")

    def collect(self) -> SensorsReading:
        return SensorsReading(self._temps(), self._battery())

    def _temps(self) -> list[Temperature]:
        fn = getattr(psutil, "sensors_temperatures", None)  # absent on macOS and Windows
        if fn is None:
            return []
        now = self._clock()
        if now < self._none_until:
            return []
        try:
            groups = fn()
        except Exception as exc:  # psutil surfaces odd hwmon drivers as many exception types
            if not self._warned:
                self._warned = True
                log.warning("temperature sensors unreadable: %s", exc)
            self._none_until = now + NO_SENSORS_RECHECK
            return []
        if not groups:
            self._none_until = now + NO_SENSORS_RECHECK
        out: list[Temperature] = []
        for sensor, entries in sorted(groups.items()):
            for i, entry in enumerate(entries):
                current = entry.current
                # msgspec writes NaN as null, which the core would refuse as a float.
                if current is None or not math.isfinite(current):
                    continue
                out.append(Temperature(sensor, entry.label or f"temp{i + 1}", float(current)))
        return out

    def _battery(self) -> Battery | None:
        fn = getattr(psutil, "sensors_battery", None)
        if fn is None:
            return None
        try:
            b = fn()
        except Exception:  # same as above: a broken ACPI table must not cost the sample
            return None
        if b is None or b.percent is None or not math.isfinite(b.percent):
            return None
        secs = b.secsleft
        # POWER_TIME_UNLIMITED / POWER_TIME_UNKNOWN are negative sentinels, not durations.
        secs_left = float(secs) if isinstance(secs, int | float) and secs >= 0 else None
        return Battery(float(b.percent), b.power_plugged, secs_left)


class MetricsCollector:
    """All families combined into one core Metrics, rounded by the metric table. Blocking: call
    collect() via to_thread.

    `host_root`: where the host's / is mounted when the agent runs in a container (see DiskCollector).
    `scalars` (default: SCALAR_COLLECTORS) are the collectors of the table's added rows;
    `fields` and `metrics_type` are the table and the struct it made (tests pass their own).
    `processes`: the top-processes collector ([processes] in the agent's config), None for none.
    `containers`, `hardware`: what hands over the newest container list or hardware reading, if new.
    """

    def __init__(
        self,
        clock: Clock = time.monotonic,
        *,
        host_root: str = "",
        scalars: Mapping[str, ScalarCollector] | None = None,
        fields: Iterable[Field] = FIELDS,
        metrics_type: type[MetricsBase] = Metrics,
        processes: ProcessCollector | None = None,
        containers: Callable[[], list[ContainerInfo] | None] | None = None,
        hardware: Callable[[], Hardware | None] | None = None,
    ) -> None:
        self._decimals = {f.name: f.decimals for f in fields}
        self._scalars = dict(SCALAR_COLLECTORS if scalars is None else scalars)
        for name in self._scalars:
            if name not in self._decimals:
                raise ValueError(f"scalar collector {name!r}: the metric table has no such row")
            if name in MetricsBase.__struct_fields__ or name not in metrics_type.__struct_fields__:
                raise ValueError(f"scalar collector {name!r}: not an added field of {metrics_type.__name__}")
        self._metrics_type = metrics_type
        self.cpu = CpuCollector()
        self.load = LoadCollector()
        self.memory = MemoryCollector()
        self.disks = DiskCollector(clock, host_root)
        self.net = NetCollector(clock)
        self.system = SystemCollector()
        self.sensors = SensorsCollector(clock)
        self.processes = processes
        # Takers of the background polls' newest lists (agent/containers.py, hardware.py): a
        # sample carries each only when it is new, and never waits for one.
        self.containers = containers
        self.hardware = hardware
        if processes is not None:
            processes.collect()  # baseline, so the first sample already has CPU % and I/O rates
        self._failed: set[str] = set()

    def _optional(self, family: str, fn: Callable[[], T], default: T) -> T:
        try:
            return fn()
        except Exception as exc:
            if family not in self._failed:  # once: a broken driver stays broken every interval
                self._failed.add(family)
                log.warning("collector %s failed, sending samples without it: %r", family, exc)
            return default

    def _scalar(self, name: str, fn: ScalarCollector) -> float | None:
        value = self._optional(name, fn, None)
        if value is None:
            return None
        value = float(value)
        # msgspec would write NaN or infinity as null, and it has no digits to round.
        return value if math.isfinite(value) else None

    def _round(self, name: str, value: Any) -> Any:
        """A value to its table row's decimals; whole-unit rows become ints (sent without ".0")."""
        decimals = self._decimals.get(name)
        if decimals is None or not isinstance(value, float):
            return value
        return round(value) if decimals == 0 else round(value, decimals)

    def collect(self) -> Metrics:
        cpu = self.cpu.collect()
        load = self.load.collect()
        mem = self.memory.collect()
        procs: list[ProcInfo] = []
        scanned: int | None = None
        if self.processes is not None:
            procs = self._optional("processes", self.processes.collect, procs)
            # A scan that ran for this sample counted every process: no second listing of them.
            scanned = self.processes.count if procs else None
        system = self.system.collect(scanned)
        # The optional families must never cost the whole sample: an exotic mount or NIC driver
        # raising something unexpected leaves its fields at their defaults instead.
        disks = self._optional("disks", self.disks.collect, DiskReading([], None, None, None, None))
        net = self._optional("network", self.net.collect, NetReading([], None, None))
        sensors = self._optional("sensors", self.sensors.collect, SensorsReading([], None))
        scalars: dict[str, Any] = {
            "cpu_pct": cpu.pct,
            "load1": load.load1,
            "load5": load.load5,
            "load15": load.load15,
            "mem_total": mem.mem_total,
            "mem_used": mem.mem_used,
            "mem_pct": mem.mem_pct,
            "swap_total": mem.swap_total,
            "swap_used": mem.swap_used,
            "swap_pct": mem.swap_pct,
            "uptime": system.uptime,
            "procs": system.procs,
            "disk_read_bps": disks.read_bps,
            "disk_write_bps": disks.write_bps,
            "disk_read_iops": disks.read_iops,
            "disk_write_iops": disks.write_iops,
            "net_rx_bps": net.rx_bps,
            "net_tx_bps": net.tx_bps,
        }
        for name, fn in self._scalars.items():
            scalars[name] = self._scalar(name, fn)
        # The one place the agent's numbers get their digits: each scalar its row's decimals, and
        # the per-core and per-interface details those of the row they add up to. Digits beyond
        # them are clock jitter, not measurement, and would be stored and sent forever.
        return self._metrics_type(
            cpu_per_core=[self._round("cpu_pct", p) for p in cpu.per_core],
            disks=disks.disks,
            disk_io=[
                DiskIO(
                    d.name,
                    self._round("disk_read_bps", d.read_bps),
                    self._round("disk_write_bps", d.write_bps),
                    self._round("disk_read_iops", d.read_iops),
                    self._round("disk_write_iops", d.write_iops),
                )
                for d in disks.devices
            ],
            nets=[
                msgspec.structs.replace(
                    n, rx_bps=self._round("net_rx_bps", n.rx_bps), tx_bps=self._round("net_tx_bps", n.tx_bps)
                )
                for n in net.nets
            ],
            temps=sensors.temps,
            battery=sensors.battery,
            procs_top=procs,
            containers=None if self.containers is None else self.containers(),
            hardware=None if self.hardware is None else self.hardware(),
            **{name: self._round(name, value) for name, value in scalars.items()},
        )
