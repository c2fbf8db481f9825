"""Accessible names: every interactive widget of the main window and a node view has a name or visible text."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QWidget,
)

from devkit.cores import RunningCore
from servermanager.desktop.context import AppContext
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Run, enrolled, sign_in, until

INTERACTIVE = (QAbstractButton, QLineEdit, QComboBox, QAbstractItemView)


def unnamed(root: QWidget) -> list[str]:
    """Interactive widgets a screen reader would announce as nothing."""
    missing = []
    for widget in root.findChildren(QWidget):
        if not isinstance(widget, INTERACTIVE):
            continue
        if widget.accessibleName().strip():
            continue
        if isinstance(widget, QAbstractButton) and widget.text().replace("&", "").strip():
            continue
        if isinstance(widget, QComboBox) and not widget.isEditable():
            continue  # announced by its current item's text
        parent = widget.parentWidget()
        if isinstance(parent, QComboBox | QAbstractItemView | QLineEdit | QAbstractSpinBox):
            continue  # a line edit's clear button, a spin box's editor: named through their owner
        if parent is not None and parent.inherits("QComboBoxPrivateContainer"):
            continue  # a combo's drop-down list: announced as the combo
        missing.append(f"{type(widget).__name__} {widget.objectName()!r} in {type(parent).__name__}")
    return missing


def test_every_interactive_widget_is_named(
    window: MainWindow, ctx: AppContext, core: RunningCore, run: Run
) -> None:
    web = run(enrolled(core, "web-1"))
    run(sign_in(ctx, core))
    run(until(lambda: ctx.model.rowCount() == 1, "the node"))
    window.show()
    assert web.node_id is not None
    view = window.open_node(web.node_id)
    for tab in range(view.sections.count()):
        view.sections.setCurrentIndex(tab)  # panels build their widgets when first shown
    window.open_palette()
    assert unnamed(window) == []
    assert unnamed(view) == []
