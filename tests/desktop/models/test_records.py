"""The read-only records model: a row per record, a column per (header, cell function) pair."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, Qt
from pytestqt.qtbot import QtBot

from servermanager.desktop.models.records import RecordsModel


class Pairs(RecordsModel[tuple[str, int]]):
    columns = (("Name", lambda r: r[0]), ("Count", lambda r: str(r[1])))


def test_records_show_by_column_and_pass_the_model_tester(qtbot: QtBot, qtmodeltester: Any) -> None:
    model = Pairs()
    qtmodeltester.check(model)
    model.set_records([("a", 1), ("b", 2)])
    assert (model.rowCount(), model.columnCount()) == (2, 2)
    assert model.index(1, 1).data() == "2" and model.index(1, 0).data(Qt.ItemDataRole.ToolTipRole) == "b"
    assert model.headerData(0, Qt.Orientation.Horizontal) == "Name"
    assert model.headerData(5, Qt.Orientation.Horizontal) is None
    assert model.record(0) == ("a", 1) and model.record(2) is None
    assert model.rowCount(model.index(0, 0)) == 0 and model.index(0, 0).parent() == QModelIndex()
    model.set_records([])
    assert model.rowCount() == 0
