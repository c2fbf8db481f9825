"""Device series: a sample's per-mount, per-interface and per-sensor readings as named series.

The agent sends its disks, interfaces and sensors as lists in every sample; at write time the core
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
from servermanager.core.store.series import PendingPoint

MAX_DEVICES = 32  # per kind (mounts, interfaces, sensors) and sample

# The device series' names, units and the label naming the device; the desktop's Devices tab
# groups by the label.
DISK_USED = f"{DEVICE_PREFIX}disk_used_bytes"
DISK_PCT = f"{DEVICE_PREFIX}disk_pct"
NET_RX = f"{DEVICE_PREFIX}net_rx_bps"
NET_TX = f"{DEVICE_PREFIX}net_tx_bps"
TEMP = f"{DEVICE_PREFIX}temp_celsius"


def _sensor(sensor: str, label: str) -> str:
    # psutil names the chip ("coretemp") and the reading ("Package id 0"); an unlabelled reading
    # is named by the chip alone.
    return f"{sensor}/{label}" if label else sensor


def device_points(node_id: int, samples: Iterable[Sample]) -> list[PendingPoint]:
    """The device points of a batch, keyed like pending_points' (built as the batch arrives)."""
    out: list[PendingPoint] = []
    add = out.append
    for s in samples:
        m = s.metrics
        ts = round(s.ts * 1000)
        for d in m.disks[:MAX_DEVICES]:
            key = labels_key({"mount": d.mount})
            add(((node_id, DISK_USED, key), "B", ts, float(d.used)))
            add(((node_id, DISK_PCT, key), "%", ts, d.pct))
        for n in m.nets[:MAX_DEVICES]:
            key = labels_key({"iface": n.name})
            # No rate on an interface's first reading: no point rather than a made-up zero.
            if n.rx_bps is not None:
                add(((node_id, NET_RX, key), "B/s", ts, n.rx_bps))
            if n.tx_bps is not None:
                add(((node_id, NET_TX, key), "B/s", ts, n.tx_bps))
        for t in m.temps[:MAX_DEVICES]:
            add(((node_id, TEMP, labels_key({"sensor": _sensor(t.sensor, t.label)})), "°C", ts, t.current))
    return out
