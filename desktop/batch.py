"""Batch operations on many nodes: a command or service action previewed (the core's dry run), run
into a live result grid, and group and tags edited on many nodes at once."""

from __future__ import annotations

import asyncio
import contextlib
import html
import shlex
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEvent, QModelIndex, QObject, QPoint, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import protocol as p
from servermanager.common import rest as m
from servermanager.desktop.context import AppContext
from servermanager.desktop.dialogs import bad_tags, parse_tags
from servermanager.desktop.models.batch import BatchModel, NodeIdRole, PreviewModel, SortRole, status_text
from servermanager.desktop.net.errors import CoreError

POLL_EVERY = 2.0  # seconds between REST checks of a running batch (fills in missed socket events)
SERVICE_ACTIONS = ("status", "restart", "start", "stop", "enable", "disable")

Request = str | list[str] | p.ServiceRequest


def describe(request: Request) -> str:
    if isinstance(request, p.ServiceRequest):
        return f"service {request.action} {request.name or ''}".strip()
    return request if isinstance(request, str) else shlex.join(request)


def _shortcut(action: QAction) -> str:
    return action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)


def _button(action: QAction) -> QPushButton:
    """A button that triggers `action` and says its key, so the grid's keys are discoverable."""
    button = QPushButton(action.text())
    key = _shortcut(action)
    button.setToolTip(f"{action.toolTip()} ({key})" if key else action.toolTip())
    button.setAccessibleName(action.text().replace("&", "").rstrip("…"))
    button.clicked.connect(action.trigger)
    action.enabledChanged.connect(button.setEnabled)
    button.setEnabled(action.isEnabled())
    return button


# ---------------------------------------------------------------- the request and its dry run


