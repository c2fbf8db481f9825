"""An incident snapshot on screen: the top processes by CPU and by memory, and the journal lines.

Given data only (an IncidentSnapshot, or the note saying why there is none); whoever shows it
fetches it. ProcessesModel is any list of processes as a table.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QSplitter, QVBoxLayout, QWidget

from servermanager.common.incidents import IncidentSnapshot, ProcessInfo
from servermanager.desktop.format import NA, fmt_bytes, fmt_pct, fmt_rate, fmt_time
from servermanager.desktop.models.records import RecordsModel
from servermanager.desktop.widgets import record_table

NO_SNAPSHOT = "No snapshot: one is taken only when an alert fires (never for offline alerts)."
NO_JOURNAL = "No journal lines: the agent's config leaves them out ([incident] journal = false)."


def _cpu(p: ProcessInfo) -> str:
    return fmt_pct(p.cpu_pct, 1)


class ProcessesModel(RecordsModel[ProcessInfo]):
    """Processes as measured by an agent, one row each, in the order given."""

    columns = (
        ("PID", lambda p: str(p.pid)),
        ("Name", lambda p: p.name),
        ("User", lambda p: p.user or NA),
        ("CPU", _cpu),
        ("Memory", lambda p: fmt_bytes(p.rss)),
        ("Read", lambda p: fmt_rate(p.read_bps)),
        ("Write", lambda p: fmt_rate(p.write_bps)),
        ("Command", lambda p: p.cmd or ""),
    )


def _titled(title: str, widget: QWidget) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 4, 0, 0)
    label = QLabel(title)
    font = label.font()
    font.setBold(True)
    label.setFont(font)
    layout.addWidget(label)
    layout.addWidget(widget, 1)
    return box


class SnapshotView(QWidget):
    """One snapshot: when it was taken and what the agent noted, two process tables, the journal."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.caption = QLabel(NO_SNAPSHOT)
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.by_cpu = ProcessesModel(self)
        self.by_memory = ProcessesModel(self)
        self.cpu_table = record_table(self.by_cpu)
        self.memory_table = record_table(self.by_memory)
        self.cpu_table.setAccessibleName("Top processes by CPU")
        self.memory_table.setAccessibleName("Top processes by memory")
        self.journal = QPlainTextEdit()
        self.journal.setAccessibleName("Journal")
        self.journal.setReadOnly(True)
        self.journal.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(_titled("Top processes by CPU", self.cpu_table))
        split.addWidget(_titled("Top processes by memory", self.memory_table))
        split.addWidget(_titled("Journal", self.journal))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.caption)
        layout.addWidget(split, 1)
        self.show_snapshot(None, None)

    def show_snapshot(self, snap: IncidentSnapshot | None, note: str | None) -> None:
        """Show `snap`, or, without one, `note` (why there is none) in its place."""
        if snap is None:
            self.caption.setText(note or NO_SNAPSHOT)
            self.by_cpu.set_records([])
            self.by_memory.set_records([])
            self.journal.clear()
            self.journal.setPlaceholderText("")
            return
        caption = (
            f"Taken {fmt_time(snap.ts, seconds=True)} on the node; CPU and I/O measured over "
            f"{snap.window:g} s. CPU is a share of the whole machine."
        )
        if snap.note:
            caption += f"\n{snap.note}"
        self.caption.setText(caption)
        self.by_cpu.set_records(snap.top_cpu)
        self.by_memory.set_records(snap.top_memory)
        if snap.journal is None:
            self.journal.clear()
            self.journal.setPlaceholderText(NO_JOURNAL)
        else:
            self.journal.setPlainText("\n".join(snap.journal))
            self.journal.setPlaceholderText("The journal had nothing for those minutes.")
