"""The fleet store as a Qt item model (one row per node), its filter proxy, and value formatting."""

from __future__ import annotations

import time
from enum import IntEnum
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)

from servermanager.common import metrics as mt
from servermanager.common import protocol as p

Index = QModelIndex | QPersistentModelIndex


class Col(IntEnum):
    STATUS = 0
    NAME = 1
    GROUP = 2
    TAGS = 3
    OS = 4
    CPU = 5
    MEM = 6
    DISK = 7
    NET_IN = 8
    NET_OUT = 9
    LOAD = 10
    UPTIME = 11
    LAST_SEEN = 12


HEADERS: dict[Col, str] = {
    Col.STATUS: "Status",
    Col.NAME: "Name",
    Col.GROUP: "Group",
    Col.TAGS: "Tags",
    Col.OS: "OS",
    Col.CPU: "CPU",
    Col.MEM: "Memory",
    Col.DISK: "Disk",
    Col.NET_IN: "Net in",
    Col.NET_OUT: "Net out",
    Col.LOAD: "Load",
    Col.UPTIME: "Uptime",
    Col.LAST_SEEN: "Last seen",
}

PERCENT_COLUMNS = frozenset({Col.CPU, Col.MEM, Col.DISK})
NUMERIC_COLUMNS = PERCENT_COLUMNS | {Col.NET_IN, Col.NET_OUT, Col.LOAD, Col.UPTIME, Col.LAST_SEEN}

_USER = int(Qt.ItemDataRole.UserRole)
SortRole = _USER + 1  # the raw value the proxy sorts by
NodeIdRole = _USER + 2
OnlineRole = _USER + 3
PercentRole = _USER + 4  # float 0..100 or None, for the in-cell bar
NodeRole = _USER + 5  # the whole NodeInfo


# ---------------------------------------------------------------- formatting

NA = "\N{EN DASH}"  # shown where a value is unknown (no sample yet, no rate yet)


def fmt_bytes(n: float | None) -> str:
    """Sizes in binary units (what `free -h` and `df -h` show)."""
    if n is None:
        return NA
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def fmt_of(used: float, total: float) -> str:
    """'11.7 / 16.0 GiB': a part of a whole, the unit said once when both share it."""
    a, b = fmt_bytes(used), fmt_bytes(total)
    unit_a, unit_b = a.rpartition(" ")[2], b.rpartition(" ")[2]
    return f"{a.rpartition(' ')[0]} / {b}" if unit_a == unit_b else f"{a} / {b}"


