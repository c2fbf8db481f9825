"""Desktop app with three cores of 300 live nodes each merged in one window, against one core of 300 in the same run.

Three cores run as their own processes, each with 300 simulated agents (benchmarks.fleet) in another
process sending a sample a second. The app is measured twice, each time in a fresh child process of
this script, against the same running fleets: first signed in to one core (the baseline), then to
all three in one window (File → Connect another core…, as a user does). For each: the time from the
process's start (before Qt is imported) to a fleet table holding every node with a sample, then RSS
and CPU sampled once a second over --window seconds of live updates.

Reproduce: .venv/bin/python -m benchmarks.desktop_cores --nodes 300 --window 30
"""

from __future__ import annotations

import time

T_START = time.perf_counter()  # before any heavy import: what a person waits for includes them

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.desktop_fleet import _start_fleet  # noqa: E402

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


async def _measure(cores: list[tuple[str, str]], nodes: int, window: float) -> dict[str, float]:
    """In this process: sign in to every core of `cores` (url, admin password) in one window."""
    import psutil
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from servermanager.desktop.context import AppContext
    from servermanager.desktop.settings import Profile
    from servermanager.desktop.window import MainWindow

    app = QApplication.instance()
    assert isinstance(app, QApplication)
    workdir = Path(tempfile.mkdtemp(prefix="sm-bench-cores-"))
    ctx = AppContext.create(app, QSettings(str(workdir / "desktop.ini"), QSettings.Format.IniFormat))
    main_window = MainWindow(ctx)
    main_window.resize(1400, 860)
    main_window.show()
    t_signin = time.perf_counter()
    (url, password), *others = cores
    first = ctx.signin.sign_in(Profile("core-1", url, "password", "admin"), password, remember=False)

    async def another(i: int, url: str, password: str) -> None:
        dialog = main_window.core_menu.open_dialog()
        profile = Profile(f"core-{i}", url, "password", "admin", remember=False)
        if await main_window.core_menu.connect_core(dialog, profile, password, remember=False) is None:
            raise SystemExit(f"could not connect core-{i}: {dialog.error.text()}")

    # One after the other, as a user adds them: each dialog is the window's one "Connect another core…".
    await first
    for i, (u, pw) in enumerate(others, start=2):
        await another(i, u, pw)
    fleet = main_window.cores.fleet
    want = nodes * len(cores)
    # Polling the model is the measurement itself: a 5 ms granularity is far below what is measured.
    while not (  # noqa: ASYNC110
        fleet.rowCount() >= want and all(n.latest is not None for _k, n in fleet.keyed_nodes())
    ):
        await asyncio.sleep(0.005)
    t_full = time.perf_counter()
    assert main_window.fleet.proxy.rowCount() == want
    proc = psutil.Process()
    rss: list[float] = []
    cpu: list[float] = []
    last_cpu, last_t = proc.cpu_times(), time.perf_counter()
    w0 = last_t
    while time.perf_counter() - w0 < window:
        await asyncio.sleep(1.0)
        now_cpu, now_t = proc.cpu_times(), time.perf_counter()
        busy = (now_cpu.user + now_cpu.system) - (last_cpu.user + last_cpu.system)
        cpu.append(100 * busy / (now_t - last_t))
        rss.append(proc.memory_info().rss / 2**20)
        last_cpu, last_t = now_cpu, now_t
    await main_window.cores.close()
    await ctx.close()
    main_window.close()
    shutil.rmtree(workdir, ignore_errors=True)
    return {
        "cores": len(cores),
        "nodes": want,
        "start_to_full_table_s": t_full - T_START,
        "signin_to_full_table_s": t_full - t_signin,
        "rss_mb_mean": sum(rss) / len(rss),
        "rss_mb_max": max(rss),
        "cpu_pct_mean": sum(cpu) / len(cpu),
        "cpu_pct_max": max(cpu),
    }


def _child(spec: str, nodes: int, window: float) -> int:
    import qasync
    from PySide6.QtWidgets import QApplication

    cores = [tuple(c) for c in json.loads(spec)]
    app = QApplication(sys.argv[:1])
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        result = runner.run(_measure(cores, nodes, window))
    print(json.dumps(result))
    return 0


def _run_child(cores: list[tuple[str, str]], nodes: int, window: float) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.desktop_cores",
            "--child",
            json.dumps(cores),
            "--nodes",
            str(nodes),
            "--window",
            str(window),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=300, help="simulated nodes per core")
    ap.add_argument("--cores", type=int, default=3)
    ap.add_argument("--window", type=float, default=30.0)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    if args.child:
        return _child(args.child, args.nodes, args.window)
    base = Path(tempfile.mkdtemp(prefix="sm-bench-cores-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cores: list[tuple[str, str]] = []
        for i in range(args.cores):
            (base / f"c{i}").mkdir()
            # Long enough for both measurements and their start-ups.
            url, password, started = _start_fleet(base / f"c{i}", args.nodes, 2 * args.window + 300)
            procs += started
            cores.append((url, password))
        baseline = _run_child(cores[:1], args.nodes, args.window)
        merged = _run_child(cores, args.nodes, args.window)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
    keys = (
        "start_to_full_table_s",
        "signin_to_full_table_s",
        "rss_mb_mean",
        "rss_mb_max",
        "cpu_pct_mean",
        "cpu_pct_max",
    )
    print(
        "| window | nodes | start to full table s | sign-in to full table s | RSS MB mean | RSS MB max "
        "| CPU % mean (1 Hz) | CPU % max (1 Hz) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, r in (("1 core (baseline)", baseline), (f"{args.cores} cores merged", merged)):
        print(f"| {label} | {int(r['nodes'])} | " + " | ".join(f"{r[k]:.2f}" for k in keys) + " |")
    print(
        f"| ratio | {merged['nodes'] / baseline['nodes']:.1f}x | "
        + " | ".join(f"{merged[k] / baseline[k]:.2f}x" for k in keys)
        + " |"
    )
    if args.out is not None:
        args.out.write_text(json.dumps({"baseline": baseline, "merged": merged}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
