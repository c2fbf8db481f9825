"""A tab that lists the core's records of one kind, with New / Edit / Delete-like actions and Refresh."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from PySide6.QtCore import QItemSelection
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from servermanager.desktop.context import AppContext
from servermanager.desktop.models.records import RecordsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import Session
from servermanager.desktop.widgets import record_table

T = TypeVar("T")


class ListPanel(QWidget, Generic[T]):
    """Every role sees the list; `may_edit(session)` decides who gets the actions.

    Subclasses give the model, their buttons (`add_button`), how to fetch the records, and which
    buttons need a selection; what they do runs through `act`, which reports a failure in the
    status line and reloads the list on success.
    """

    noun = "record"  # "2 rules", "Could not load the rules"
    denied_hint = ""  # the tooltip of the New button for someone who may not edit

    def __init__(self, ctx: AppContext, model: RecordsModel[T], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.model = model
        self.can_edit = False
        self.loads = 0  # completed loads; tests wait on it
        self.new_button: QPushButton | None = None
        self._needs_selection: list[QPushButton] = []
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.bar = QHBoxLayout()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.table = record_table(self.model)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(self.bar)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)

    def add_button(
        self, text: str, slot: Callable[[], object], *, needs_selection: bool = True
    ) -> QPushButton:
        button = QPushButton(text)
        button.clicked.connect(lambda _=False: slot())
        self.bar.addWidget(button)
        if needs_selection:
            self._needs_selection.append(button)
        elif self.new_button is None:
            self.new_button = button
        return button

    def finish_bar(self) -> None:
        """Call once the buttons are added: Refresh goes to the right, and the session is applied."""
        self.bar.addStretch(1)
        self.bar.addWidget(self.refresh_button)
        self.ctx.rest.session_changed.connect(self._session_changed)
        self._session_changed(self.ctx.rest.session)

    # ------------------------------------------------------------ to override

    def may_edit(self, session: Session) -> bool:
        return session.can_edit

    async def fetch(self) -> list[T]:
        raise NotImplementedError

    def selection_allows(self, record: T) -> bool:
        """Whether the selection buttons apply to this record (e.g. not to an ended silence)."""
        return True

    # ------------------------------------------------------------ behaviour

    def selected(self) -> T | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.record(rows[0].row()) if rows else None

    def _session_changed(self, session: Session | None) -> None:
        self.can_edit = session is not None and self.may_edit(session)
        if self.new_button is not None:
            self.new_button.setEnabled(self.can_edit)
            self.new_button.setToolTip("" if self.can_edit or session is None else self.denied_hint)
        self.refresh_button.setEnabled(session is not None)
        self._selection_changed()
        if session is None:
            self.model.set_records([])
            self.status.setText("Not signed in.")

    def _selection_changed(self, *_args: QItemSelection) -> None:
        record = self.selected()
        ok = self.can_edit and record is not None and self.selection_allows(record)
        for button in self._needs_selection:
            button.setEnabled(ok)

    def refresh(self) -> None:
        if self.ctx.rest.session is not None:
            self.status.setText("Loading…")
            self.ctx.aio.spawn(self._load(), f"{self.noun}-list")

    async def _load(self) -> None:
        try:
            records = await self.fetch()
        except CoreError as exc:
            self.status.setText(f"Could not load the {self.noun}s: {exc.message}")
            self.loads += 1
            return
        self.model.set_records(records)
        self.status.setText(self.summary(records))
        self._selection_changed()
        self.loads += 1

    def summary(self, records: list[T]) -> str:
        return f"{len(records)} {self.noun}{'s' if len(records) != 1 else ''}"

    def act(self, what: str, action: Callable[[], Awaitable[object]]) -> None:
        """Run one action on the core; a failure is said in the status line, a success reloads."""

        async def run() -> None:
            try:
                await action()
            except CoreError as exc:
                self.status.setText(f"Could not {what}: {exc.message}")
                return
            await self._load()

        self.ctx.aio.spawn(run(), f"{self.noun}-{what}")

    def shutdown(self) -> None:
        with contextlib.suppress(RuntimeError, TypeError):
            self.ctx.rest.session_changed.disconnect(self._session_changed)
