"""DayCache: past days of 1-minute history as JSON text, per node, day and column, under a byte bound."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection

DAY_MS = 86_400_000

# Bookkeeping per cached fragment (key tuple, dict slot, bytes header), counted against the bound.
_ENTRY_OVERHEAD = 200


class DayCache:
    """JSON array bodies of whole past days of 1-minute rollups, per node, day and column.

    SQLite writes a REAL out as text at about 0.6 µs: one field's 30 days (172,800 numbers) cost
    around 100 ms each time they are asked for, and a chart asks again every time its window moves.
    Past days rarely change, so their text is kept, under a byte bound, least recently used first
    out. Whatever rewrites a past day's rows (a late backfill's rollup, pruning, deleting a node)
    drops that day, and bumps `generation` so that a fill read before the change is not stored.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.generation = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[int, int, str], bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, node_id: int, day: int, column: str) -> bytes | None:
        text = self._items.get((node_id, day, column))
        if text is None:
            self.misses += 1
            return None
        self._items.move_to_end((node_id, day, column))
        self.hits += 1
        return text

    def put(self, node_id: int, day: int, column: str, text: bytes, generation: int) -> None:
        """Keep `text`, unless a day changed since `generation` was read (the text may predate it)."""
        cost = len(text) + _ENTRY_OVERHEAD
        if generation != self.generation or cost > self.max_bytes:
            return
        old = self._items.pop((node_id, day, column), None)
        if old is not None:
            self.size -= len(old) + _ENTRY_OVERHEAD
        self._items[(node_id, day, column)] = text
        self.size += cost
        while self.size > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.size -= len(dropped) + _ENTRY_OVERHEAD

    def forget_days(self, days: Collection[tuple[int, int]]) -> None:
        """These (node_id, day) pairs changed."""
        self._drop(lambda node_id, day: (node_id, day) in days)

    def forget_until(self, last_day: int) -> None:
        """Every node's days up to last_day (pruning) changed."""
        self._drop(lambda node_id, day: day <= last_day)

    def forget_node(self, node_id: int) -> None:
        self._drop(lambda nid, day: nid == node_id)

    def _drop(self, changed: Callable[[int, int], bool]) -> None:
        # Fills in flight read before the change: the new generation keeps them out.
        self.generation += 1
        for key in [k for k in self._items if changed(k[0], k[1])]:
            self.size -= len(self._items.pop(key)) + _ENTRY_OVERHEAD
