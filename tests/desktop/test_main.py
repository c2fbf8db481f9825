"""The desktop entry point's check of Qt's X11 plugin, which Qt itself reports misleadingly."""

from __future__ import annotations

import ctypes.util
from pathlib import Path

from servermanager.desktop.main import XCB_PACKAGES, xcb_problem


def test_a_plugin_that_cannot_load_is_named_with_the_packages(tmp_path: Path) -> None:
    broken = tmp_path / "libqxcb.so"
    broken.write_bytes(b"not an ELF file")
    problem = xcb_problem({"DISPLAY": ":0"}, broken)
    assert problem is not None
    assert str(broken) in problem and XCB_PACKAGES in problem


def test_a_loadable_plugin_is_no_problem() -> None:
    libc = ctypes.util.find_library("c")
    assert libc is not None
    assert xcb_problem({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, Path(libc)) is None


def test_other_platforms_are_not_checked(tmp_path: Path) -> None:
    missing = tmp_path / "absent.so"
    assert xcb_problem({"QT_QPA_PLATFORM": "offscreen"}, missing) is None
    assert xcb_problem({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"}, missing) is None
    # An X11 session (or XWayland forced) is.
    assert xcb_problem({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, missing) is not None
