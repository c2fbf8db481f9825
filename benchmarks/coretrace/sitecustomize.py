"""Timings from inside a running core, for the load benchmark: `PYTHONPATH=benchmarks/coretrace`.

Python imports this module in every process it starts with that path; it acts only in
`servermanager core` processes and writes one line per event to
`$SM_CORETRACE_DIR/<pid>.log` (default: the current directory):

- `gc0` / `gc1` / `gc2`: a young collection over 20 ms, or one of the older generations over 5 ms;
- `rollup`, `settle`, `move`: the rollup pass, and its moves of samples_head and series_incoming;
- `slice`: one transaction of the rollup pass (a level, a range of nodes, the marks it did);
- `chunks`: packing a head's settled windows into chunks (all its transactions), over 50 ms;
- `commit`: a group commit of the sample writer over 100 ms, with the batches it carried;
- `held`: per second, reads of agent sockets held back because the agent had
  `ingest_batches_in_flight` batches waiting for a commit;
- `stall`: the event loop did not turn for over 40 ms, and where its thread was then.

With `SM_CORETRACE_CENSUS=1` a slow young collection's line also counts what it walked, by type.

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
    _tasks: list[Any] = []  # the stall ticker, referenced so it is not collected

    _gc_cpu = [0.0]

    _census = os.environ.get("SM_CORETRACE_CENSUS") == "1"
    _young: list[str] = [""]
    # Every collection's CPU, summed per generation and written as one `gcsum` line per 10 s: the
    # share of the core's time the cycle collector takes, short collections included.
    _sum_n = [0, 0, 0]
    _sum_cpu = [0.0, 0.0, 0.0]
    _sum_at = [time.time()]

    def _gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            if _census and info["generation"] == 0:
                # What the young collection is about to walk (itself a walk: a diagnostic only).
                from collections import Counter

                young = gc.get_objects(0)
                top = Counter(type(o).__name__ for o in young).most_common(6)
                _young[0] = f" young={len(young)} " + ",".join(f"{k}:{v}" for k, v in top)
                del young
            _gc_start[0] = time.perf_counter()
            _gc_cpu[0] = time.thread_time()
            return
        took = time.perf_counter() - _gc_start[0]
        cpu = time.thread_time() - _gc_cpu[0]
        gen = info["generation"]
        _sum_n[gen] += 1
        _sum_cpu[gen] += cpu
        if (now := time.time()) - _sum_at[0] >= 10.0:
            span = now - _sum_at[0]
            _out.write(
                f"{now:.3f} gcsum {span:.1f}s "
                + " ".join(f"gc{g}={_sum_n[g]}x/{_sum_cpu[g] * 1000:.0f}ms" for g in range(3))
                + f" share={sum(_sum_cpu) / span * 100:.1f}%\n"
            )
            _sum_n[:] = [0, 0, 0]
            _sum_cpu[:] = [0.0, 0.0, 0.0]
            _sum_at[0] = now
        if took > (0.005 if gen else 0.02):
            _out.write(
                f"{time.time():.3f} gc{info['generation']} {took * 1000:.1f}ms cpu={cpu * 1000:.1f}ms "
                f"collected={info['collected']}{_young[0] if info['generation'] == 0 else ''}\n"
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
        maintenance.Maintenance._rollup_slice = _timed(
            "slice",
            maintenance.Maintenance._rollup_slice,
            lambda a, r: f"{a[1]} nodes={a[5]}..{a[6]} marks={r}",
        )
        maintenance._settle = _timed("settle", maintenance._settle, lambda a, r: f"rows={r}")
        series.SeriesStore.settle_tier = _timed(
            "chunks", series.SeriesStore.settle_tier, lambda a, r: f"{a[1].head} rows={r}", 0.05
        )
        series.SeriesStore.move_incoming = _timed(
            "move", series.SeriesStore.move_incoming, lambda a, r: f"rows={r}"
        )
        writer.Writer._commit = _timed(
            "commit", writer.Writer._commit, lambda a, r: f"batches={len(a[1])}", 0.1
        )
        run = writer.Writer.run

        async def run_with_stalls(self: Any) -> None:
            _watch_stalls()
            await run(self)

        writer.Writer.run = run_with_stalls

    def _watch_stalls() -> None:
        """`stall`: the event loop did not tick for over STALL_MS; the line names where the loop
        thread was when the watcher first saw it stuck (innermost frames of the core's own code)."""
        import asyncio
        import threading
        import traceback

        stall = 0.04
        tick = [time.perf_counter()]
        loop_thread = threading.get_ident()
        # The loop thread's CPU time: a stall with little of it is the OS running other processes
        # (the simulator shares the machine), not the core's own work.
        clock = time.pthread_getcpuclockid(loop_thread)

        async def ticker() -> None:
            while True:
                tick[0] = time.perf_counter()
                await asyncio.sleep(0.005)

        _tasks.append(asyncio.get_running_loop().create_task(ticker()))

        def watcher() -> None:
            stuck_at: float | None = None  # the last tick before the stall being watched
            where = ""
            cpu_at = 0.0
            while True:
                time.sleep(0.005)
                last = tick[0]
                if stuck_at is None:
                    if time.perf_counter() - last > stall:
                        stuck_at = last
                        cpu_at = time.clock_gettime(clock) - (time.perf_counter() - last)
                        frame = sys._current_frames().get(loop_thread)
                        stack = traceback.extract_stack(frame) if frame is not None else []
                        ours = [f for f in stack if "servermanager" in f.filename]
                        where = " < ".join(f"{f.name}:{f.lineno}" for f in reversed((ours or stack)[-6:]))
                elif last != stuck_at:  # the loop turned again
                    cpu = time.clock_gettime(clock) - cpu_at
                    _out.write(
                        f"{time.time():.3f} stall {(last - stuck_at) * 1000:.0f}ms "
                        f"cpu<={cpu * 1000:.0f}ms at {where}\n"
                    )
                    stuck_at = None

        threading.Thread(target=watcher, name="coretrace-stalls", daemon=True).start()

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

    def _prune(samples: Any, series: Any, processes: Any, containers: Any, db: Any) -> None:
        # Each stage of the retention job, and any one statement that holds the database long.
        for cls, name in (
            (samples.SampleStore, "prune"),
            (series.SeriesStore, "prune"),
            (series.SeriesStore, "_prune_chunks"),
            (series.SeriesStore, "prune_dictionary"),
            (processes.ProcessStore, "prune"),
            (containers.ContainerStore, "prune"),
        ):
            label = f"{cls.__name__}.{name}"
            setattr(cls, name, _timed(label, getattr(cls, name), lambda a, r: f"removed={r}"))
        db.Database.execute = _timed(
            "execute", db.Database.execute, lambda a, r: f"rows={r} {' '.join(a[1].split())[:120]}", 0.2
        )

    _pending: dict[Callable[..., None], tuple[tuple[str, str], ...]] = {
        _prune: (
            ("servermanager.core.store.samples", "SampleStore"),
            ("servermanager.core.store.series", "SeriesStore"),
            ("servermanager.core.store.processes", "ProcessStore"),
            ("servermanager.core.store.containers", "ContainerStore"),
            ("servermanager.core.store.db", "Database"),
        ),
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
