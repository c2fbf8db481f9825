"""Batch operations as item models: the dry run's verdict per node, and the result grid of a run."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

from servermanager.common import protocol as p
from servermanager.common import rest as m
from servermanager.common.status import FINAL
from servermanager.desktop.format import fmt_duration

Index = QModelIndex | QPersistentModelIndex
SortRole = Qt.ItemDataRole.UserRole + 1
NodeIdRole = Qt.ItemDataRole.UserRole + 2

# The words the grid uses for the core's run states: "sent" is running as far as anyone can tell.
STATUS_TEXT = {"sent": "running", "timeout": "timed out"}
# Worst first when sorted by status, so what needs a look comes to the top.
_STATUS_RANK = {
    "failed": 0,
    "timed out": 1,
    "error": 2,
    "lost": 3,
    "refused": 4,
    "offline": 5,
    "expired": 6,
    "cancelled": 7,
    "running": 8,
    "queued": 9,
    "ok": 10,
}
# What "Re-run on failed" runs again: whatever ran, or should have, and did not end well. A refusal is
# the agent's policy, which another try does not change; ok and cancelled were meant.
RERUN = frozenset({"failed", "timeout", "error", "lost", "offline", "expired"})
VERDICT_TEXT = {
    "run": "will run",
    "queue": "queued until back",
    "refused": "refuses",
    "unknown": "agent decides",
}


def status_text(status: str) -> str:
    return STATUS_TEXT.get(status, status)


class PreviewModel(QAbstractTableModel):
    """The dry run: one row per target node with its verdict and the reason, refusals first."""

    HEADERS = ("Node", "Verdict", "Reason")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.runs: list[m.PreviewRun] = []
        self.names: dict[int, str] = {}

    def set_preview(self, preview: m.CommandPreview | None, names: dict[int, str] | None = None) -> None:
        self.beginResetModel()
        order = {"refused": 0, "unknown": 1, "queue": 2, "run": 3}
        self.runs = sorted(preview.runs, key=lambda r: (order[r.verdict], r.name.lower())) if preview else []
        self.names = names or {}
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.runs)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.runs):
            return None
        run = self.runs[index.row()]
        if role == NodeIdRole:
            return run.node_id
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            col = index.column()
            if col == 0:
                return self.names.get(run.node_id, run.name)
            if col == 1:
                return VERDICT_TEXT[run.verdict]
            return run.reason or ""
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section] if 0 <= section < len(self.HEADERS) else None
        return None


@dataclass
class BatchRow:
    """One node's run as the grid shows it; output kept for "open output"."""

    node_id: int
    name: str
    status: str = "queued"  # the core's run state (queued, sent, ok, failed, ...)
    exit_code: int | None = None
    signal: int | None = None
    duration: float | None = None
    message: str | None = None
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in FINAL

    @property
    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)


def _exit(r: BatchRow) -> tuple[str, Any]:
    if r.signal is not None:
        return f"signal {r.signal}", 1000 + r.signal
    return ("" if r.exit_code is None else str(r.exit_code)), (-1 if r.exit_code is None else r.exit_code)


def _duration(r: BatchRow) -> tuple[str, Any]:
    d = r.duration
    if d is None:
        return "", -1.0
    # Most commands take well under a minute: hundredths say more there than "0s".
    return (f"{d:.2f} s" if d < 60 else fmt_duration(d)), d


def _message(r: BatchRow) -> str:
    if r.message:
        return r.message
    # The core marks a node that was offline when the command went out without a word: say it.
    return {
        "offline": "the node was offline when it was sent",
        "queued": "waits for the node to come back",
    }.get(r.status, "")


_COLUMNS: Sequence[tuple[str, Callable[[BatchRow], tuple[str, Any]]]] = (
    ("Node", lambda r: (r.name, r.name.lower())),
    ("Status", lambda r: (status_text(r.status), _STATUS_RANK.get(status_text(r.status), 99))),
    ("Exit code", _exit),
    ("Duration", _duration),
    ("Message", lambda r: (_message(r), _message(r).lower())),
)


