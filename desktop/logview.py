"""A node's logs: a bounded table model of entries, and the Logs tab (source, filters, Follow) that reads
the journal, a Windows Event Log or an allowlisted file through the core: once over REST, or followed
over the live socket."""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor, QFontDatabase
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import protocol as p
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import Session

Index = QModelIndex | QPersistentModelIndex
SCROLLBACK = 10_000  # entries kept in the table; the oldest go first
PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
RANGES = (
    ("Any time", None),
    ("Last 15 min", 900),
    ("Last hour", 3600),
    ("Last 6 h", 6 * 3600),
    ("Last 24 h", 86400),
)
OPERATOR_HINT = "Reading logs needs the operator role: logs can carry secrets."
UNIT_HINT = "unit, e.g. nginx.service"


class LogsModel(QAbstractTableModel):
    """Log entries, oldest first, at most `limit` of them: appending past it drops the oldest rows."""

    headers = ("Time", "Priority", "Unit", "Message")

    def __init__(self, limit: int = SCROLLBACK, parent: Any = None) -> None:
        super().__init__(parent)
        self.limit = limit
        self.entries: list[p.LogEntry] = []
        self.dropped = 0  # rows that fell off the top, ever

    def clear(self) -> None:
        self.beginResetModel()
        self.entries = []
        self.endResetModel()

    def append(self, entries: list[p.LogEntry]) -> None:
        if not entries:
            return
        entries = entries[-self.limit :]
        over = len(self.entries) + len(entries) - self.limit
        if over > 0:
            self.beginRemoveRows(QModelIndex(), 0, over - 1)
            del self.entries[:over]
            self.endRemoveRows()
            self.dropped += over
        first = len(self.entries)
        self.beginInsertRows(QModelIndex(), first, first + len(entries) - 1)
        self.entries.extend(entries)
        self.endInsertRows()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.entries)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.headers)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.entries):
            return None
        e = self.entries[index.row()]
        col = index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            if col == 0:
                return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.ts)) if e.ts is not None else ""
            if col == 1:
                return PRIORITIES[e.priority] if e.priority is not None and 0 <= e.priority <= 7 else ""
            if col == 2:
                return e.unit or ""
            return e.message
        if role == Qt.ItemDataRole.ForegroundRole and col == 1 and e.priority is not None and e.priority <= 3:
            return QBrush(QColor("#d9534f"))  # err and worse stand out
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.headers[section] if 0 <= section < len(self.headers) else None
        return None


