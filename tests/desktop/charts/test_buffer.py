"""The chart's point buffer: a sliding window over preallocated columns."""

from __future__ import annotations

import numpy as np
import pytest

from servermanager.desktop.charts.buffer import SeriesBuffer, as_float_array


def test_appends_slide_the_window_and_compact_in_place() -> None:
    buf = SeriesBuffer(2, capacity=8)
    for t in range(8):
        buf.append(float(t), np.array([t, -t], dtype=np.float64))
    buf.drop_before(5.0)  # three left: the next append compacts them to the front
    buf.append(8.0, np.array([8.0, -8.0]))
    assert buf.capacity == 8 and buf.start == 0
    np.testing.assert_array_equal(buf.xs(), [5.0, 6.0, 7.0, 8.0])
    np.testing.assert_array_equal(buf.ys()[1], [-5.0, -6.0, -7.0, -8.0])
    for t in range(9, 14):  # full, and more than half of it the window: it doubles instead
        buf.append(float(t), np.array([t, -t], dtype=np.float64))
    assert buf.capacity == 16 and len(buf) == 9 and buf.last_x() == 13.0
    np.testing.assert_array_equal(buf.xs(), np.arange(5.0, 14.0))


def test_replace_keeps_headroom_and_clear_empties() -> None:
    buf = SeriesBuffer(1)
    buf.replace(np.arange(1000.0), np.arange(1000.0).reshape(1, -1))
    assert len(buf) == 1000 and buf.capacity > 1000
    buf.clear()
    assert len(buf) == 0 and buf.last_x() is None


def test_as_float_array_turns_none_into_nan_and_checks_lengths() -> None:
    a = as_float_array([1.0, None], 2)
    assert a.dtype == np.float64 and np.isnan(a[1])
    assert np.isnan(as_float_array(None, 3)).all()
    with pytest.raises(ValueError, match="1 points, timestamps have 2"):
        as_float_array([1.0], 2)