class BatchModel(QAbstractTableModel):
    """The result grid of one batch run: nodes x (status, exit code, duration, message), fed by the
    POST reply, the live socket's output and results, and REST polls."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.command_id: str | None = None
        self.rows: list[BatchRow] = []
        self._row_of: dict[int, int] = {}

    def start(self, nodes: Sequence[tuple[int, str]]) -> None:
        """A new run on these (node id, name): every row queued until the core answers."""
        self.beginResetModel()
        self.command_id = None
        self.rows = [BatchRow(nid, name) for nid, name in nodes]
        self._row_of = {r.node_id: i for i, r in enumerate(self.rows)}
        self.endResetModel()

    def row(self, node_id: int) -> BatchRow | None:
        i = self._row_of.get(node_id)
        return None if i is None else self.rows[i]

    @property
    def finished(self) -> bool:
        return bool(self.rows) and all(r.done for r in self.rows)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            text = status_text(r.status)
            out[text] = out.get(text, 0) + 1
        return out

    def rerun_ids(self) -> list[int]:
        return [r.node_id for r in self.rows if r.status in RERUN]

    # ------------------------------------------------------------ updates

    def _changed(self, node_id: int) -> None:
        i = self._row_of[node_id]
        self.dataChanged.emit(self.index(i, 0), self.index(i, len(_COLUMNS) - 1))

    def apply_info(self, info: m.CommandInfo, *, fill: bool) -> None:
        """The core's record of the command; with fill its output replaces what was streamed."""
        self.command_id = info.id
        for run in info.runs:
            row = self.row(run.node_id)
            if row is None or (row.done and not fill):
                continue
            if run.status in FINAL or not row.done:
                row.status = run.status
            if run.status in FINAL:
                row.exit_code, row.signal, row.duration = run.exit_code, run.signal, run.duration
                row.message = run.message
                if fill:
                    row.stdout, row.stderr = [run.stdout], [run.stderr]
            self._changed(run.node_id)

    def fail_all(self, message: str) -> None:
        """The run never started (the core refused the request): every row says why."""
        for row in self.rows:
            row.status, row.message = "error", message
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, len(_COLUMNS) - 1))

    def apply_event(self, frame: p.CommandOutput | p.CommandResult) -> bool:
        """A live event of this command; False if it is not one of ours."""
        if frame.command_id != self.command_id:
            return False
        row = self.row(frame.node_id)
        if row is None or row.done:
            return row is not None
        if isinstance(frame, p.CommandOutput):
            (row.stdout if frame.stream == "stdout" else row.stderr).append(frame.data)
            if row.status in ("queued", "sent"):
                row.status = "sent"  # output means it runs, even if it was queued for an offline node
            self._changed(frame.node_id)
            return True
        row.status = frame.status
        row.exit_code, row.signal, row.duration = frame.exit_code, frame.signal, frame.duration
        row.message = frame.message
        self._changed(frame.node_id)
        return True

    # ------------------------------------------------------------ the model

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(_COLUMNS)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.rows):
            return None
        row = self.rows[index.row()]
        if role == NodeIdRole:
            return row.node_id
        text, key = _COLUMNS[index.column()][1](row)
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return text
        if role == SortRole:
            return key
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() in (2, 3):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return _COLUMNS[section][0] if 0 <= section < len(_COLUMNS) else None
        return None

    def to_csv(self) -> str:
        """The grid as CSV: one line per node, durations in seconds, the output kept out (it can be
        megabytes per node: "open output" has it)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["node_id", "node", "status", "exit_code", "signal", "duration_s", "message"])
        for r in self.rows:
            writer.writerow(
                [
                    r.node_id,
                    r.name,
                    status_text(r.status),
                    "" if r.exit_code is None else r.exit_code,
                    "" if r.signal is None else r.signal,
                    "" if r.duration is None else f"{r.duration:.3f}",
                    _message(r),
                ]
            )
        return buf.getvalue()
