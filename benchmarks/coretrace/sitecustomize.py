"""Timings from inside a running core, for the load benchmark: `PYTHONPATH=benchmarks/coretrace`.

Python imports this module in every process it starts with that path; it acts only in
`servermanager core` processes and writes one line per event to
`$SM_CORETRACE_DIR/<pid>.log` (default: the current directory):

- `gc1` / `gc2`: a collection of the cycle collector's older generations over 5 ms;
- `rollup`, `settle`, `move`: the rollup pass, and its moves of samples_head and series_incoming;
- `commit`: a group commit of the sample writer over 100 ms, with the batches it carried;
- `held`: per second, reads of agent sockets held back because the agent had
  `ingest_batches_in_flight` batches waiting for a commit.

It wraps the functions once their modules are loaded (an import hook), and changes nothing else.
"""

from __future__ import annotations

import builtins
import gc
import os
import sys
import time
from collections.abc import Callable
from typing import Any

if sys.argv[1:2] == ["core"]:
    _out = open(  # noqa: SIM115 - open for the life of the process
        os.path.join(os.environ.get("SM_CORETRACE_DIR", "."), f"{os.getpid()}.log"), "a", buffering=1
    )
    _gc_start = [0.0]

    def _gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _gc_start[0] = time.perf_counter()
        elif info["generation"] >= 1 and (took := time.perf_counter() - _gc_start[0]) > 0.005:
            _out.write(
                f"{time.time():.3f} gc{info['generation']} {took * 1000:.1f}ms collected={info['collected']}\n"
            )

    gc.callbacks.append(_gc)

    def _timed(name: str, fn: Any, detail: Any, over: float = 0.0) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.time()
            result = await fn(*args, **kwargs)
            if (took := time.time() - t) >= over:
                _out.write(f"{t:.3f} {name} {took * 1000:.0f}ms {detail(args, result)}\n")
            return result

        return wrapper

    def _store(maintenance: Any, writer: Any, series: Any) -> None:
        maintenance.Maintenance.rollup = _timed(
            "rollup", maintenance.Maintenance.rollup, lambda a, r: f"buckets={r}"
        )
        maintenance._settle = _timed("settle", maintenance._settle, lambda a, r: f"rows={r}")
        series.SeriesStore.move_incoming = _timed(
            "move", series.SeriesStore.move_incoming, lambda a, r: f"rows={r}"
        )
        writer.Writer._commit = _timed(
            "commit", writer.Writer._commit, lambda a, r: f"batches={len(a[1])}", 0.1
        )

    def _gateway(gateway: Any) -> None:
        wait = gateway.Ingest.wait
        held: dict[int, int] = {}

        async def counted(self: Any, node: Any, delay: float) -> None:
            if self.in_flight >= self.max_in_flight:
                now = int(time.time())
                held[now] = held.get(now, 0) + 1
                for second in [s for s in held if s < now]:
                    _out.write(f"{second} held {held.pop(second)}\n")
            await wait(self, node, delay)

        gateway.Ingest.wait = counted

    _pending: dict[Callable[..., None], tuple[tuple[str, str], ...]] = {
        _store: (
            ("servermanager.core.store.maintenance", "Maintenance"),
            ("servermanager.core.store.writer", "Writer"),
            ("servermanager.core.store.series", "SeriesStore"),
        ),
        _gateway: (("servermanager.core.ws.agent_gateway", "Ingest"),),
    }
    _import = builtins.__import__

    def _hook(*args: Any, **kwargs: Any) -> Any:
        module = _import(*args, **kwargs)
        for patch, needs in list(_pending.items()):
            mods = [sys.modules.get(name) for name, _ in needs]
            # Only once each module has finished loading: a circular import sees it half-made.
            if all(m is not None and hasattr(m, attr) for m, (_, attr) in zip(mods, needs, strict=True)):
                del _pending[patch]
                patch(*mods)
        if not _pending:
            builtins.__import__ = _import
        return module

    builtins.__import__ = _hook
