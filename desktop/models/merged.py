"""The fleets of several cores as one table model: each core's rows in turn, a Core column, nodes keyed by (core, id)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPersistentModelIndex, Qt, Signal

from servermanager.common import protocol as p
from servermanager.desktop.models.fleet import Column, CoreRole, NodeIdRole, NodesModel, OnlineRole, SortRole

Index = QModelIndex | QPersistentModelIndex


# A node of the window is (core slot, node id) packed in one int, so the fleet table's selection,
# the palette and the window's tabs key nodes of several cores without a second id type. The first
# core is slot 0: its keys are its node ids, and a window with one core behaves as it always did.
_SLOT_SHIFT = 40  # SQLite row ids of nodes stay far below 2**40
_ID_MASK = (1 << _SLOT_SHIFT) - 1


def node_key(slot: int, node_id: int) -> int:
    return (slot << _SLOT_SHIFT) | node_id


def split_key(key: int) -> tuple[int, int]:
    """(core slot, node id) of a node key."""
    return key >> _SLOT_SHIFT, key & _ID_MASK


def _core_cell(_node: p.NodeInfo, _now: float) -> tuple[str, Any]:
    return "", ""  # filled in by MergedFleet, which knows the row's core


CORE_COLUMN = Column("core", "Core", _core_cell, 96)


class _Source(QObject):
    """One core's model in the merged fleet, and the connections that relay its changes.

    A QObject owned by the merged model, so that its connections to the core's model (which may
    outlive the window) are dropped with it.
    """

    def __init__(self, fleet: MergedFleet, slot: int, name: str, model: NodesModel) -> None:
        super().__init__(fleet)
        self.fleet = fleet
        self.slot = slot
        self.name = name
        self.model = model
        self.problem: str | None = None  # why this core's rows are not current (None: they are)
        self.detail = ""
        self.connections = [
            model.rowsAboutToBeInserted.connect(self._inserting),
            model.rowsInserted.connect(self._done_inserting),
            model.rowsAboutToBeRemoved.connect(self._removing),
            model.rowsRemoved.connect(self._done_removing),
            model.modelAboutToBeReset.connect(self._resetting),
            model.modelReset.connect(self._done_resetting),
            model.dataChanged.connect(self._changed),
            model.counts_changed.connect(self._counts),
            model.facets_changed.connect(self._facets),
        ]
        if slot == 0:
            self.connections.append(model.stale_changed.connect(self._stale))

    def disconnect_all(self) -> None:
        for connection in self.connections:
            QObject.disconnect(connection)
        self.connections = []

    def _inserting(self, _parent: QModelIndex, first: int, last: int) -> None:
        offset = self.fleet._offset(self)
        self.fleet.beginInsertRows(QModelIndex(), offset + first, offset + last)

    def _done_inserting(self, *_args: object) -> None:
        self.fleet.endInsertRows()

    def _removing(self, _parent: QModelIndex, first: int, last: int) -> None:
        offset = self.fleet._offset(self)
        self.fleet.beginRemoveRows(QModelIndex(), offset + first, offset + last)

    def _done_removing(self, *_args: object) -> None:
        self.fleet.endRemoveRows()

    def _resetting(self) -> None:
        self.fleet.beginResetModel()

    def _done_resetting(self) -> None:
        self.fleet.endResetModel()

    def _changed(self, top: QModelIndex, bottom: QModelIndex, roles: Sequence[int] = ()) -> None:
        fleet = self.fleet
        offset = fleet._offset(self)
        fleet.dataChanged.emit(
            fleet.index(offset + top.row(), top.column()),
            fleet.index(offset + bottom.row(), bottom.column()),
            list(roles),
        )

    def _counts(self, *_args: object) -> None:
        self.fleet._emit_counts()

    def _facets(self) -> None:
        self.fleet.facets_changed.emit()

    def _stale(self, since: object) -> None:
        self.fleet.stale_changed.emit(since)


class MergedFleet(QAbstractTableModel):
    """Rows of each core's NodesModel, one core after the other, in the order the cores were added.

    The columns are the cores' own, then "Core" (last, so a column's index is the same as in each
    core's model; the table shows it first). NodeIdRole answers the node key (see node_key). Rows
    of a core that cannot be reached read as offline, with "Unreachable" as their status, while
    the other cores' rows go on updating.
    """

    counts_changed = Signal(int, int)  # online, offline, over every core
    facets_changed = Signal()
    stale_changed = Signal(object)  # the first core's: the cached rows shown at start-up
    cores_changed = Signal()  # a core was added or removed

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._sources: list[_Source] = []
        self.columns: tuple[Column, ...] = (CORE_COLUMN,)
        self._column_of: dict[str, int] = {"core": 0}

    # ------------------------------------------------------------ cores

    def add_core(self, slot: int, name: str, model: NodesModel) -> None:
        if any(s.slot == slot for s in self._sources):
            raise ValueError(f"core slot {slot} is already in the fleet")
        if not self._sources:
            self.beginResetModel()
            self.columns = (*model.columns, CORE_COLUMN)
            self._column_of = {c.key: i for i, c in enumerate(self.columns)}
            self.endResetModel()
        first = self.rowCount()
        count = model.rowCount()
        if count:
            self.beginInsertRows(QModelIndex(), first, first + count - 1)
        self._sources.append(_Source(self, slot, name, model))
        if count:
            self.endInsertRows()
        self._emit_counts()
        self.facets_changed.emit()
        self.cores_changed.emit()

    def remove_core(self, slot: int) -> None:
        src = self._source(slot)
        if src is None:
            return
        src.disconnect_all()  # the model belongs to the core's context, which goes with it
        first, count = self._offset(src), src.model.rowCount()
        if count:
            self.beginRemoveRows(QModelIndex(), first, first + count - 1)
        self._sources.remove(src)
        if count:
            self.endRemoveRows()
        src.deleteLater()
        self._emit_counts()
        self.facets_changed.emit()
        self.cores_changed.emit()

    def set_problem(self, slot: int, problem: str | None, detail: str = "") -> None:
        """Mark a core's rows as not current ("Unreachable"), or current again (None)."""
        src = self._source(slot)
        if src is None or (src.problem, src.detail) == (problem, detail):
            return
        src.problem, src.detail = problem, detail
        count = src.model.rowCount()
        if count:
            first = self._offset(src)
            self.dataChanged.emit(self.index(first, 0), self.index(first + count - 1, len(self.columns) - 1))
        self._emit_counts()

    def rename_core(self, slot: int, name: str) -> None:
        src = self._source(slot)
        if src is None or src.name == name:
            return
        src.name = name
        count = src.model.rowCount()
        if count:
            first, col = self._offset(src), self.column("core")
            self.dataChanged.emit(self.index(first, col), self.index(first + count - 1, col))
        self.cores_changed.emit()

    def problem(self, slot: int) -> str | None:
        src = self._source(slot)
        return None if src is None else src.problem

    def slots(self) -> list[int]:
        return [s.slot for s in self._sources]

    def core_names(self) -> dict[int, str]:
        return {s.slot: s.name for s in self._sources}

    def core_model(self, slot: int) -> NodesModel | None:
        src = self._source(slot)
        return None if src is None else src.model

    # ------------------------------------------------------------ queries (NodesModel's, by node key)

    def column(self, key: str) -> int:
        return self._column_of[key]

    @property
    def stale_since(self) -> float | None:
        first = self._source(0)
        return None if first is None else first.model.stale_since

    def node(self, key: int) -> p.NodeInfo | None:
        slot, node_id = split_key(key)
        model = self.core_model(slot)
        return None if model is None else model.node(node_id)

    def display_name(self, key: int) -> str:
        """The node's name as its core's table shows it, and which core when there are several."""
        slot, node_id = split_key(key)
        src = self._source(slot)
        if src is None:
            return f"node {node_id}"
        name = src.model.display_name(node_id)
        return f"{name} · {src.name}" if len(self._sources) > 1 else name

    def keyed_nodes(self) -> list[tuple[int, p.NodeInfo]]:
        return [(node_key(s.slot, n.id), n) for s in self._sources for n in s.model.nodes()]

    def row_of(self, key: int) -> int | None:
        slot, node_id = split_key(key)
        src = self._source(slot)
        row = None if src is None else src.model.row_of(node_id)
        return None if src is None or row is None else self._offset(src) + row

    def counts(self) -> tuple[int, int]:
        """Online and offline nodes; a node of an unreachable core counts as offline."""
        up = down = 0
        for s in self._sources:
            u, d = s.model.counts()
            if s.problem is not None:
                u, d = 0, u + d
            up, down = up + u, down + d
        return up, down

    def groups(self) -> list[str]:
        return sorted({g for s in self._sources for g in s.model.groups()}, key=str.lower)

    def tags(self) -> list[str]:
        return sorted({t for s in self._sources for t in s.model.tags()}, key=str.lower)

    # ------------------------------------------------------------ Qt API

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else sum(s.model.rowCount() for s in self._sources)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.columns):
            return None
        if section == len(self.columns) - 1:
            return CORE_COLUMN.header if role == Qt.ItemDataRole.DisplayRole else None
        first = self._sources[0].model if self._sources else None
        return None if first is None else first.headerData(section, orientation, role)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.column() >= len(self.columns):
            return None
        found = self._locate(index.row())
        if found is None:
            return None
        src, row = found
        col = self.columns[index.column()]
        source_index = src.model.index(row, index.column() if col.key != "core" else 0)
        if role == NodeIdRole:
            node_id = source_index.data(NodeIdRole)
            return None if node_id is None else node_key(src.slot, int(node_id))
        if role == CoreRole:
            return src.slot
        if role == OnlineRole and src.problem is not None:
            return False  # the core cannot say how its nodes are: not "online", whatever they last were
        if col.key == "core":
            if role in (Qt.ItemDataRole.DisplayRole, SortRole):
                return src.name
            if role == Qt.ItemDataRole.ToolTipRole:
                return self._why(src) if src.problem else src.name
            return source_index.data(role) if role == OnlineRole else None
        if src.problem is not None:
            if col.key == "status" and role == Qt.ItemDataRole.DisplayRole:
                return src.problem
            if col.key == "status" and role == Qt.ItemDataRole.ToolTipRole:
                return self._why(src)
        return source_index.data(role)

    # ------------------------------------------------------------ internals

    @staticmethod
    def _why(src: _Source) -> str:
        """ "Core Site B: unreachable (Cannot reach the core at …)": whose rows, and why not current."""
        text = f"Core {src.name}: {(src.problem or '').lower()}"
        return f"{text} ({src.detail})" if src.detail else text

    def _source(self, slot: int) -> _Source | None:
        return next((s for s in self._sources if s.slot == slot), None)

    def _offset(self, src: _Source) -> int:
        offset = 0
        for s in self._sources:
            if s is src:
                return offset
            offset += s.model.rowCount()
        return offset

    def _locate(self, row: int) -> tuple[_Source, int] | None:
        for s in self._sources:
            count = s.model.rowCount()
            if row < count:
                return s, row
            row -= count
        return None

    def _emit_counts(self, *_args: object) -> None:
        self.counts_changed.emit(*self.counts())
