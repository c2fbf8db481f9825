"""The desktop app's menu entry and icon (packaging/desktop/), checked without a build."""

from __future__ import annotations

import struct

from tests.helpers.desktop_entry import DESKTOP, validate


def test_the_desktop_file_is_valid() -> None:
    validate(DESKTOP / "servermanager.desktop")
    lines = (DESKTOP / "servermanager.desktop").read_text().splitlines()
    # Qt's setDesktopFileName("servermanager") ties the window to servermanager.desktop on Wayland.
    assert "Icon=servermanager" in lines
    assert "Exec=servermanager-desktop" in lines


def test_the_icon_is_a_256_pixel_png() -> None:
    data = (DESKTOP / "servermanager.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (256, 256)
