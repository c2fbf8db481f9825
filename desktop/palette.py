"""The command palette (Ctrl+K): a filter field over nodes, views and actions; Up/Down, Enter runs, Esc closes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QAbstractItemView, QDialog, QLabel, QLineEdit, QListView, QVBoxLayout, QWidget

Index = QModelIndex | QPersistentModelIndex

KeyRole = Qt.ItemDataRole.UserRole + 1  # the entry's key: "node:3", "view:alerts", "action:refresh"
KindRole = Qt.ItemDataRole.UserRole + 2


@dataclass(frozen=True)
class PaletteEntry:
    """One line of the palette; `key` is what the window runs when it is chosen."""

    key: str
    kind: str  # "Node", "View" or "Action"
    text: str
    shortcut: str = ""  # as the menus show it ("Ctrl+Shift+A"), or ""


def match_score(query: str, text: str) -> int | None:
    """How well text matches query (lower is better), None when it does not.

    A substring wins (earlier is better); otherwise the query as pieces of word beginnings
    ("aulo" or "alog" find "Audit log", "ono" finds "Open node ..."), after every substring match.
    Letters merely in order are not enough: "db" would find "Open node web-1".
    """
    q = "".join(query.lower().split())
    t = text.lower()
    if not q:
        return 0
    at = t.find(q)
    if at >= 0:
        return at
    starts = [i for i, ch in enumerate(t) if ch.isalnum() and (i == 0 or not t[i - 1].isalnum())]
    return 1000 if _word_pieces(q, t, starts, 0, -2) else None


def _word_pieces(q: str, t: str, starts: list[int], qi: int, last: int) -> bool:
    """Can q[qi:] be matched, each letter right after the last one or at a later word's start?"""
    if qi == len(q):
        return True
    follow = last + 1
    if follow < len(t) and t[follow] == q[qi] and _word_pieces(q, t, starts, qi + 1, follow):
        return True
    return any(s > last and t[s] == q[qi] and _word_pieces(q, t, starts, qi + 1, s) for s in starts)


class PaletteModel(QAbstractListModel):
    """The entries that match the filter, best first; the view shows "text", tooltip the kind."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._all: list[PaletteEntry] = []
        self._shown: list[PaletteEntry] = []
        self._query = ""

    def set_entries(self, entries: Iterable[PaletteEntry]) -> None:
        self._all = list(entries)
        self._refilter()

    def set_filter(self, query: str) -> None:
        self._query = query
        self._refilter()

    def entry(self, row: int) -> PaletteEntry | None:
        return self._shown[row] if 0 <= row < len(self._shown) else None

    def entries(self) -> list[PaletteEntry]:
        return list(self._shown)

    def _refilter(self) -> None:
        scored = []
        for order, entry in enumerate(self._all):
            score = match_score(self._query, f"{entry.kind} {entry.text}")
            own = match_score(self._query, entry.text)  # "web" should rank "Open node web-1" by its name
            best = min((s for s in (score, own) if s is not None), default=None)
            if best is not None:
                scored.append((best, order, entry))
        self.beginResetModel()
        self._shown = [entry for _score, _order, entry in sorted(scored, key=lambda s: (s[0], s[1]))]
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._shown)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._shown):
            return None
        entry = self._shown[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{entry.text}  ·  {entry.shortcut}" if entry.shortcut else entry.text
        if role in (Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.AccessibleTextRole):
            where = f" ({entry.shortcut})" if entry.shortcut else ""
            return f"{entry.kind}: {entry.text}{where}"
        if role == KeyRole:
            return entry.key
        if role == KindRole:
            return entry.kind
        return None


class CommandPalette(QDialog):
    """A dumb popup: the window fills its entries and runs the key it emits."""

    chosen = Signal(str)  # the entry's key

    def __init__(self, entries: Iterable[PaletteEntry], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Command palette")
        self.setAccessibleName("Command palette")
        self.model = PaletteModel(self)
        self.model.set_entries(entries)
        self.filter = QLineEdit()
        self.filter.setObjectName("paletteFilter")
        self.filter.setPlaceholderText("Type a node, a view or an action…")
        self.filter.setAccessibleName("Command palette filter")
        self.filter.textChanged.connect(self._filter_changed)
        self.filter.installEventFilter(self)  # Up/Down move in the list while typing
        self.list = QListView()
        self.list.setObjectName("paletteList")
        self.list.setAccessibleName("Matching nodes, views and actions")
        self.list.setModel(self.model)
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.list.setUniformItemSizes(True)
        self.list.activated.connect(self._activated)
        self.empty = QLabel("Nothing matches.")
        self.empty.hide()
        layout = QVBoxLayout(self)
        layout.addWidget(self.filter)
        layout.addWidget(self.list)
        layout.addWidget(self.empty)
        # Wide enough for "Open node <a long name>" in the user's font, at any scale.
        metrics = self.fontMetrics()
        self.resize(metrics.horizontalAdvance("M") * 40, metrics.height() * 22)
        self._select_first()

    def _filter_changed(self, text: str) -> None:
        self.model.set_filter(text)
        self._select_first()

    def _select_first(self) -> None:
        empty = self.model.rowCount() == 0
        self.empty.setVisible(empty)
        if not empty:
            self.list.setCurrentIndex(self.model.index(0, 0))

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.filter and event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            key = event.key()
            if key in (Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_PageUp, Qt.Key.Key_PageDown):
                self._move(key)
                return True
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.run_current()
                return True
        return super().eventFilter(watched, event)

    def _move(self, key: int) -> None:
        rows = self.model.rowCount()
        if not rows:
            return
        row = self.list.currentIndex().row()
        step = {Qt.Key.Key_Up: -1, Qt.Key.Key_Down: 1, Qt.Key.Key_PageUp: -10, Qt.Key.Key_PageDown: 10}[
            Qt.Key(key)
        ]
        self.list.setCurrentIndex(self.model.index(max(0, min(rows - 1, row + step)), 0))

    def run_current(self) -> None:
        index = self.list.currentIndex()
        if index.isValid():
            self._activated(index)

    def _activated(self, index: QModelIndex) -> None:
        entry = self.model.entry(index.row())
        if entry is None:
            return
        self.accept()
        self.chosen.emit(entry.key)
