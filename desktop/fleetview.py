"""The fleet panel: search and filters above a live, sortable table of nodes, with node editing."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QItemSelectionModel, QModelIndex, QObject, QPoint, Qt, Signal
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from servermanager.common import protocol as p
from servermanager.desktop.context import AppContext
from servermanager.desktop.cores import UNREACHABLE, CoreSet
from servermanager.desktop.dialogs import EditNodeDialog
from servermanager.desktop.format import fmt_time
from servermanager.desktop.models.fleet import FleetFilter, NodeIdRole
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import Session
from servermanager.desktop.themes import icon
from servermanager.desktop.widgets import FleetDelegate, status_width

VIEWER_HINT = "Your role can only view nodes; editing needs the operator role."

# Columns given up first, in this order, when the table is too narrow for all of them and the user
# has not chosen which to show: what a glance over the fleet needs least.
FIT_ORDER = ("tags", "containers", "group", "uptime", "load1", "net_tx_bps", "net_rx_bps", "os")
# The stretched column (OS) keeps at least this much before the others start to go (its tooltip
# has the whole text).
FIT_STRETCH_MIN = 80


class FleetPanel(QWidget):
    """Everything on the Fleet tab. Takes the app context; the table itself is a plain view."""

    open_node = Signal(object)  # a node key (models/merged.py): may not fit a C++ int
    run_command = Signal(list)  # node ids: open the console with these targets
    compare = Signal(list)  # node ids: overlay their metrics in the Compare tab
    message = Signal(str)  # a note for the status bar

    def __init__(
        self, ctx: AppContext, parent: QWidget | None = None, *, cores: CoreSet | None = None
    ) -> None:
        super().__init__(parent)
        self.ctx = ctx
        # The rows of every core the window shows (only ctx's when alone); node ids here are node
        # keys (models/merged.py), which are ctx's own ids while it is the only core.
        self.cores = cores if cores is not None else CoreSet(ctx, self)
        self.fleet = self.cores.fleet
        self.can_edit = False
        self.proxy = FleetFilter(self)
        self.proxy.setSourceModel(self.fleet)

        self.search = QLineEdit()
        self.search.setObjectName("search")
        self.search.setPlaceholderText("Search name, group, tag, OS…")
        self.search.setAccessibleName("Search nodes")
        self.search.setClearButtonEnabled(True)
        self.search.addAction(icon("search"), QLineEdit.ActionPosition.LeadingPosition)
        self.search.textChanged.connect(self.proxy.set_search)

        self.status_filter = QComboBox()
        self.status_filter.setAccessibleName("Status filter")
        self.status_filter.addItem("All statuses", None)
        self.status_filter.addItem("Online", True)
        self.status_filter.addItem("Offline", False)
        self.status_filter.currentIndexChanged.connect(
            lambda _i: self.proxy.set_status(self.status_filter.currentData())
        )
        self.group_filter = QComboBox()
        self.group_filter.setAccessibleName("Group filter")
        self.group_filter.currentIndexChanged.connect(
            lambda _i: self.proxy.set_group(self.group_filter.currentData())
        )
        self.tag_filter = QComboBox()
        self.tag_filter.setAccessibleName("Tag filter")
        self.tag_filter.currentIndexChanged.connect(
            lambda _i: self.proxy.set_tag(self.tag_filter.currentData())
        )
        self.core_filter = QComboBox()  # shown with more than one core
        self.core_filter.setAccessibleName("Core filter")
        self.core_filter.currentIndexChanged.connect(
            lambda _i: self.proxy.set_core(self.core_filter.currentData())
        )
        for combo in (self.status_filter, self.group_filter, self.tag_filter, self.core_filter):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self._fill_facets()

        self.edit_button = QPushButton(icon("edit"), "Edit…")
        self.edit_button.clicked.connect(self.edit_selected)
        self.remove_button = QPushButton(icon("remove"), "Remove")
        self.remove_button.clicked.connect(self.remove_selected)
        self.run_button = QPushButton("Run command…")
        self.run_button.clicked.connect(self.run_on_selected)
        self.compare_action = QAction("Compare…", self)
        self.compare_action.setToolTip("Overlay one metric of the selected nodes (up to 10) on one chart")
        self.compare_action.triggered.connect(self.compare_selected)
        self.compare_button = QPushButton("Compare…")
        self.compare_button.setToolTip(self.compare_action.toolTip())
        self.compare_button.clicked.connect(self.compare_selected)
        # F5 anywhere in the window (the window adds this action to itself and its toolbar).
        self.refresh_action = QAction(icon("refresh"), "Refresh", self)
        self.refresh_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Refresh))
        self.refresh_action.setToolTip("Fetch the node list from the core now (F5)")
        self.refresh_action.triggered.connect(self.refresh)
        self.refreshes = 0  # lists applied; tests wait on it
        # Actions on the selection that live elsewhere (desktop.batch), listed in the context menu.
        self.selection_actions: list[QAction] = []

        bar = QHBoxLayout()
        bar.addWidget(self.search, 2)
        bar.addWidget(self.status_filter)
        bar.addWidget(self.group_filter)
        bar.addWidget(self.tag_filter)
        bar.addWidget(self.core_filter)
        bar.addStretch(1)
        bar.addWidget(self.compare_button)
        bar.addWidget(self.run_button)
        bar.addWidget(self.edit_button)
        bar.addWidget(self.remove_button)

        self.table = QTableView()
        self.table.setObjectName("fleetTable")
        self.table.setAccessibleName("Fleet")
        self.table.setAccessibleDescription(
            "One row per node; Enter opens the node, the menu key its actions"
        )
        self.table.setModel(self.proxy)
        self.table.setItemDelegate(FleetDelegate(self.table))
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(self.fleet.column("name"), Qt.SortOrder.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(28)
        header = self.table.horizontalHeader()
        header.setHighlightSections(False)
        header.setStretchLastSection(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setMinimumSectionSize(48)
        for i, column in enumerate(self.fleet.columns):
            if column.width is not None:
                header.resizeSection(i, column.width)
            else:
                header.setSectionResizeMode(i, QHeaderView.ResizeMode.Stretch)
        # "Online · 1 alert" must not clip: the Status column fits its widest words in this font.
        status = self.fleet.column("status")
        header.resizeSection(status, max(header.sectionSize(status), status_width(self.table.fontMetrics())))
        # The Core column is the model's last (so other columns keep their indexes) but reads first.
        header.moveSection(header.visualIndex(self.fleet.column("core")), 0)
        # Which columns show: the user's choice (View → Fleet columns, or the header's menu), kept
        # with the window's state; until there is one, what fits the window's width.
        self._widths = {c.key: header.sectionSize(i) for i, c in enumerate(self.fleet.columns)}
        header.sectionResized.connect(self._section_resized)
        self._chosen_hidden = ctx.window_state.hidden_columns()
        self.columns_menu = QMenu("Fleet &columns", self)
        self._column_actions: dict[str, QAction] = {}
        for column in self.fleet.columns:
            if column.key in ("name", "core"):  # the name always shows; Core with several cores
                continue
            action = QAction(column.header, self, checkable=True)
            action.triggered.connect(lambda shown, key=column.key: self.show_column(key, shown))
            self._column_actions[column.key] = action
            self.columns_menu.addAction(action)
        self.columns_menu.addSeparator()
        self.fit_action = QAction("Fit to the window", self, checkable=True)
        self.fit_action.setToolTip(
            "Show what fits the window's width, dropping the least needed columns first"
        )
        self.fit_action.triggered.connect(lambda _checked: self.fit_columns())
        self.columns_menu.addAction(self.fit_action)
        header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header.customContextMenuRequested.connect(
            lambda pos: self.columns_menu.popup(header.mapToGlobal(pos))
        )
        self.table.doubleClicked.connect(self._double_clicked)
        self.table.installEventFilter(self)  # Enter/Return opens the current row's node
        self.table.viewport().installEventFilter(self)  # its width decides the fitted columns
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._context_menu)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())

        # Shown while the rows are the fleet kept from the last run, until the core's own list comes.
        self.stale_label = QLabel()
        self.stale_label.setObjectName("staleBanner")
        self.stale_label.setWordWrap(True)
        self.stale_label.hide()
        self._stale_detail = ""

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(bar)
        layout.addWidget(self.stale_label)
        layout.addWidget(self.table)

        self.fleet.facets_changed.connect(self._fill_facets)
        self.fleet.stale_changed.connect(self._stale_changed)
        self.fleet.cores_changed.connect(self._cores_changed)
        self._cores_changed()
        self._stale_changed(self.fleet.stale_since)
        ctx.rest.session_changed.connect(self._session_changed)
        self.cores.sessions_changed.connect(self._session_changed)
        self._session_changed(ctx.rest.session)

    # ------------------------------------------------------------ columns

    def hidden_columns(self) -> set[str]:
        """The keys of the columns not shown now (the Core column aside)."""
        return {
            c.key
            for i, c in enumerate(self.fleet.columns)
            if c.key != "core" and self.table.isColumnHidden(i)
        }

    def show_column(self, key: str, shown: bool) -> None:
        """The user shows or hides one column: from now on their choice decides, not the width."""
        hidden = self.hidden_columns()
        (hidden.discard if shown else hidden.add)(key)
        self._chosen_hidden = hidden
        self.ctx.window_state.set_hidden_columns(hidden)
        self._apply_columns()

    def fit_columns(self) -> None:
        """Back to showing what fits the window's width (the choice made is forgotten)."""
        self._chosen_hidden = None
        self.ctx.window_state.set_hidden_columns(None)
        self._apply_columns()

    def _section_resized(self, index: int, _old: int, new: int) -> None:
        if new > 0:  # a hidden section reports 0: keep the width it had
            self._widths[self.fleet.columns[index].key] = new

    def _fitted_hidden(self) -> set[str]:
        room = self.table.viewport().width()
        if room <= 0:
            return set()
        core_shown = not self.table.isColumnHidden(self.fleet.column("core"))
        need = {
            c.key: (self._widths[c.key] if c.width is not None or c.key == "core" else FIT_STRETCH_MIN)
            for c in self.fleet.columns
            if c.key != "core" or core_shown
        }
        total = sum(need.values())
        hidden: set[str] = set()
        for key in FIT_ORDER:
            if total <= room:
                break
            if key in need:
                hidden.add(key)
                total -= need[key]
        return hidden

    def _apply_columns(self) -> None:
        fit = self._chosen_hidden is None
        hidden = self._fitted_hidden() if fit else (self._chosen_hidden or set())
        for i, column in enumerate(self.fleet.columns):
            if column.key == "core":
                continue
            gone = column.key in hidden and column.key != "name"
            if self.table.isColumnHidden(i) != gone:
                self.table.setColumnHidden(i, gone)
            action = self._column_actions.get(column.key)
            if action is not None:
                action.setChecked(not gone)
        self.fit_action.setChecked(fit)

    # ------------------------------------------------------------ state

    def _session_changed(self, _session: Session | None = None) -> None:
        # Any core's role that may edit enables the buttons; the selected node's core still decides.
        self.set_can_edit(self.cores.can_edit())

    def set_can_edit(self, can_edit: bool) -> None:
        self.can_edit = can_edit
        hint = "" if can_edit else VIEWER_HINT
        self.edit_button.setToolTip(hint or "Rename, regroup or retag the selected node")
        self.remove_button.setToolTip(hint or "Remove the selected node and revoke its credential")
        self._update_buttons()

    def _stale_changed(self, since: float | None) -> None:
        if since is None:
            self._stale_detail = ""
            self.stale_label.hide()
            return
        when = fmt_time(since)
        self.stale_label.setText(
            f"Offline since {when}: the fleet as it was then, not live. Connecting… {self._stale_detail}".strip()
        )
        self.stale_label.setAccessibleName(self.stale_label.text())
        self.stale_label.show()

    def set_stale_detail(self, detail: str) -> None:
        """Why the core is not answering yet, after the stale banner's own words."""
        self._stale_detail = detail
        self._stale_changed(self.fleet.stale_since)

    def _update_buttons(self) -> None:
        count = len(self.selected_node_ids())
        self.edit_button.setEnabled(self.can_edit and count == 1)
        self.remove_button.setEnabled(self.can_edit and count == 1)
        self.run_button.setEnabled(self.can_edit and count > 0)
        self.run_button.setToolTip(
            "Run a command on the selected nodes"
            if self.can_edit
            else "Running commands needs the operator role."
        )

    def _fill_facets(self) -> None:
        for combo, everything, values in (
            (self.group_filter, "All groups", self.fleet.groups()),
            (self.tag_filter, "All tags", self.fleet.tags()),
        ):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(everything, None)
            for value in values:
                combo.addItem(value, value)
            index = combo.findData(current) if current is not None else 0
            combo.setCurrentIndex(max(0, index))
            combo.blockSignals(False)
            if index < 0:  # the chosen group or tag is gone: show everything again
                combo.currentIndexChanged.emit(0)

    def _cores_changed(self) -> None:
        """The Core column and filter show only while the window holds more than one core."""
        names = self.fleet.core_names()
        several = len(names) > 1
        self.table.setColumnHidden(self.fleet.column("core"), not several)
        if several:
            # Room for "Unreachable" beside the dot (8 + 10 + 6 px) and the margins, which only rows
            # of one of several cores say; only ever wider, so a width the user chose stays.
            status = self.fleet.column("status")
            header = self.table.horizontalHeader()
            needed = 8 + 10 + 6 + 8 + self.table.fontMetrics().horizontalAdvance(UNREACHABLE)
            header.resizeSection(status, max(header.sectionSize(status), needed))
        self.core_filter.setVisible(several)
        self._apply_columns()  # the Core column takes room, or gives it back
        current = self.core_filter.currentData()
        self.core_filter.blockSignals(True)
        self.core_filter.clear()
        self.core_filter.addItem("All cores", None)
        for slot, name in names.items():
            self.core_filter.addItem(name, slot)
        index = self.core_filter.findData(current) if current is not None else 0
        self.core_filter.setCurrentIndex(max(0, index))
        self.core_filter.blockSignals(False)
        if index < 0:  # the chosen core was disconnected: show every core again
            self.core_filter.currentIndexChanged.emit(0)

    def selected_node_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        value = rows[0].data(NodeIdRole)
        return int(value) if value is not None else None

    def selected_node_ids(self) -> list[int]:
        ids = [r.data(NodeIdRole) for r in self.table.selectionModel().selectedRows()]
        return [int(i) for i in ids if i is not None]

    def select_nodes(self, node_ids: list[int]) -> None:
        """Select exactly these rows (as Ctrl+click would)."""
        selection = self.table.selectionModel()
        selection.clearSelection()
        flags = selection.SelectionFlag.Select | selection.SelectionFlag.Rows
        for row in range(self.proxy.rowCount()):
            index = self.proxy.index(row, 0)
            if index.data(NodeIdRole) in node_ids:
                selection.select(index, flags)

    def compare_selected(self) -> None:
        self.compare.emit(self.selected_node_ids())

    def run_on_selected(self) -> None:
        if self.can_edit:
            self.run_command.emit(self.selected_node_ids())

    def select_node(self, node_id: int) -> bool:
        for row in range(self.proxy.rowCount()):
            index = self.proxy.index(row, 0)
            if index.data(NodeIdRole) == node_id:
                # Not selectRow: in extended selection it reads the keyboard's modifiers, so a held
                # (or stale) Ctrl/Shift would add to the selection instead of replacing it.
                flags = (
                    QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
                )
                self.table.selectionModel().setCurrentIndex(index, flags)
                return True
        return False

    # ------------------------------------------------------------ actions

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            watched is self.table.viewport()
            and event.type() == QEvent.Type.Resize
            and self._chosen_hidden is None
        ):
            self._apply_columns()  # the viewport's own event: its new width is known by then
        if (
            watched is self.table
            and event.type() == QEvent.Type.KeyPress
            and isinstance(event, QKeyEvent)
            and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        ):
            index = self.table.currentIndex()
            if index.isValid():
                self._double_clicked(index)
                return True
        return super().eventFilter(watched, event)

    def refresh(self) -> None:
        """Ask each core for its node list now, whatever its live link is doing."""
        for ctx in list(self.cores.contexts.values()):
            if ctx.rest.session is not None:
                ctx.aio.spawn(self._refresh(ctx), "refresh-nodes")

    async def _refresh(self, ctx: AppContext) -> None:
        where = f" {ctx.core_name}" if ctx.core_name else ""
        try:
            nodes = await ctx.rest.nodes()
        except CoreError as exc:
            self.message.emit(f"Could not refresh{where}: {exc.message}")
            return
        ctx.model.apply_snapshot(nodes)
        self.refreshes += 1
        self.message.emit(f"Refreshed{where}: {len(nodes)} node{'s' if len(nodes) != 1 else ''}.")

    def _double_clicked(self, index: QModelIndex) -> None:
        node_id = index.data(NodeIdRole)
        if node_id is not None:
            self.open_node.emit(int(node_id))

    def _context_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if not index.isValid():
            return
        if not self.table.selectionModel().isRowSelected(index.row(), QModelIndex()):
            self.table.selectRow(index.row())
        menu = QMenu(self)
        open_action = menu.addAction("Open")
        open_action.setShortcut(QKeySequence(Qt.Key.Key_Return))  # shown in the menu; the filter does it
        open_action.triggered.connect(lambda: self._double_clicked(index))
        menu.addAction(self.compare_action)
        run = menu.addAction("Run command…")
        run.triggered.connect(self.run_on_selected)
        run.setEnabled(self.can_edit)
        for action in self.selection_actions:
            menu.addAction(action)
        edit = menu.addAction(icon("edit"), "Edit…")
        edit.triggered.connect(self.edit_selected)
        remove = menu.addAction(icon("remove"), "Remove…")
        remove.triggered.connect(self.remove_selected)
        edit.setEnabled(self.can_edit)
        remove.setEnabled(self.can_edit)
        menu.addSeparator()
        menu.addAction(self.refresh_action)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def _selected_on_core(self) -> tuple[AppContext, p.NodeInfo] | None:
        """The selected node's core and the node as that core has it."""
        key = self.selected_node_id()
        found = self.cores.context_of(key) if key is not None else None
        node = found[0].model.node(found[1]) if found is not None else None
        return None if found is None or node is None else (found[0], node)

    def edit_selected(self) -> EditNodeDialog | None:
        found = self._selected_on_core()
        if found is None or not self.can_edit:
            return None
        ctx, node = found
        dialog = EditNodeDialog(node, ctx.model.groups(), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.submitted.connect(
            lambda nid, name, group, tags: ctx.aio.spawn(
                self._save(ctx, dialog, nid, name, group, tags), "edit-node"
            )
        )
        dialog.open()
        return dialog

    async def _save(
        self, ctx: AppContext, dialog: EditNodeDialog, node_id: int, name: str, group: str, tags: list[str]
    ) -> None:
        try:
            node = await ctx.rest.patch_node(node_id, name=name, group=group, tags=tags)
        except CoreError as exc:
            dialog.show_error(exc.message)
            return
        # The socket will say the same; applying the reply now makes the edit show at once.
        ctx.model.apply_node(node)
        dialog.accept()
        self.message.emit(f"Saved {node.name}.")

    def remove_selected(self) -> QMessageBox | None:
        found = self._selected_on_core()
        if found is None or not self.can_edit:
            return None
        ctx, node = found
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Remove node",
            f"Remove {node.name}? Its history is deleted and its agent's credential stops working.",
            QMessageBox.StandardButton.Cancel,
            self,
        )
        remove = box.addButton("Remove", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.buttonClicked.connect(
            lambda button: (
                ctx.aio.spawn(self._remove(ctx, node.id, node.name), "remove-node")
                if button is remove
                else None
            )
        )
        box.open()
        return box

    async def _remove(self, ctx: AppContext, node_id: int, name: str) -> None:
        try:
            await ctx.rest.delete_node(node_id)
        except CoreError as exc:
            self.message.emit(f"Could not remove {name}: {exc.message}")
            return
        ctx.model.remove_node(node_id)
        self.message.emit(f"Removed {name}.")
