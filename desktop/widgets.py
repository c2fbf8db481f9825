"""Small dumb widgets and painting helpers: record tables, forms, confirmations, in-cell percentage bars, the fleet delegate, meters."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import (
    QAbstractItemModel,
    QModelIndex,
    QPersistentModelIndex,
    QRect,
    QRectF,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QAction, QColor, QFontMetrics, QKeySequence, QPainter, QPalette, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHeaderView,
    QLabel,
    QLayout,
    QMessageBox,
    QScrollArea,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from servermanager.desktop.format import NA
from servermanager.desktop.models.fleet import AlertRole, ColumnRole, OnlineRole, PercentRole
from servermanager.desktop.themes import BAD, GOOD, MUTED, WARN

Index = QModelIndex | QPersistentModelIndex


def record_table(model: QAbstractItemModel) -> QTableView:
    """A read-only table of records: whole rows selected one at a time, one line per row, each
    column as wide as its content (record lists are short), the last one taking what is left."""
    table = QTableView()
    table.setModel(model)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().hide()
    table.setWordWrap(False)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    return table


class FormDialog(QDialog):
    """A form with an error line under it and Save / Cancel. Save emits `submitted` with what
    `body()` builds from the form, or shows the ValueError it raised, naming what is wrong."""

    submitted = Signal(object)

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.error = QLabel()
        self.error.setObjectName("error")
        self.error.setWordWrap(True)
        self.error.hide()
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self._submit)
        self.buttons.rejected.connect(self.reject)

    def lay_out(self, *parts: QLayout | QWidget) -> None:
        """The parts top to bottom, then the error line and the buttons."""
        layout = QVBoxLayout(self)
        for part in parts:
            if isinstance(part, QLayout):
                layout.addLayout(part)
            else:
                layout.addWidget(part)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

    def body(self) -> object:
        raise NotImplementedError

    def _submit(self) -> None:
        try:
            body = self.body()
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.show_error("")
        self.submitted.emit(body)

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))


def scrolled(content: QWidget) -> QScrollArea:
    """`content` in a frameless scroll area that sizes it to its width: charts whose own minimum
    heights add up to more than a short window (1024x640) scroll instead of stretching the window
    or being cut off at its edge."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(content)
    return area


def confirm(parent: QWidget, title: str, text: str, ok: str, then: Callable[[], object]) -> QMessageBox:
    """Ask before doing something that cannot be undone (non-blocking: `then` runs on `ok`)."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.Cancel, parent)
    button = box.addButton(ok, QMessageBox.ButtonRole.AcceptRole)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.buttonClicked.connect(lambda clicked: then() if clicked is button else None)
    box.open()
    return box


def level_color(pct: float) -> QColor:
    """Green below 70 %, amber below 90 %, red above: how worried to be at a glance."""
    return GOOD if pct < 70 else WARN if pct < 90 else BAD


def paint_bar(
    painter: QPainter, rect: QRect, pct: float | None, text: str, pal: QPalette, *, dim: bool = False
) -> None:
    """A rounded track, a fill proportional to pct, and the value text on top."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    track = QRectF(rect.adjusted(4, 5, -4, -5))
    base = QColor(pal.color(QPalette.ColorRole.WindowText))
    base.setAlphaF(0.08)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(base)
    painter.drawRoundedRect(track, 3, 3)
    if pct is not None:
        fill = QColor(MUTED if dim else level_color(pct))
        fill.setAlphaF(0.45 if dim else 0.75)
        width = track.width() * max(0.0, min(100.0, pct)) / 100.0
        if width > 0:
            painter.setBrush(fill)
            painter.drawRoundedRect(QRectF(track.x(), track.y(), width, track.height()), 3, 3)
    color = pal.color(
        QPalette.ColorGroup.Disabled if dim else QPalette.ColorGroup.Active, QPalette.ColorRole.Text
    )
    painter.setPen(QPen(color))
    painter.drawText(track.adjusted(4, 0, -4, 0), int(Qt.AlignmentFlag.AlignCenter), text)
    painter.restore()


# The status cell: a dot, then the words. The column is sized for the widest words it shows in
# practice, in the table's own font; rarer, longer ones (10 alerts and more, "(cached)" while the app
# is offline) are elided, never cut mid-letter.
STATUS_DOT, STATUS_LEFT, STATUS_GAP, STATUS_RIGHT = 10, 8, 6, 4
WIDEST_STATUS = "Offline · 9 alerts"


def status_width(metrics: QFontMetrics) -> int:
    """The Status column's width for WIDEST_STATUS in this font, dot and margins included."""
    pad = STATUS_LEFT + STATUS_DOT + STATUS_GAP + STATUS_RIGHT
    return pad + metrics.horizontalAdvance(WIDEST_STATUS) + 4  # 4: the view's own cell margin