class LogsPanel(QWidget):
    """The Logs tab of a node view. Loads the sources on first show; Load reads once, Follow streams."""

    def __init__(self, ctx: AppContext, node_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.node_id = node_id
        self.can_read = False
        self.loads = 0  # completed reads (and source lists); tests wait on them
        self.sources: p.LogSources | None = None
        self.follow_id: str | None = None
        self.model = LogsModel(parent=self)

        self.source = QComboBox()
        self.source.setAccessibleName("Log source")
        self.source.setMinimumContentsLength(24)
        self.source.currentIndexChanged.connect(lambda _i: self._update_controls())
        self.unit = QLineEdit()
        self.unit.setPlaceholderText(UNIT_HINT)
        self.unit.setAccessibleName("Unit")
        self.priority = QComboBox()
        self.priority.addItem("Any priority", None)
        for level, name in enumerate(PRIORITIES):
            self.priority.addItem(f"{name} or worse" if level < 7 else "debug (all)", level)
        self.range = QComboBox()
        for label, seconds in RANGES:
            self.range.addItem(label, seconds)
        self.lines = QSpinBox()
        self.lines.setRange(1, p.MAX_LOG_LINES)
        self.lines.setValue(200)
        self.lines.setSuffix(" lines")
        self.match = QLineEdit()
        self.match.setPlaceholderText("containing…")
        self.match.setAccessibleName("Lines containing")
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(self.load)
        self.follow_button = QPushButton("Follow")
        self.follow_button.setCheckable(True)
        self.follow_button.toggled.connect(self._follow_toggled)
        bar = QHBoxLayout()
        for w in (self.source, self.unit, self.priority, self.range, self.lines, self.match):
            bar.addWidget(w)
        bar.addWidget(self.load_button)
        bar.addWidget(self.follow_button)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.table = QTableView()
        self.table.setAccessibleName("Log lines")
        self.table.setModel(self.model)
        self.table.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)

        ctx.live.logs_chunk.connect(self._chunk)
        ctx.rest.session_changed.connect(self._session_changed)
        self._session_changed(ctx.rest.session)

    # ------------------------------------------------------------ state

    def _session_changed(self, session: Session | None) -> None:
        self.can_read = session is not None and session.can_edit
        if not self.can_read:
            self.status.setText(OPERATOR_HINT)
            self.follow_button.setChecked(False)
        self._update_controls()

    def _filtered(self) -> bool:
        """The source has units, priorities and times of its own: the journal or a Windows Event Log."""
        source = self.current_source() or ""
        return source == p.JOURNAL or source.startswith(p.EVENTLOG_PREFIX)

    def _update_controls(self) -> None:
        filtered = self._filtered()
        has_source = self.source.count() > 0
        for w in (self.unit, self.priority, self.range):
            w.setEnabled(filtered)  # files have no units, priorities or times of their own
            w.setToolTip(
                "" if filtered else "These filters apply to the journal and the Windows Event Log only."
            )
        eventlog = (self.current_source() or "").startswith(p.EVENTLOG_PREFIX)
        # An event's source (Service Control Manager, MsiInstaller...) stands where a unit does.
        self.unit.setPlaceholderText("event source, e.g. Service Control Manager" if eventlog else UNIT_HINT)
        following = self.follow_id is not None
        self.load_button.setEnabled(self.can_read and has_source and not following)
        self.follow_button.setEnabled(self.can_read and has_source)
        self.source.setEnabled(not following)

    def current_source(self) -> str | None:
        data = self.source.currentData()
        return data if isinstance(data, str) else None

    def query(self) -> p.LogQuery:
        source = self.current_source() or p.JOURNAL
        if not self._filtered():
            return p.LogQuery(source=source, lines=self.lines.value(), match=self.match.text() or None)
        seconds = self.range.currentData()
        return p.LogQuery(
            source=source,
            unit=self.unit.text().strip() or None,
            priority=self.priority.currentData(),
            since=time.time() - seconds if seconds else None,
            lines=self.lines.value(),
            match=self.match.text() or None,
        )

    # ------------------------------------------------------------ sources

    def refresh_sources(self) -> None:
        if self.can_read:
            self.ctx.aio.spawn(self._sources(), f"log-sources-{self.node_id}")

    async def _sources(self) -> None:
        containers: list[str] = []
        try:
            answer = await self.ctx.rest.log_sources(self.node_id)
            if answer.sources is not None and answer.sources.containers:
                # The names come from the node's latest container list; the agent allows them all.
                with contextlib.suppress(CoreError):
                    listed = await self.ctx.rest.containers(self.node_id)
                    containers = [c.name for c in listed.containers]
        except CoreError as exc:
            self.status.setText(f"Could not list log sources: {exc.message}")
            return
        finally:
            self.loads += 1
        self.sources = s = answer.sources
        self.source.clear()
        if s is None:
            self.status.setText(
                "This node's agent does not offer logs (an older agent, or it is not connected)."
            )
        else:
            if s.journal:
                self.source.addItem("System journal", p.JOURNAL)
            for channel in s.eventlogs:
                self.source.addItem(f"Windows Event Log: {channel}", f"{p.EVENTLOG_PREFIX}{channel}")
            for f in s.files:
                self.source.addItem(f, f)
            for name in containers:
                self.source.addItem(f"Container {name}", f"{p.CONTAINER_PREFIX}{name}")
            if self.source.count() == 0:
                self.status.setText(
                    "No logs are allowed by this agent's config: set [logs] journal or files on the node."
                )
            elif s.note and not s.eventlogs:  # on Windows the Event Log stands where the journal would
                self.status.setText(f"Journal unavailable: {s.note}")
            else:
                self.status.setText("")
        self._update_controls()

    # ------------------------------------------------------------ one-shot

    def load(self) -> None:
        if self.can_read and self.current_source() is not None:
            self.status.setText("Loading…")
            self.ctx.aio.spawn(self._load(self.query()), f"logs-{self.node_id}")

    async def _load(self, query: p.LogQuery) -> None:
        try:
            answer = await self.ctx.rest.logs(self.node_id, query)
        except CoreError as exc:
            self.status.setText(f"Could not read logs: {exc.message}")
            return
        finally:
            self.loads += 1
        self.model.clear()
        self.model.append(answer.entries)
        self.table.scrollToBottom()
        words = f"{len(answer.entries)} lines"
        if answer.truncated:
            words += f" (cut: {answer.note})" if answer.note else " (cut by the agent's limits)"
        self.status.setText(words)

    # ------------------------------------------------------------ follow

    def _follow_toggled(self, on: bool) -> None:
        if on and self.follow_id is None and self.can_read and self.current_source() is not None:
            self.follow_id = "follow-" + secrets.token_hex(6)
            self.model.clear()
            frame = p.LogsFollow(request_id=self.follow_id, node_id=self.node_id, query=self.query())
            self.status.setText("Following…")
            self.ctx.aio.spawn(self._send(frame), "logs-follow")
        elif not on and self.follow_id is not None:
            rid, self.follow_id = self.follow_id, None
            self.ctx.aio.spawn(self._send(p.LogsStop(request_id=rid)), "logs-stop")
            self.status.setText("Stopped following.")
        elif on:
            self.follow_button.setChecked(False)
        self._update_controls()

    async def _send(self, frame: p.Frame) -> None:
        if not await self.ctx.live.send_frame(frame) and isinstance(frame, p.LogsFollow):
            self._end_follow("Cannot follow: the live connection to the core is down.")

    def _end_follow(self, text: str) -> None:
        self.follow_id = None
        self.follow_button.blockSignals(True)
        self.follow_button.setChecked(False)
        self.follow_button.blockSignals(False)
        self.status.setText(text)
        self._update_controls()

    def _chunk(self, chunk: p.LogsChunk) -> None:
        if chunk.request_id != self.follow_id or chunk.node_id != self.node_id:
            return
        if chunk.entries:
            bottom = self.table.verticalScrollBar().value() >= self.table.verticalScrollBar().maximum()
            self.model.append(chunk.entries)
            if bottom:
                self.table.scrollToBottom()
        if chunk.error is not None:
            self._end_follow(f"Following stopped: {chunk.error}")
        elif chunk.eof:
            self._end_follow(f"Following ended{': ' + chunk.note if chunk.note else '.'}")
        elif chunk.truncated:
            self.status.setText(f"Following… (some lines skipped: {chunk.note})")
        else:
            self.status.setText(f"Following… {self.model.rowCount()} lines")

    def shutdown(self) -> None:
        if self.follow_id is not None:
            rid, self.follow_id = self.follow_id, None
            self.ctx.aio.spawn(self.ctx.live.send_frame(p.LogsStop(request_id=rid)), "logs-stop")
        for signal, slot in (
            (self.ctx.live.logs_chunk, self._chunk),
            (self.ctx.rest.session_changed, self._session_changed),
        ):
            with contextlib.suppress(RuntimeError, TypeError):
                signal.disconnect(slot)