def fmt_rate(bps: float | None) -> str:
    """Rates in binary units, as the history charts label them."""
    return NA if bps is None else fmt_bytes(bps) + "/s"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return NA
    s = int(max(0, seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    age = (now or time.time()) - ts
    if age < 5:
        return "just now"
    return fmt_duration(age) + " ago"


def fmt_pct(value: float | None) -> str:
    return NA if value is None else f"{value:.0f}%"


def os_label(node: p.NodeInfo) -> str:
    if node.host is None:
        return NA
    return f"{node.host.os} {node.host.os_version}".strip()


def cell(node: p.NodeInfo, col: Col, now: float) -> tuple[str, Any]:
    """(display text, sort key) of one cell: the one place a node becomes table text."""
    m = node.latest.metrics if node.latest is not None else None
    match col:
        case Col.STATUS:
            return ("Online" if node.online else "Offline", 0 if node.online else 1)
        case Col.NAME:
            return node.name, node.name.lower()
        case Col.GROUP:
            return node.group, node.group.lower()
        case Col.TAGS:
            text = ", ".join(node.tags)
            return text, text.lower()
        case Col.OS:
            label = os_label(node)
            return label, label.lower()
        case Col.CPU:
            v = m.cpu_pct if m else None
            return fmt_pct(v), v
        case Col.MEM:
            v = m.mem_pct if m else None
            return fmt_pct(v), v
        case Col.DISK:
            v = m.disk_pct if m else None
            return fmt_pct(v), v
        case Col.NET_IN:
            v = m.net_rx_bps if m else None
            return fmt_rate(v), v
        case Col.NET_OUT:
            v = m.net_tx_bps if m else None
            return fmt_rate(v), v
        case Col.LOAD:
            return (f"{m.load1:.2f}", m.load1) if m else (NA, None)
        case Col.UPTIME:
            return (fmt_duration(m.uptime), m.uptime) if m else (NA, None)
        case Col.LAST_SEEN:
            return fmt_ago(node.last_seen, now), node.last_seen
    raise AssertionError(col)


# ---------------------------------------------------------------- the model


class NodesModel(QAbstractTableModel):
    """The fleet: one row per node, fed by the client's snapshot, events and polls.

    Updates change rows in place (dataChanged for the cells that changed); rows are inserted or
    removed only when a node really appears or disappears, so views keep selection and scroll.
    """

    online_changed = Signal(int, str, bool)  # node id, name, online: real transitions only
    counts_changed = Signal(int, int)  # online, offline
    node_changed = Signal(int)  # anything about this node changed
    sample_received = Signal(int, object)  # node id, mt.Sample: the live tail for charts
    facets_changed = Signal()  # the set of groups or tags changed

    def __init__(self, parent: QObject | None = None, tick_ms: int = 5000) -> None:
        super().__init__(parent)
        self._rows: list[p.NodeInfo] = []
        self._row_of: dict[int, int] = {}
        self._facets: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        # "Last seen" is relative text, so it changes with time alone.
        self._ticker = QTimer(self)
        self._ticker.timeout.connect(self._tick)
        self._ticker.start(tick_ms)

    # ------------------------------------------------------------ Qt API

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(Col)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(Col):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[Col(section)]
        if role == Qt.ItemDataRole.TextAlignmentRole and Col(section) in NUMERIC_COLUMNS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows) or index.column() >= len(Col):
            return None
        node = self._rows[index.row()]
        col = Col(index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            return cell(node, col, time.time())[0]
        if role == SortRole:
            return cell(node, col, time.time())[1]
        if role == NodeIdRole:
            return node.id
        if role == OnlineRole:
            return node.online
        if role == NodeRole:
            return node
        if role == PercentRole:
            return cell(node, col, time.time())[1] if col in PERCENT_COLUMNS else None
        if role == Qt.ItemDataRole.TextAlignmentRole and col in NUMERIC_COLUMNS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(node, col)
        return None

    def _tooltip(self, node: p.NodeInfo, col: Col) -> str | None:
        if col == Col.STATUS:
            seen = fmt_ago(node.last_seen)
            return f"{node.name} is {'online' if node.online else 'offline'}; last heard from {seen}"
        if col == Col.LOAD and node.latest is not None:
            m = node.latest.metrics
            return f"Load average 1/5/15 min: {m.load1:.2f} / {m.load5:.2f} / {m.load15:.2f}"
        if col == Col.OS and node.host is not None:
            h = node.host
            return f"{h.os} {h.os_version}, kernel {h.kernel}, {h.arch}"
        return None

    # ------------------------------------------------------------ queries

    def node(self, node_id: int) -> p.NodeInfo | None:
        row = self._row_of.get(node_id)
        return None if row is None else self._rows[row]

    def nodes(self) -> list[p.NodeInfo]:
        return list(self._rows)

    def row_of(self, node_id: int) -> int | None:
        return self._row_of.get(node_id)

    def counts(self) -> tuple[int, int]:
        up = sum(1 for n in self._rows if n.online)
        return up, len(self._rows) - up

    def groups(self) -> list[str]:
        return sorted(self._facets[0], key=str.lower)

    def tags(self) -> list[str]:
        return sorted(self._facets[1], key=str.lower)

    # ------------------------------------------------------------ updates

    def apply_snapshot(self, nodes: list[p.NodeInfo]) -> None:
        """A full list (socket snapshot or REST poll): diff it against what the rows hold."""
        counts = self.counts()
        wanted = {n.id for n in nodes}
        for node_id in [n.id for n in self._rows if n.id not in wanted]:
            self._remove(node_id)
        for node in nodes:
            self._upsert(node, keep_latest=False)
        self._after_change(counts)

    def apply_node(self, node: p.NodeInfo) -> None:
        """node_updated: the core leaves `latest` out of these, so keep the one we have."""
        counts = self.counts()
        self._upsert(node, keep_latest=True)
        self._after_change(counts)

    def apply_status(self, status: p.NodeStatus) -> None:
        row = self._row_of.get(status.node_id)
        if row is None:
            return
        counts = self.counts()
        old = self._rows[row]
        new = p.NodeInfo(**{**_fields(old), "online": status.online, "last_seen": status.last_seen})
        self._replace(row, new)
        self._after_change(counts)

    def apply_sample(self, node_id: int, sample: mt.Sample) -> None:
        row = self._row_of.get(node_id)
        if row is None:
            return
        old = self._rows[row]
        if old.latest is not None and sample.seq <= old.latest.seq and sample.ts <= old.latest.ts:
            return
        self._replace(
            row,
            p.NodeInfo(**{**_fields(old), "latest": sample, "last_seen": max(sample.ts, old.last_seen or 0)}),
        )
        self.sample_received.emit(node_id, sample)

    def remove_node(self, node_id: int) -> None:
        counts = self.counts()
        if self._remove(node_id):
            self._after_change(counts)

    def clear(self) -> None:
        if not self._rows:
            return
        counts = self.counts()
        self.beginResetModel()
        self._rows, self._row_of = [], {}
        self.endResetModel()
        self._after_change(counts)

    # ------------------------------------------------------------ internals

    def _upsert(self, node: p.NodeInfo, *, keep_latest: bool) -> None:
        row = self._row_of.get(node.id)
        if row is None:
            row = len(self._rows)
            self.beginInsertRows(QModelIndex(), row, row)
            self._rows.append(node)
            self._row_of[node.id] = row
            self.endInsertRows()
            self.node_changed.emit(node.id)
            return
        old = self._rows[row]
        if keep_latest and node.latest is None and old.latest is not None:
            node = p.NodeInfo(**{**_fields(node), "latest": old.latest})
        self._replace(row, node)
        if node.latest is not None and (old.latest is None or node.latest.seq > old.latest.seq):
            # A newer sample in a full list (a poll, or the snapshot after a reconnect) extends the
            # live tail just as a pushed sample does.
            self.sample_received.emit(node.id, node.latest)

    def _replace(self, row: int, new: p.NodeInfo) -> None:
        old = self._rows[row]
        self._rows[row] = new
        if old.online != new.online:
            self.online_changed.emit(new.id, new.name, new.online)
        now = time.time()
        changed = [
            c
            for c in Col
            if cell(old, c, now) != cell(new, c, now) or (c == Col.STATUS and old.online != new.online)
        ]
        # One dataChanged per run of adjacent changed cells: views repaint those cells only.
        for first, last in _runs(changed):
            self.dataChanged.emit(self.index(row, first), self.index(row, last))
        if changed or old.host != new.host:
            self.node_changed.emit(new.id)

    def _remove(self, node_id: int) -> bool:
        row = self._row_of.get(node_id)
        if row is None:
            return False
        self.beginRemoveRows(QModelIndex(), row, row)
        del self._rows[row]
        self._row_of = {n.id: i for i, n in enumerate(self._rows)}
        self.endRemoveRows()
        self.node_changed.emit(node_id)
        return True

    def _after_change(self, counts_before: tuple[int, int]) -> None:
        counts = self.counts()
        if counts != counts_before:
            self.counts_changed.emit(*counts)
        facets = (
            frozenset(n.group for n in self._rows if n.group),
            frozenset(t for n in self._rows for t in n.tags),
        )
        if facets != self._facets:
            self._facets = facets
            self.facets_changed.emit()

    def _tick(self) -> None:
        if self._rows:
            top = self.index(0, Col.LAST_SEEN)
            bottom = self.index(len(self._rows) - 1, Col.LAST_SEEN)
            self.dataChanged.emit(top, bottom, [Qt.ItemDataRole.DisplayRole, SortRole])


def _runs(cols: list[Col]) -> list[tuple[int, int]]:
    """[1, 2, 3, 7] -> [(1, 3), (7, 7)]"""
    out: list[tuple[int, int]] = []
    for c in cols:
        if out and out[-1][1] == c - 1:
            out[-1] = (out[-1][0], int(c))
        else:
            out.append((int(c), int(c)))
    return out


def _fields(node: p.NodeInfo) -> dict[str, Any]:
    return {f: getattr(node, f) for f in node.__struct_fields__}


# ---------------------------------------------------------------- filtering and sorting


class FleetFilter(QSortFilterProxyModel):
    """Search text plus status, group and tag filters over NodesModel; sorts by raw values."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._text = ""
        self._status: bool | None = None  # True: online only; False: offline only
        self._group: str | None = None
        self._tag: str | None = None
        self.setSortRole(SortRole)
        self.setDynamicSortFilter(True)
        self.setSortCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)

    def set_search(self, text: str) -> None:
        self._refilter("_text", text.strip().lower())

    def set_status(self, online: bool | None) -> None:
        self._refilter("_status", online)

    def set_group(self, group: str | None) -> None:
        self._refilter("_group", group)

    def set_tag(self, tag: str | None) -> None:
        self._refilter("_tag", tag)

    def _refilter(self, attr: str, value: Any) -> None:
        if getattr(self, attr) == value:
            return
        # begin/endFilterChange (Qt 6.10+) keeps the proxy's mapping valid while the filter moves.
        begin = getattr(self, "beginFilterChange", None)
        if begin is not None:
            begin()
            setattr(self, attr, value)
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # pragma: no cover - older Qt
            setattr(self, attr, value)
            self.invalidateRowsFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        model = self.sourceModel()
        node = model.data(model.index(source_row, 0, source_parent), NodeRole)
        if not isinstance(node, p.NodeInfo):
            return False
        if self._status is not None and node.online != self._status:
            return False
        if self._group is not None and node.group != self._group:
            return False
        if self._tag is not None and self._tag not in node.tags:
            return False
        if self._text:
            hay = " ".join(
                [node.name, node.group, *node.tags, os_label(node), node.host.hostname if node.host else ""]
            )
            return all(word in hay.lower() for word in self._text.split())
        return True

    def lessThan(self, left: Index, right: Index) -> bool:
        a, b = left.data(SortRole), right.data(SortRole)
        # Unknown values (no sample yet) sort after every known value.
        if a is None or b is None:
            return a is not None and b is None
        try:
            return bool(a < b)
        except TypeError:
            return str(a) < str(b)