class FleetDelegate(QStyledItemDelegate):
    """Paints the fleet table: status dots, percentage bars, and dimmed rows for offline nodes."""

    def initStyleOption(self, option: QStyleOptionViewItem, index: Index) -> None:
        super().initStyleOption(option, index)
        if index.data(OnlineRole) is False:
            # Offline rows read as greyed out, but stay selectable and legible.
            dim = option.palette.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
            option.palette.setColor(QPalette.ColorRole.Text, dim)
            option.palette.setColor(QPalette.ColorRole.HighlightedText, dim.lighter(160))

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        column = index.data(ColumnRole)
        if column is not None and column.key == "status":
            self._paint_status(painter, option, index)
            return
        if column is not None and column.bar:
            opt = QStyleOptionViewItem(option)
            self.initStyleOption(opt, index)
            opt.text = ""
            widget = option.widget
            style = widget.style() if widget is not None else None
            if style is not None:
                style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
            pct = index.data(PercentRole)
            paint_bar(
                painter,
                option.rect,
                pct,
                str(index.data() or ""),
                option.palette,
                dim=index.data(OnlineRole) is False,
            )
            return
        super().paint(painter, option, index)

    def _paint_status(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        online = index.data(OnlineRole) is True
        rect = opt.rect
        opt.text = ""
        widget = opt.widget
        if widget is not None:
            widget.style().drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        d = STATUS_DOT
        dot = QRectF(rect.x() + STATUS_LEFT, rect.center().y() - d / 2 + 1, d, d)
        alert = index.data(AlertRole)
        if online:
            # A firing alert turns an online node's dot amber (warning) or red (critical).
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(BAD if alert == "critical" else WARN if alert == "warning" else GOOD)
        else:
            painter.setPen(QPen(BAD, 2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawEllipse(dot.adjusted(1, 1, -1, -1))
        painter.setPen(opt.palette.color(QPalette.ColorRole.Text))
        text_rect = rect.adjusted(STATUS_LEFT + d + STATUS_GAP, 0, -STATUS_RIGHT, 0)
        text = opt.fontMetrics.elidedText(
            str(index.data() or ""), Qt.TextElideMode.ElideRight, text_rect.width()
        )
        painter.drawText(text_rect, int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), text)
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: Index) -> QSize:
        size = super().sizeHint(option, index)
        column = index.data(ColumnRole)
        if column is not None and column.bar:
            size.setWidth(max(size.width(), 90))
        if column is not None and column.key == "status":
            size.setWidth(size.width() + 24)
        size.setHeight(max(size.height(), 26))
        return size


LABEL_GAP = 12  # pixels between a meter's label and its detail


class Meter(QWidget):
    """One gauge of the node view: a label and a detail above a bar with the headline value."""

    def __init__(self, label: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = label
        self.pct: float | None = None
        self.text = NA
        self.detail = ""
        self.dim = False
        self.setMinimumSize(140, 44)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_value(self, pct: float | None, text: str, *, detail: str = "", dim: bool = False) -> None:
        if (pct, text, detail, dim) != (self.pct, self.text, self.detail, self.dim):
            self.pct, self.text, self.detail, self.dim = pct, text, detail, dim
            self.setToolTip(f"{self.label}: {text}" + (f" ({detail})" if detail else ""))
            self.update()

    def sizeHint(self) -> QSize:
        return QSize(180, 44)

    def head_room(self) -> tuple[int, int]:
        """(width the label and detail need, width they have) on the meter's head line."""
        metrics = self.fontMetrics()
        need = metrics.horizontalAdvance(self.label)
        if self.detail:
            need += LABEL_GAP + metrics.horizontalAdvance(self.detail)
        return need, self.width() - 8

    def paintEvent(self, _event: object) -> None:
        painter = QPainter(self)
        pal = self.palette()
        painter.setPen(pal.color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.WindowText))
        head = QRect(4, 0, self.width() - 8, 18)
        left = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        right = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        metrics = painter.fontMetrics()
        label_width = metrics.horizontalAdvance(self.label) + LABEL_GAP
        painter.drawText(head, left, self.label)
        if self.detail:
            # The detail gives way (elided) before the label does.
            room = max(0, head.width() - label_width)
            detail = metrics.elidedText(self.detail, Qt.TextElideMode.ElideLeft, room)
            painter.drawText(head, right, detail)
        paint_bar(painter, QRect(0, 17, self.width(), 27), self.pct, self.text, pal, dim=self.dim)
        painter.end()


def tip_with_key(action: QAction, tip: str) -> None:
    """The toolbar's tooltips say the key too, as the menus do: "Alerts (Ctrl+Shift+A)"."""
    key = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
    action.setToolTip(f"{tip} ({key})" if key and key not in tip else tip)
