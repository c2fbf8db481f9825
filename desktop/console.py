"""The command console: run a command on the selected nodes and watch each node's output live."""

from __future__ import annotations

import asyncio
import contextlib
import shlex

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QKeyEvent, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import protocol as p
from servermanager.common import rest as m
from servermanager.common.status import FINAL
from servermanager.desktop.context import AppContext
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import Session

VIEWER_HINT = "Running commands needs the operator role."
STDERR_COLOUR = QColor("#d64545")
POLL_EVERY = 2.0  # seconds between REST checks of a running command (fills in missed socket events)


def badge_text(
    status: str, exit_code: int | None = None, signal: int | None = None, message: str | None = None
) -> str:
    """The words on a node's exit-status badge."""
    if status == "ok":
        return "ok"
    if status == "failed":
        if signal is not None:
            return f"failed (signal {signal})"
        return f"failed exit {exit_code}" if exit_code is not None else "failed"
    if status in ("refused", "error", "offline", "expired", "lost"):
        return f"{status}: {message}" if message else status
    if status in ("queued", "sent", "running"):
        return "running…"
    return status  # timeout, cancelled


class HistoryLineEdit(QLineEdit):
    """A line edit that recalls earlier entries with Up and Down, like a shell."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history: list[str] = []
        self._pos = 0
        self._draft = ""

    def remember(self, text: str) -> None:
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self._pos = len(self.history)
        self._draft = ""

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key == Qt.Key.Key_Up and self.history:
            if self._pos == len(self.history):
                self._draft = self.text()
            self._pos = max(0, self._pos - 1)
            self.setText(self.history[self._pos])
            return
        if key == Qt.Key.Key_Down and self.history:
            self._pos = min(len(self.history), self._pos + 1)
            self.setText(self.history[self._pos] if self._pos < len(self.history) else self._draft)
            return
        super().keyPressEvent(event)


class NodeOutput(QWidget):
    """One node's output (stdout plain, stderr coloured) and its exit-status badge."""

    def __init__(self, node_id: int, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.node_id = node_id
        self.name = name
        self.status = "running"
        self.stdout = ""
        self.stderr = ""
        self.badge = QLabel(badge_text("running"))
        self.badge.setObjectName("commandBadge")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setObjectName("commandOutput")
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.addWidget(self.badge)
        layout.addWidget(self.text, 1)

    def append(self, stream: str, data: str) -> None:
        if stream == "stderr":
            self.stderr += data
        else:
            self.stdout += data
        cursor = self.text.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        fmt = QTextCharFormat()
        if stream == "stderr":
            fmt.setForeground(STDERR_COLOUR)
        cursor.insertText(data, fmt)
        self.text.setTextCursor(cursor)

    def fill(self, stdout: str, stderr: str) -> None:
        """Replace what was streamed with the core's full record (used when events were missed)."""
        if stdout == self.stdout and stderr == self.stderr:
            return
        self.text.clear()
        self.stdout = self.stderr = ""
        if stdout:
            self.append("stdout", stdout)
        if stderr:
            self.append("stderr", stderr)

    def set_status(
        self, status: str, exit_code: int | None = None, signal: int | None = None, message: str | None = None
    ) -> None:
        self.status = status
        self.badge.setText(badge_text(status, exit_code, signal, message))
        colour = {"ok": "#2e9e5b", "running": ""}.get(status if status in FINAL else "running", "#d64545")
        self.badge.setStyleSheet(f"font-weight: bold; color: {colour};" if colour else "font-weight: bold;")

    @property
    def done(self) -> bool:
        return self.status in FINAL


class ConsolePanel(QWidget):
    """The Console tab. Targets come from the fleet selection; output arrives on the live socket."""

    message = Signal(str)  # a note for the status bar

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.can_run = False
        self.targets: list[int] = []
        self.command_id: str | None = None
        self.outputs: dict[int, NodeOutput] = {}
        self._early: list[p.CommandOutput | p.CommandResult] = []  # events that beat the POST reply
        self._watch: asyncio.Task[None] | None = None
        self.poll_every = POLL_EVERY

        self.targets_label = QLabel()
        self.targets_label.setObjectName("consoleTargets")
        self.targets_label.setTextFormat(Qt.TextFormat.RichText)
        self.command = HistoryLineEdit()
        self.command.setObjectName("consoleCommand")
        self.command.setPlaceholderText("Command to run, e.g. uptime")
        self.command.returnPressed.connect(self.run)
        self.argv = QCheckBox("argv (no shell)")
        self.argv.setToolTip("Split the command like a shell would, but run it without a shell")
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(1, 86400)
        self.timeout.setValue(60)
        self.timeout.setSuffix(" s")
        self.timeout.setDecimals(0)
        self.timeout.setToolTip("Timeout")
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the current tab's output")
        self.copy_button.clicked.connect(self.copy)
        self.status = QLabel()
        self.status.setObjectName("error")

        bar = QHBoxLayout()
        bar.addWidget(self.command, 1)
        bar.addWidget(self.argv)
        bar.addWidget(self.timeout)
        bar.addWidget(self.run_button)
        bar.addWidget(self.cancel_button)
        bar.addWidget(self.copy_button)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.targets_label)
        layout.addLayout(bar)
        layout.addWidget(self.status)
        layout.addWidget(self.tabs, 1)

        ctx.live.command_output.connect(self._event)
        ctx.live.command_result.connect(self._event)
        ctx.rest.session_changed.connect(self._session_changed)
        self._session_changed(ctx.rest.session)
        self.set_targets([])

    # ------------------------------------------------------------ state

    def _session_changed(self, session: Session | None) -> None:
        self.can_run = session is not None and session.can_edit
        self.command.setEnabled(self.can_run)
        self.run_button.setToolTip("" if self.can_run else VIEWER_HINT)
        self._update_buttons()

    @property
    def running(self) -> bool:
        return self.command_id is not None and any(not o.done for o in self.outputs.values())

    def _update_buttons(self) -> None:
        self.run_button.setEnabled(self.can_run and bool(self.targets) and not self.running)
        self.cancel_button.setEnabled(self.can_run and self.running)
        self.copy_button.setEnabled(self.tabs.count() > 0)

    def _name(self, node_id: int) -> str:
        return self.ctx.model.display_name(node_id)

    def set_targets(self, node_ids: list[int]) -> None:
        self.targets = list(dict.fromkeys(node_ids))
        if self.targets:
            chips = " ".join(
                f"<span style='background:#3b6ea5;color:white;'>&nbsp;{self._name(n)}&nbsp;</span>"
                for n in self.targets
            )
            self.targets_label.setText(f"Targets: {chips}")
        else:
            self.targets_label.setText("Targets: none — select nodes in the Fleet tab, then “Run command…”")
        self._update_buttons()

    # ------------------------------------------------------------ actions

    def command_value(self) -> str | list[str]:
        """The command as the core wants it: a shell string, or an argv list split like a shell."""
        text = self.command.text().strip()
        return shlex.split(text) if self.argv.isChecked() else text

    def run(self) -> None:
        if not self.run_button.isEnabled():
            return
        text = self.command.text().strip()
        if not text:
            return
        try:
            command = self.command_value()
        except ValueError as exc:
            self.status.setText(f"Cannot split the command: {exc}.")
            return
        if not command:
            return
        self.command.remember(text)
        self.command.clear()
        self.status.setText("")
        self.tabs.clear()
        for out in self.outputs.values():
            out.deleteLater()
        self.outputs = {}
        for node_id in self.targets:
            out = NodeOutput(node_id, self._name(node_id))
            self.outputs[node_id] = out
            self.tabs.addTab(out, out.name)
        self.command_id = None
        self._early = []
        if self._watch is not None:
            self._watch.cancel()
        self.run_button.setEnabled(False)
        self._update_buttons()
        self.ctx.aio.spawn(self._run(list(self.targets), command, self.timeout.value()), "run-command")

    async def _run(self, node_ids: list[int], command: str | list[str], timeout: float) -> None:
        try:
            info = await self.ctx.rest.run_command(node_ids, command, timeout)
        except CoreError as exc:
            self.status.setText(exc.message)
            for out in self.outputs.values():
                out.set_status("error", message=exc.message)
            self._update_buttons()
            return
        self.command_id = info.id
        early, self._early = self._early, []
        self._apply(info, fill=False)
        for frame in early:
            self._event(frame)
        self._update_buttons()
        self._watch = self.ctx.aio.spawn(self._poll(info.id), "watch-command")

    async def _poll(self, command_id: str) -> None:
        """A slow REST check while the command runs: catches results the socket did not bring."""
        while self.command_id == command_id and self.running:
            await asyncio.sleep(self.poll_every)
            if self.command_id != command_id:
                return
            with contextlib.suppress(CoreError):
                self._apply(await self.ctx.rest.command(command_id), fill=True)

    async def _fetch(self, command_id: str) -> None:
        with contextlib.suppress(CoreError):
            info = await self.ctx.rest.command(command_id)
            if self.command_id == command_id:
                self._apply(info, fill=True)

    def _apply(self, info: m.CommandInfo, *, fill: bool) -> None:
        for run in info.runs:
            out = self.outputs.get(run.node_id)
            if out is None:
                continue
            if run.status in FINAL:
                if fill:
                    out.fill(run.stdout, run.stderr)
                if not out.done or out.status != run.status:
                    out.set_status(run.status, run.exit_code, run.signal, run.message)
        self._update_buttons()

    def _event(self, frame: p.CommandOutput | p.CommandResult) -> None:
        if self.command_id is None:
            if self.outputs and any(not o.done for o in self.outputs.values()) and len(self._early) < 10000:
                self._early.append(frame)
            return
        if frame.command_id != self.command_id:
            return
        out = self.outputs.get(frame.node_id)
        if out is None:
            return
        if isinstance(frame, p.CommandOutput):
            if not out.done:
                out.append(frame.stream, frame.data)
            return
        out.set_status(frame.status, frame.exit_code, frame.signal, frame.message)
        self._update_buttons()
        # The full record from the core, in case the socket dropped output on the way.
        self.ctx.aio.spawn(self._fetch(frame.command_id), "fetch-command")

    def cancel(self) -> None:
        if self.command_id is None or not self.running:
            return
        self.cancel_button.setEnabled(False)
        self.ctx.aio.spawn(self._cancel(self.command_id), "cancel-command")

    async def _cancel(self, command_id: str) -> None:
        try:
            info = await self.ctx.rest.cancel_command(command_id)
        except CoreError as exc:
            self.status.setText(f"Could not cancel: {exc.message}")
            self._update_buttons()
            return
        if self.command_id == command_id:
            self._apply(info, fill=True)
        self.message.emit("Cancel sent.")

    def copy(self) -> None:
        out = self.tabs.currentWidget()
        if isinstance(out, NodeOutput):
            QGuiApplication.clipboard().setText(out.text.toPlainText())

    def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for signal, slot in (
            (self.ctx.live.command_output, self._event),
            (self.ctx.live.command_result, self._event),
            (self.ctx.rest.session_changed, self._session_changed),
        ):
            with contextlib.suppress(RuntimeError, TypeError):
                signal.disconnect(slot)
