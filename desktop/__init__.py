"""The Server Manager desktop app (Qt via PySide6, asyncio via qasync)."""
