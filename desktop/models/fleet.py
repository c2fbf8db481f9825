"""The fleet as a Qt item model (one row per node, a column per fleet row of the metric table) and its filter proxy."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
from servermanager.common.alerts import Alert
from servermanager.desktop.format import NA, fmt_ago, format_value

Index = QModelIndex | QPersistentModelIndex

_USER = int(Qt.ItemDataRole.UserRole)
SortRole = _USER + 1  # the raw value the proxy sorts by
NodeIdRole = _USER + 2
OnlineRole = _USER + 3
PercentRole = _USER + 4  # float 0..100 or None, for the in-cell bar
NodeRole = _USER + 5  # the whole NodeInfo
ColumnRole = _USER + 6  # the cell's Column, for the delegate
AlertRole = _USER + 7  # the worst severity of the node's firing alerts, or None
CoreRole = _USER + 20  # the slot of the core a row is from (models/merged.py; None in one core's model)
_SEVERITY_RANK = {"critical": 2, "warning": 1}

# Initial widths of the metric columns by unit: a bar needs room, a load average does not.
_UNIT_WIDTHS = {mt.Unit.PLAIN: 60, mt.Unit.SECONDS: 80}
_METRIC_WIDTH = 84


@dataclass(frozen=True)
class Column:
    """One fleet table column: its header, and how a node shows (text) and sorts (key) in it."""

    key: str  # a metric row's name, or the name of a fixed column ("status", "name", ...)
    header: str
    cell: Callable[[p.NodeInfo, float], tuple[str, Any]]  # (node, now) -> (display text, sort key)
    width: int | None = None  # initial width in pixels; None: stretched to the room left
    numeric: bool = False  # right-aligned
    bar: bool = False  # drawn as a percentage bar behind the text


def os_label(node: p.NodeInfo) -> str:
    if node.host is None:
        return NA
    return f"{node.host.os} {node.host.os_version}".strip()


def _text(value: str) -> tuple[str, Any]:
    return value, value.lower()


def _os(node: p.NodeInfo, _now: float) -> tuple[str, Any]:
    return _text(os_label(node))


def _status(node: p.NodeInfo, _now: float) -> tuple[str, Any]:
    return ("Online" if node.online else "Offline", 0 if node.online else 1)


def _last_seen(node: p.NodeInfo, now: float) -> tuple[str, Any]:
    return fmt_ago(node.last_seen, now), node.last_seen


def metric_column(field: mt.Field) -> Column:
    """A column showing the node's latest value of one metric row, formatted by the row's unit."""

    def cell(node: p.NodeInfo, _now: float) -> tuple[str, Any]:
        v = mt.scalar(node.latest.metrics, field.name) if node.latest is not None else None
        return format_value(field.unit, v), v

    percent = field.unit is mt.Unit.PERCENT
    return Column(
        field.name, field.column, cell, _UNIT_WIDTHS.get(field.unit, _METRIC_WIDTH), numeric=True, bar=percent
    )


# The columns before the metrics and after them: what a node is, and when it was last heard from.
LEADING: tuple[Column, ...] = (
    Column("status", "Status", _status, 90),
    # Narrower than they could be, so the Status column fits "Offline · 2 alerts" and "Last seen"
    # is still in sight at 1280 px (the view sizes Status from its font: desktop.widgets.status_width).
    Column("name", "Name", lambda n, _now: (n.name, n.name.lower()), 130),
    Column("group", "Group", lambda n, _now: _text(n.group), 90),
    Column("tags", "Tags", lambda n, _now: _text(", ".join(n.tags)), 100),
    # OS takes what the window leaves (its tooltip has the rest), so "Last seen" is in sight at
    # 1280 px without scrolling sideways.
    Column("os", "OS", _os),
)


def _containers(node: p.NodeInfo, _now: float) -> tuple[str, Any]:
    # None: the agent sent no list (no engine, or [containers] off), which is not "0 running":
    # a dash, as for any value the node does not report.
    return (NA if node.containers is None else str(node.containers)), (
        -1 if node.containers is None else node.containers
    )


TRAILING: tuple[Column, ...] = (
    Column("containers", "Containers", _containers, 90, numeric=True),
    Column("last_seen", "Last seen", _last_seen, 104, numeric=True),
)


def fleet_columns(
    rows: Sequence[mt.Field] = mt.FIELDS, families: Sequence[mt.Family] = mt.FAMILIES
) -> tuple[Column, ...]:
    """Every column: the fixed ones around a column per table row that names one.

    Metric columns follow the chart order (their rows' families), then rows with no chart, in
    table order: the table's own order is the database's, where new rows go at the end.
    """
    order = {fam.key: i for i, fam in enumerate(families)}
    metric = sorted((f for f in rows if f.column), key=lambda f: order.get(f.family, len(order)))
    return (*LEADING, *(metric_column(f) for f in metric), *TRAILING)


class NodesModel(QAbstractTableModel):
    """The fleet: one row per node, fed by the live link's snapshot, events and polls.

    Updates change rows in place (dataChanged for the cells that changed); rows are inserted or
    removed only when a node really appears or disappears, so views keep selection and scroll.
    """

    online_changed = Signal(int, str, bool)  # node id, name, online: real transitions only
    counts_changed = Signal(int, int)  # online, offline
    node_changed = Signal(int)  # anything about this node changed
    sample_received = Signal(int, object)  # node id, mt.Sample: the live tail for charts
    facets_changed = Signal()  # the set of groups or tags changed
    stale_changed = Signal(object)  # float | None: when the cached rows shown were saved; None: live

    def __init__(
        self,
        parent: QObject | None = None,
        tick_ms: int = 5000,
        columns: Sequence[Column] | None = None,
    ) -> None:
        super().__init__(parent)
        self.columns: tuple[Column, ...] = tuple(columns) if columns is not None else fleet_columns()
        self._column_of = {c.key: i for i, c in enumerate(self.columns)}
        self._rows: list[p.NodeInfo] = []
        self._row_of: dict[int, int] = {}
        self._facets: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        self._firing: dict[int, dict[int, Alert]] = {}  # node id -> alert id -> its firing alert
        self._shared_names: frozenset[str] = frozenset()  # names more than one node has
        # Rows from the fleet cache at start-up, until the core's own list replaces them.
        self.stale_since: float | None = None
        # "Last seen" is relative text, so it changes with time alone.
        self._ticker = QTimer(self)
        self._ticker.timeout.connect(self._tick)
        self._ticker.start(tick_ms)

    def column(self, key: str) -> int:
        """The index of the column with this key ("name", "cpu_pct", ...)."""
        return self._column_of[key]

    # ------------------------------------------------------------ Qt API

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.columns):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section].header
        if role == Qt.ItemDataRole.TextAlignmentRole and self.columns[section].numeric:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows) or index.column() >= len(self.columns):
            return None
        node = self._rows[index.row()]
        col = self.columns[index.column()]
        if col.key == "status" and role in (Qt.ItemDataRole.DisplayRole, SortRole, AlertRole):
            return self._status_data(node, col, role)
        if col.key == "name" and role == Qt.ItemDataRole.DisplayRole:
            return self.display_name(node.id)
        if role == Qt.ItemDataRole.DisplayRole:
            return col.cell(node, time.time())[0]
        if role == SortRole:
            return col.cell(node, time.time())[1]
        if role == NodeIdRole:
            return node.id
        if role == OnlineRole:
            return node.online
        if role == NodeRole:
            return node
        if role == ColumnRole:
            return col
        if role == PercentRole:
            return col.cell(node, time.time())[1] if col.bar else None
        if role == Qt.ItemDataRole.TextAlignmentRole and col.numeric:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(node, col.key)
        return None

    def _status_data(self, node: p.NodeInfo, col: Column, role: int) -> Any:
        """Status with the node's firing alerts: "Online · 2 alerts", sorted worst first."""
        text, key = col.cell(node, time.time())
        firing = self._firing.get(node.id, {})
        worst = max((_SEVERITY_RANK[a.severity] for a in firing.values()), default=0)
        if role == AlertRole:
            return next((sev for sev, rank in _SEVERITY_RANK.items() if rank == worst), None)
        if role == SortRole:
            return (key, -worst, -len(firing))
        if self.stale_since is not None and role == Qt.ItemDataRole.DisplayRole:
            text += " (cached)"  # what the core said then, not what it says now
        return f"{text} · {len(firing)} alert{'s' if len(firing) != 1 else ''}" if firing else text

    def set_alerts(self, alerts: Iterable[Alert]) -> None:
        """The firing alerts as the core lists them; every node's status follows."""
        firing: dict[int, dict[int, Alert]] = {}
        for a in alerts:
            if a.state == "firing":
                firing.setdefault(a.node_id, {})[a.id] = a
        changed = set(firing) | set(self._firing)
        self._firing = firing
        for node_id in changed:
            self._status_changed(node_id)

    def alert_changed(self, alert: Alert) -> None:
        """One alert event: the node's status shows it while it fires."""
        on_node = self._firing.setdefault(alert.node_id, {})
        if alert.state == "firing":
            on_node[alert.id] = alert
        elif on_node.pop(alert.id, None) is None:
            return
        if not on_node:
            del self._firing[alert.node_id]
        self._status_changed(alert.node_id)

    def firing(self, node_id: int) -> list[Alert]:
        return list(self._firing.get(node_id, {}).values())

    def _status_changed(self, node_id: int) -> None:
        row = self._row_of.get(node_id)
        col = self._column_of.get("status")
        if row is not None and col is not None:
            cell = self.index(row, col)
            self.dataChanged.emit(cell, cell)

    def _tooltip(self, node: p.NodeInfo, key: str) -> str | None:
        if key == "status":
            seen = fmt_ago(node.last_seen)
            text = f"{node.name} is {'online' if node.online else 'offline'}; last heard from {seen}"
            if not node.online and node.offline_reason:
                text += f"\nWhy: {node.offline_reason}"
            alerts = sorted(self.firing(node.id), key=lambda a: -_SEVERITY_RANK[a.severity])
            return "\n".join([text, *(f"{a.severity}: {a.rule}" for a in alerts)])
        if key == "load1" and node.latest is not None:
            m = node.latest.metrics
            return f"Load average 1/5/15 min: {m.load1:.2f} / {m.load5:.2f} / {m.load15:.2f}"
        if key == "os" and node.host is not None:
            h = node.host
            return f"{h.os} {h.os_version}, kernel {h.kernel}, {h.arch}"
        return None

    # ------------------------------------------------------------ queries

    def node(self, node_id: int) -> p.NodeInfo | None:
        row = self._row_of.get(node_id)
        return None if row is None else self._rows[row]

    def display_name(self, node_id: int) -> str:
        """The node's name, with its id when another node has the same name ("vm (#12)"): two
        hosts both called "vm" must not look like one in the table, tabs and console."""
        node = self.node(node_id)
        if node is None:
            return f"node {node_id}"
        return f"{node.name} (#{node.id})" if node.name in self._shared_names else node.name

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

    def show_cached(self, nodes: list[p.NodeInfo], saved_at: float) -> None:
        """The last known fleet, kept from an earlier run: shown, marked stale, until a live list."""
        self.apply_snapshot(nodes)
        self._set_stale(saved_at)

    def _set_stale(self, since: float | None) -> None:
        if since == self.stale_since:
            return
        self.stale_since = since
        if self._rows and "status" in self._column_of:
            col = self._column_of["status"]
            self.dataChanged.emit(self.index(0, col), self.index(len(self._rows) - 1, col))
        self.stale_changed.emit(since)

    def apply_snapshot(self, nodes: list[p.NodeInfo]) -> None:
        """A full list (socket snapshot or REST poll): diff it against what the rows hold."""
        self._set_stale(None)  # cached rows of the same core are diffed in place, not flashed away
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
        new = p.NodeInfo(
            **{
                **_fields(old),
                "online": status.online,
                "last_seen": status.last_seen,
                "offline_reason": None if status.online else status.reason,
            }
        )
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
        self._set_stale(None)
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
            i
            for i, c in enumerate(self.columns)
            if c.cell(old, now) != c.cell(new, now) or (c.key == "status" and old.online != new.online)
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
        names = Counter(n.name for n in self._rows)
        shared = frozenset(name for name, count in names.items() if count > 1)
        if shared != self._shared_names:
            # Rows whose name gained or lost a twin show (or drop) their id.
            flipped = shared ^ self._shared_names
            self._shared_names = shared
            col = self._column_of.get("name")
            for row, n in enumerate(self._rows):
                if n.name in flipped:
                    if col is not None:
                        self.dataChanged.emit(self.index(row, col), self.index(row, col))
                    self.node_changed.emit(n.id)
        facets = (
            frozenset(n.group for n in self._rows if n.group),
            frozenset(t for n in self._rows for t in n.tags),
        )
        if facets != self._facets:
            self._facets = facets
            self.facets_changed.emit()

    def _tick(self) -> None:
        if self._rows and "last_seen" in self._column_of:
            col = self._column_of["last_seen"]
            top = self.index(0, col)
            bottom = self.index(len(self._rows) - 1, col)
            self.dataChanged.emit(top, bottom, [Qt.ItemDataRole.DisplayRole, SortRole])


def _runs(cols: list[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 7] -> [(1, 3), (7, 7)]"""
    out: list[tuple[int, int]] = []
    for c in cols:
        if out and out[-1][1] == c - 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
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
        self._core: int | None = None  # a core's slot (models/merged.py)
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

    def set_core(self, slot: int | None) -> None:
        self._refilter("_core", slot)

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
        if (
            self._core is not None
            and model.data(model.index(source_row, 0, source_parent), CoreRole) != self._core
        ):
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
