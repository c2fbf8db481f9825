"""Device series: a sample's per-mount, per-disk, per-interface and per-sensor readings as named series.

The agent sends its mounts, block devices, interfaces and sensors as lists in every sample; at write time the core
turns them into points of the named-series store (core/store/series.py) under names that start with
DEVICE_PREFIX, so they are rolled up, pruned and read like custom series while an agent's own
[[custom]] series can never pose as one (see pending_points). A sample contributes at most
MAX_DEVICES devices of each kind: a host with hundreds of mounts (containers' overlays) must not
multiply its series without bound.
"""

from __future__ import annotations

from collections.abc import Iterable

from servermanager.common.metrics import Sample
from servermanager.common.series import DEVICE_PREFIX, labels_key
from servermanager.core.store.series import Key, PendingPoint

MAX_DEVICES = 32  # per kind (mounts, block devices, interfaces, sensors) and sample

# The device series' names, units and the label naming the device; the desktop's Devices tab
# groups by the label.
DISK_USED = f"{DEVICE_PREFIX}disk_used_bytes"
DISK_PCT = f"{DEVICE_PREFIX}disk_pct"
DISK_READ = f"{DEVICE_PREFIX}disk_read_bps"
DISK_WRITE = f"{DEVICE_PREFIX}disk_write_bps"
DISK_READ_IOPS = f"{DEVICE_PREFIX}disk_read_iops"
DISK_WRITE_IOPS = f"{DEVICE_PREFIX}disk_write_iops"
NET_RX = f"{DEVICE_PREFIX}net_rx_bps"
NET_TX = f"{DEVICE_PREFIX}net_tx_bps"
TEMP = f"{DEVICE_PREFIX}temp_celsius"


def _sensor(sensor: str, label: str) -> str:
    # psutil names the chip ("coretemp") and the reading ("Package id 0"); an unlabelled reading
    # is named by the chip alone.
    return f"{sensor}/{label}" if label else sensor


_DISK_USAGE = ((DISK_USED, "B"), (DISK_PCT, "%"))
_DISK_IO = ((DISK_READ, "B/s"), (DISK_WRITE, "B/s"), (DISK_READ_IOPS, "/s"), (DISK_WRITE_IOPS, "/s"))
_NET = ((NET_RX, "B/s"), (NET_TX, "B/s"))
_TEMP = ((TEMP, "°C"),)

# (node, label, device) -> the keys of that device's series, in the order of its kind's tuple above.
# Every sample names the same devices again: building a key costs a labels_key (a JSON encode) per
# point, and this was a tenth of the event loop's time at 2,500 agents. Emptied when it grows past
# _MAX_KEYS (devices that come and go, such as containers' veth interfaces).
_KEYS: dict[tuple[int, str, str], tuple[Key, ...]] = {}
_MAX_KEYS = 100_000


def _keys(node_id: int, label: str, device: str, kind: tuple[tuple[str, str], ...]) -> tuple[Key, ...]:
    found = _KEYS.get((node_id, label, device))
    if found is None:
        if len(_KEYS) >= _MAX_KEYS:
            _KEYS.clear()
        lk = labels_key({label: device})
        found = _KEYS[(node_id, label, device)] = tuple((node_id, name, lk) for name, _ in kind)
    return found


def device_points(node_id: int, samples: Iterable[Sample]) -> list[PendingPoint]:
    """The device points of a batch, keyed like pending_points' (built as the batch arrives)."""
    out: list[PendingPoint] = []
    add = out.append
    for s in samples:
        m = s.metrics
        ts = round(s.ts * 1000)
        for d in m.disks[:MAX_DEVICES]:
            used, pct = _keys(node_id, "mount", d.mount, _DISK_USAGE)
            add(PendingPoint(used, "B", ts, float(d.used)))
            add(PendingPoint(pct, "%", ts, d.pct))
        for io in m.disk_io[:MAX_DEVICES]:
            keys = _keys(node_id, "disk", io.name, _DISK_IO)
            # Like an interface's: no point before a device's second reading.
            for key, (_, unit), value in zip(
                keys, _DISK_IO, (io.read_bps, io.write_bps, io.read_iops, io.write_iops), strict=True
            ):
                if value is not None:
                    add(PendingPoint(key, unit, ts, value))
        for n in m.nets[:MAX_DEVICES]:
            rx, tx = _keys(node_id, "iface", n.name, _NET)
            # No rate on an interface's first reading: no point rather than a made-up zero.
            if n.rx_bps is not None:
                add(PendingPoint(rx, "B/s", ts, n.rx_bps))
            if n.tx_bps is not None:
                add(PendingPoint(tx, "B/s", ts, n.tx_bps))
        for t in m.temps[:MAX_DEVICES]:
            (key,) = _keys(node_id, "sensor", _sensor(t.sensor, t.label), _TEMP)
            add(PendingPoint(key, "°C", ts, t.current))
    return out