class BatchDialog(QDialog):
    """Targets and a command (or service action); Preview asks the core who would run it and who
    would refuse and why; Run is possible only while the preview shown is the one for the form."""

    run_requested = Signal(object, object, float, list)  # Targets, Request, timeout, [(node id, name)]

    def __init__(
        self, ctx: AppContext, node_ids: list[int], *, service: bool = False, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.service = service
        self.preview: m.CommandPreview | None = None
        self.previews = 0  # answers shown; tests wait on it
        self.setWindowTitle("Service action on many nodes" if service else "Run a command on many nodes")
        self.setAccessibleName(self.windowTitle())
        self.resize(760, 480)

        self.targets = QComboBox()
        self.targets.setAccessibleName("Targets")
        if node_ids:
            names = ", ".join(ctx.model.display_name(n) for n in node_ids[:5])
            more = f" and {len(node_ids) - 5} more" if len(node_ids) > 5 else ""
            self.targets.addItem(
                f"Selected nodes ({len(node_ids)}): {names}{more}", m.Targets(nodes=node_ids)
            )
        for group in ctx.model.groups():
            self.targets.addItem(f"Group: {group}", m.Targets(group=group))
        for tag in ctx.model.tags():
            self.targets.addItem(f"Tag: {tag}", m.Targets(tag=tag))
        self.targets.addItem("All nodes", m.Targets(all=True))

        self.command = QLineEdit()
        self.command.setAccessibleName("Command")
        self.command.setPlaceholderText("Command to run, e.g. uptime")
        self.argv = QCheckBox("&argv (no shell)")
        self.argv.setToolTip("Split the command like a shell would, but run it without a shell")
        self.action = QComboBox()
        self.action.setAccessibleName("Service action")
        self.action.addItems(SERVICE_ACTIONS)
        self.service_name = QLineEdit()
        self.service_name.setAccessibleName("Service name")
        self.service_name.setPlaceholderText("e.g. nginx")
        self.timeout = QDoubleSpinBox()
        self.timeout.setAccessibleName("Timeout")
        self.timeout.setRange(1, 300 if service else 86400)
        self.timeout.setValue(30 if service else 60)
        self.timeout.setDecimals(0)
        self.timeout.setSuffix(" s")

        form = QFormLayout()
        form.addRow("&Targets", self.targets)
        if service:
            form.addRow("A&ction", self.action)
            form.addRow("&Service", self.service_name)
        else:
            row = QHBoxLayout()
            row.addWidget(self.command, 1)
            row.addWidget(self.argv)
            label = QLabel("&Command")  # a row of two widgets gets no buddy by itself: Alt+C needs one
            label.setBuddy(self.command)
            form.addRow(label, row)
        form.addRow("T&imeout", self.timeout)

        self.summary = QLabel(
            "Preview first: it shows which nodes the request reaches, and who refuses it and why."
        )
        self.summary.setObjectName("batchSummary")
        self.summary.setWordWrap(True)
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.error.hide()
        self.model = PreviewModel(self)
        self.table = QTableView()
        self.table.setObjectName("batchPreview")
        self.table.setAccessibleName("Preview: each node's verdict")
        self.table.setModel(self.model)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)

        self.preview_button = QPushButton("&Preview")
        self.preview_button.setToolTip("Ask the core who would run it; nothing runs (Alt+P)")
        self.preview_button.setDefault(True)
        self.preview_button.clicked.connect(self.request_preview)
        self.run_button = QPushButton("&Run")
        self.run_button.setToolTip("Run it on the targets previewed (Alt+R)")
        self.run_button.setEnabled(False)
        self.run_button.clicked.connect(self.run)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        buttons.addButton(self.preview_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.run_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.error)
        layout.addWidget(self.table, 1)
        layout.addWidget(buttons)

        # Whatever changes the request makes the preview shown stale.
        self.targets.currentIndexChanged.connect(self._stale)
        self.command.textChanged.connect(self._stale)
        self.argv.toggled.connect(self._stale)
        self.action.currentIndexChanged.connect(self._stale)
        self.service_name.textChanged.connect(self._stale)
        self.timeout.valueChanged.connect(self._stale)
        (self.service_name if service else self.command).setFocus()

    def request(self) -> Request:
        """The request in the form; ValueError naming what is missing."""
        if self.service:
            action = self.action.currentText()
            name = self.service_name.text().strip()
            if not name:
                raise ValueError("Name the service.")
            return p.ServiceRequest(action, name)  # type: ignore[arg-type]
        text = self.command.text().strip()
        if not text:
            raise ValueError("Type a command.")
        if self.argv.isChecked():
            try:
                return shlex.split(text)
            except ValueError as exc:
                raise ValueError(f"Cannot split the command: {exc}.") from None
        return text

    def chosen_targets(self) -> m.Targets:
        """The nodes the chosen targets name now, by id: the app signs each request per node, and the
        run must reach exactly the nodes the preview showed. ValueError if they name none."""
        targets = self.targets.currentData()
        assert isinstance(targets, m.Targets)
        if targets.nodes is not None:
            return targets
        ids = [
            n.id
            for n in self.ctx.model.nodes()
            if targets.all
            or (targets.group is not None and n.group == targets.group)
            or targets.tag in n.tags
        ]
        if not ids:
            raise ValueError(f"{self.targets.currentText()} has no nodes.")
        return m.Targets(nodes=sorted(ids))

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))

    def _stale(self) -> None:
        self.preview = None
        self.model.set_preview(None)
        self.run_button.setEnabled(False)
        self.summary.setText("Preview again: the request changed.")

    def request_preview(self) -> None:
        try:
            request = self.request()
            targets = self.chosen_targets()
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.show_error("")
        self.preview_button.setEnabled(False)
        self.ctx.aio.spawn(self._preview(targets, request, self.timeout.value()), "batch-preview")

    async def _preview(self, targets: m.Targets, request: Request, timeout: float) -> None:
        try:
            preview = await self.ctx.rest.preview_batch(targets, request, timeout)
        except CoreError as exc:
            self.show_error(exc.message)
            return
        finally:
            self.preview_button.setEnabled(True)
        self.preview = preview
        names = {r.node_id: self.ctx.model.display_name(r.node_id) for r in preview.runs}
        self.model.set_preview(preview, names)
        total = len(preview.runs)
        parts = [
            f"Reaches {preview.run + preview.unknown + preview.queue} of {total} node{'s' if total != 1 else ''}"
        ]
        if preview.queue:
            parts.append(f"{preview.queue} when back online")
        if preview.unknown:
            parts.append(f"{preview.unknown} whose agent decides on arrival")
        parts.append(f"{preview.refused} refuse{'s' if preview.refused == 1 else ''}")
        self.summary.setText(f"{'; '.join(parts)}. Matched as: {preview.line}")
        self.summary.setAccessibleName(self.summary.text())
        self.run_button.setEnabled(preview.run + preview.queue + preview.unknown > 0)
        if self.run_button.isEnabled():
            self.run_button.setDefault(True)
        self.previews += 1

    def run(self) -> None:
        if self.preview is None or not self.run_button.isEnabled():
            return
        try:
            request = self.request()
        except ValueError as exc:
            self.show_error(str(exc))
            return
        nodes = [(r.node_id, self.ctx.model.display_name(r.node_id)) for r in self.preview.runs]
        # Exactly the nodes previewed, whatever joined or left the group since.
        targets = m.Targets(nodes=[r.node_id for r in self.preview.runs])
        self.run_requested.emit(targets, request, self.timeout.value(), nodes)
        self.accept()


