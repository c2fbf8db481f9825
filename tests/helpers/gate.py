"""A SQL function that parks the SQLite connection thread running it until the test opens it."""

from __future__ import annotations

import threading


class Gate:
    """`SELECT gate()` blocks the aiosqlite thread running it until `open()` (or 30 s)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.entered = threading.Event()

    def __call__(self) -> int:
        self.entered.set()
        return int(self.event.wait(30))

    def open(self) -> None:
        self.event.set()