# ---------------------------------------------------------------- the result grid


class OutputDialog(QDialog):
    """One node's output of a batch run, stdout then stderr."""

    def __init__(self, title: str, text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(720, 420)
        self.text = QPlainTextEdit(text)
        self.text.setReadOnly(True)
        self.text.setAccessibleName("Output")
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addWidget(buttons)


class BatchView(QWidget):
    """A tab: the grid of one batch run, live from the socket (REST polls fill in what it missed),
    sortable, each node's output a keypress away, re-run on failed, export as CSV."""

    message = Signal(str)  # a note for the status bar

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.request: Request = ""
        self.timeout = 60.0
        self.poll_every = POLL_EVERY
        self.runs = 0  # batches started in this view; tests wait on it
        self._early: list[p.CommandOutput | p.CommandResult] = []  # events that beat the POST reply
        self._watch: asyncio.Task[None] | None = None
        self.output_dialog: OutputDialog | None = None

        self.model = BatchModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SortRole)
        self.title = QLabel()
        self.title.setObjectName("batchTitle")
        self.title.setWordWrap(True)
        self.summary = QLabel()
        self.summary.setObjectName("batchCounts")
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.hide()

        self.table = QTableView()
        self.table.setObjectName("batchGrid")
        self.table.setAccessibleName("Batch results")
        self.table.setAccessibleDescription("One row per node; Enter opens its output")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.doubleClicked.connect(self.open_output)
        self.table.installEventFilter(self)  # Enter/Return opens the current row's output
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)

        self.output_action = QAction("&Open output", self)
        # Shown in the menu and the button's tooltip; the table's event filter does it (the view
        # keeps Enter for itself, so a shortcut would never fire there).
        self.output_action.setShortcut(QKeySequence(Qt.Key.Key_Return))
        self.output_action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        self.output_action.setToolTip("The selected node's output")
        self.output_action.triggered.connect(lambda: self.open_output())
        self.rerun_action = QAction("Re-run on &failed", self)
        self.rerun_action.setShortcut(QKeySequence("Ctrl+R"))
        self.rerun_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.rerun_action.setToolTip(
            "Run it again on the nodes that failed, timed out, errored or were offline"
        )
        self.rerun_action.triggered.connect(self.rerun_failed)
        self.export_action = QAction("&Export CSV…", self)
        self.export_action.setShortcut(QKeySequence("Ctrl+E"))
        self.export_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.export_action.setToolTip("Save the grid as CSV")
        self.export_action.triggered.connect(lambda: self.export_csv())
        self.cancel_action = QAction("&Cancel run", self)
        self.cancel_action.setShortcut(QKeySequence("Ctrl+Shift+Del"))
        self.cancel_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.cancel_action.setToolTip("Stop what still runs or waits")
        self.cancel_action.triggered.connect(self.cancel)
        self.actions_ = (self.output_action, self.rerun_action, self.export_action, self.cancel_action)
        for action in self.actions_:
            self.addAction(action)

        bar = QHBoxLayout()
        bar.addWidget(self.summary, 1)
        for action in self.actions_:
            bar.addWidget(_button(action))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.title)
        layout.addLayout(bar)
        layout.addWidget(self.error)
        layout.addWidget(self.table, 1)

        ctx.live.command_output.connect(self._event)
        ctx.live.command_result.connect(self._event)
        self._listening = True
        self.model.dataChanged.connect(lambda *_: self._update())
        self.model.modelReset.connect(self._update)
        self._update()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            watched is self.table
            and event.type() == QEvent.Type.KeyPress
            and isinstance(event, QKeyEvent)
            and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        ):
            self.open_output()
            return True
        return super().eventFilter(watched, event)

    # ------------------------------------------------------------ running

    def start(
        self, targets: m.Targets, request: Request, timeout: float, nodes: list[tuple[int, str]]
    ) -> None:
        """Run `request` on `targets`; `nodes` (id, name) are the rows until the core answers."""
        self.request, self.timeout = request, timeout
        count = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}"
        self.title.setText(f"<b>{html.escape(describe(request))}</b> on {count}")
        self.title.setAccessibleName(self.title.text())
        self.error.hide()
        if self._watch is not None:
            self._watch.cancel()
        self._early = []
        self.model.start(nodes)
        self.runs += 1
        self.ctx.aio.spawn(self._run(targets, request, timeout), "batch-run")

    async def _run(self, targets: m.Targets, request: Request, timeout: float) -> None:
        try:
            info = await self.ctx.rest.run_batch(targets, request, timeout)
        except CoreError as exc:
            self.error.setText(exc.message)
            self.error.show()
            self.model.fail_all(exc.message)
            return
        # The core's own list of rows (a group may have changed since the preview).
        known = {r.node_id for r in self.model.rows}
        if {r.node_id for r in info.runs} != known:
            self.model.start([(r.node_id, self.ctx.model.display_name(r.node_id)) for r in info.runs])
        self.model.apply_info(info, fill=False)
        early, self._early = self._early, []
        for frame in early:
            self._event(frame)
        self._watch = self.ctx.aio.spawn(self._poll(info.id), "batch-watch")

    async def _poll(self, command_id: str) -> None:
        """A slow REST check while the batch runs: catches results the socket did not bring."""
        while self.model.command_id == command_id and not self.model.finished:
            await asyncio.sleep(self.poll_every)
            if self.model.command_id != command_id:
                return
            with contextlib.suppress(CoreError):
                self.model.apply_info(await self.ctx.rest.command(command_id), fill=True)

    async def _fetch(self, command_id: str) -> None:
        with contextlib.suppress(CoreError):
            info = await self.ctx.rest.command(command_id)
            if self.model.command_id == command_id:
                self.model.apply_info(info, fill=True)

    def _event(self, frame: p.CommandOutput | p.CommandResult) -> None:
        if self.model.command_id is None:
            if self.model.rows and not self.model.finished and len(self._early) < 10000:
                self._early.append(frame)
            return
        if self.model.apply_event(frame) and isinstance(frame, p.CommandResult):
            # The full record from the core, in case the socket dropped output on the way.
            self.ctx.aio.spawn(self._fetch(frame.command_id), "batch-fetch")

    def _update(self) -> None:
        counts = self.model.counts()
        order = ("ok", "failed", "timed out", "refused", "error", "offline", "lost", "running", "queued")
        parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
        parts += [f"{v} {k}" for k, v in sorted(counts.items()) if k not in order]
        self.summary.setText(" · ".join(parts))
        self.summary.setAccessibleName(self.summary.text())
        running = bool(self.model.rows) and not self.model.finished
        self.rerun_action.setEnabled(not running and bool(self.model.rerun_ids()))
        self.cancel_action.setEnabled(running and self.model.command_id is not None)
        self.export_action.setEnabled(bool(self.model.rows))
        self.output_action.setEnabled(bool(self.model.rows))

    # ------------------------------------------------------------ actions

    def rerun_failed(self) -> None:
        ids = self.model.rerun_ids()
        if not ids or not self.rerun_action.isEnabled():
            return
        nodes = [(n, self.ctx.model.display_name(n)) for n in ids]
        self.start(m.Targets(nodes=ids), self.request, self.timeout, nodes)

    def cancel(self) -> None:
        cid = self.model.command_id
        if cid is not None and not self.model.finished:
            self.ctx.aio.spawn(self._cancel(cid), "batch-cancel")

    async def _cancel(self, command_id: str) -> None:
        try:
            info = await self.ctx.rest.cancel_command(command_id)
        except CoreError as exc:
            self.message.emit(f"Could not cancel: {exc.message}")
            return
        if self.model.command_id == command_id:
            self.model.apply_info(info, fill=True)
        self.message.emit("Cancel sent.")

    def open_output(self, index: QModelIndex | None = None) -> OutputDialog | None:
        """The output of the node in the row at `index` (default: the current row)."""
        index = index if index is not None and index.isValid() else self.table.currentIndex()
        if not index.isValid():
            return None
        node_id = index.data(NodeIdRole)
        row = self.model.row(int(node_id)) if node_id is not None else None
        if row is None:
            return None
        text = row.output or (f"({status_text(row.status)}: {row.message})" if row.message else "(no output)")
        if self.output_dialog is not None:
            self.output_dialog.close()
        dialog = OutputDialog(f"{row.name}: {describe(self.request)}", text, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.finished.connect(lambda _r: setattr(self, "output_dialog", None))
        self.output_dialog = dialog
        dialog.open()
        return dialog

    def export_csv(self, path: str | None = None) -> Path | None:
        """Write the grid as CSV to `path` (default: ask where)."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export CSV", "batch.csv", "CSV files (*.csv)")
            if not path:
                return None
        target = Path(path)
        try:
            target.write_text(self.model.to_csv(), encoding="utf-8")
        except OSError as exc:
            self.message.emit(f"Could not save {target.name}: {exc.strerror or exc}")
            return None
        self.message.emit(f"Saved {len(self.model.rows)} rows to {target}.")
        return target

    def _context_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if index.isValid():
            self.table.selectRow(index.row())
        menu = QMenu(self)
        for action in self.actions_:
            menu.addAction(action)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def stop_listening(self) -> None:
        """Take no more live events (once: a second disconnect is an error in PySide)."""
        if not self._listening:
            return
        self._listening = False
        for signal in (self.ctx.live.command_output, self.ctx.live.command_result):
            with contextlib.suppress(RuntimeError, TypeError):
                signal.disconnect(self._event)

    def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self.stop_listening()


# ---------------------------------------------------------------- group and tags on many nodes


class BulkEditDialog(QDialog):
    """Set the group, add tags and remove tags on many nodes: a PATCH each, one summary, an error
    line per node that refused."""

    def __init__(self, ctx: AppContext, node_ids: list[int], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.node_ids = list(node_ids)
        # Names as they were when the dialog opened: a node removed meanwhile is still named in the errors.
        self.names = {n: ctx.model.display_name(n) for n in node_ids}
        self.saves = 0  # rounds of PATCHes finished; tests wait on it
        self.setWindowTitle(f"Edit group and tags of {len(node_ids)} nodes")
        self.setAccessibleName(self.windowTitle())
        self.nodes_label = QLabel(", ".join(self.names.values()))
        self.nodes_label.setWordWrap(True)
        self.set_group = QCheckBox("Set &group")
        self.group = QComboBox()
        self.group.setAccessibleName("Group")
        self.group.setEditable(True)
        self.group.addItems(["", *ctx.model.groups()])
        self.group.setEnabled(False)
        line = self.group.lineEdit()
        if line is not None:
            line.setPlaceholderText("no group")
        self.set_group.toggled.connect(self.group.setEnabled)
        self.add_tags = QLineEdit()
        self.add_tags.setAccessibleName("Tags to add")
        self.add_tags.setPlaceholderText("e.g. web, eu-west")
        self.remove_tags = QLineEdit()
        self.remove_tags.setAccessibleName("Tags to remove")
        self.remove_tags.setPlaceholderText("e.g. staging")
        self.summary = QLabel()
        self.summary.setObjectName("bulkSummary")
        self.summary.setWordWrap(True)
        self.errors = QListWidget()
        self.errors.setAccessibleName("Nodes that were not saved")
        self.errors.hide()
        form = QFormLayout()
        form.addRow("Nodes", self.nodes_label)
        form.addRow(self.set_group, self.group)
        form.addRow("&Add tags", self.add_tags)
        form.addRow("&Remove tags", self.remove_tags)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Close
        )
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.errors)
        layout.addWidget(self.buttons)

    def save(self) -> None:
        add, remove = parse_tags(self.add_tags.text()), parse_tags(self.remove_tags.text())
        bad = bad_tags([*add, *remove])
        if bad:
            self.summary.setText(f"Tags may hold letters, digits and _ . : / - only: {', '.join(bad)}")
            return
        group = self.group.currentText().strip() if self.set_group.isChecked() else None
        if group is None and not add and not remove:
            self.summary.setText("Nothing to change: set a group, or tags to add or remove.")
            return
        save = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        if save is not None:
            save.setEnabled(False)
        self.ctx.aio.spawn(self._save(group, add, remove), "bulk-edit")

    async def _save(self, group: str | None, add: list[str], remove: list[str]) -> None:
        failed: list[str] = []
        saved = 0
        for node_id in self.node_ids:
            node = self.ctx.model.node(node_id)
            name = self.names[node_id]
            tags = None
            if node is not None and (add or remove):
                tags = [t for t in node.tags if t not in remove] + [t for t in add if t not in node.tags]
            try:
                updated = await self.ctx.rest.patch_node(node_id, group=group, tags=tags)
            except CoreError as exc:
                failed.append(f"{name}: {exc.message}")
                continue
            self.ctx.model.apply_node(updated)  # the socket says the same; this shows it at once
            saved += 1
        total = len(self.node_ids)
        self.summary.setText(f"Saved {saved} of {total} node{'s' if total != 1 else ''}.")
        self.summary.setAccessibleName(self.summary.text())
        self.errors.clear()
        self.errors.addItems(failed)
        self.errors.setVisible(bool(failed))
        save = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        if save is not None:
            save.setEnabled(True)
        self.saves += 1


# ---------------------------------------------------------------- the actions


class BatchActions(QObject):
    """The batch actions for the window's menus, the fleet's context menu and the palette; each
    acts on the fleet table's selection (`selected`)."""

    view_opened = Signal(object)  # a BatchView to show as a tab

    def __init__(
        self,
        ctx: AppContext,
        selected: Callable[[], list[int]],
        parent: QWidget,
        resolve: Callable[[list[int]], tuple[AppContext, list[int]] | None] | None = None,
    ) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.selected = selected
        # With several cores in the window the selection holds node keys: resolve turns them into the
        # one core they are on and its node ids (None when they span cores, and it says so).
        self.resolve = resolve or (lambda keys: (self.ctx, keys))
        self.window = parent
        self.command_action = QAction("&Batch command…", self)
        self.command_action.setShortcut(QKeySequence("Ctrl+Shift+B"))
        self.command_action.setToolTip("Preview, then run a command on the selected nodes, a group or a tag")
        self.command_action.triggered.connect(lambda: self.open_dialog())
        self.service_action = QAction("Batch &service action…", self)
        self.service_action.setShortcut(QKeySequence("Ctrl+Shift+M"))
        self.service_action.setToolTip("Preview, then start, stop or restart a service on many nodes")
        self.service_action.triggered.connect(lambda: self.open_dialog(service=True))
        self.edit_action = QAction("Edit &group/tags…", self)
        self.edit_action.setShortcut(QKeySequence("Ctrl+Shift+G"))
        self.edit_action.setToolTip("Set the group, add or remove tags on the selected nodes")
        self.edit_action.triggered.connect(lambda: self.open_bulk_edit())
        self.actions = (self.command_action, self.service_action, self.edit_action)
        self.set_can_edit(False)

    def set_can_edit(self, can_edit: bool) -> None:
        for action in self.actions:
            action.setEnabled(can_edit)

    def open_dialog(self, node_ids: list[int] | None = None, *, service: bool = False) -> BatchDialog | None:
        if not self.command_action.isEnabled():
            return None
        found = self.resolve(self.selected() if node_ids is None else node_ids)
        if found is None:
            return None
        ctx, ids = found
        dialog = BatchDialog(ctx, ids, service=service, parent=self.window)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.run_requested.connect(
            lambda targets, request, timeout, nodes: self._run(ctx, targets, request, timeout, nodes)
        )
        dialog.open()
        return dialog

    def _run(
        self,
        ctx: AppContext,
        targets: m.Targets,
        request: Request,
        timeout: float,
        nodes: list[tuple[int, str]],
    ) -> None:
        view = BatchView(ctx)
        view.start(targets, request, timeout, nodes)
        self.view_opened.emit(view)

    def open_bulk_edit(self, node_ids: list[int] | None = None) -> BulkEditDialog | None:
        keys = self.selected() if node_ids is None else node_ids
        if not self.edit_action.isEnabled() or not keys:
            return None
        found = self.resolve(keys)
        if found is None:
            return None
        ctx, ids = found
        dialog = BulkEditDialog(ctx, ids, self.window)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog
