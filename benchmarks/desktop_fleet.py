"""Desktop app with 300 live nodes: time from start to the first full fleet table, then the app's RSS and CPU.

The core runs as its own process and 300 simulated agents (benchmarks.fleet) in another, each sending a
sample a second. This process is the desktop app: the clock starts before Qt is imported and stops when
the fleet table holds every node with a sample. Then it runs for --window seconds of live updates,
sampling its own RSS and CPU time.

Reproduce: .venv/bin/python -m benchmarks.desktop_fleet --nodes 300 --window 30
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
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

from devkit.ports import free_port  # noqa: E402
from servermanager.core.datadir import initial_admin_password  # noqa: E402

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


FLEET_CMD = [sys.executable, "-m", "benchmarks.fleet"]


def _api(url: str, path: str, body: object = None, token: str | None = None) -> dict[str, object]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _start_fleet(base: Path, nodes: int, duration: float) -> tuple[str, str, list[subprocess.Popen[bytes]]]:
    """Core and simulated agents in their own processes; returns (url, admin password, processes)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    log = (base / "core.log").open("wb")
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "servermanager",
                "core",
                "--data-dir",
                str(base / "core"),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )
    for _ in range(300):
        try:
            _api(url, "/api/v1/health")
            break
        except OSError:
            time.sleep(0.1)
    password = initial_admin_password(base / "core")
    token = str(_api(url, "/api/v1/auth/login", {"username": "admin", "password": password})["access_token"])
    enroll = str(_api(url, "/api/v1/enroll-tokens", {"uses": nodes, "ttl": 3600}, token)["token"])
    flog = (base / "fleet.log").open("wb")
    procs.append(
        subprocess.Popen(
            [
                *FLEET_CMD,
                "--core",
                url,
                "--token",
                enroll,
                "--count",
                str(nodes),
                "--interval",
                "1",
                "--duration",
                str(duration),
            ],
            stdout=flog,
            stderr=subprocess.STDOUT,
        )
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = _api(url, "/api/v1/nodes", token=token)["nodes"]
        assert isinstance(listed, list)
        if sum(1 for n in listed if n["online"] and n["latest"]) >= nodes:
            return url, password, procs
        time.sleep(0.5)
    raise SystemExit("the simulated fleet did not come online")


async def _measure(url: str, password: str, nodes: int, window: float, t_setup: float) -> dict[str, float]:
    import psutil
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from servermanager.desktop.context import AppContext
    from servermanager.desktop.settings import Profile
    from servermanager.desktop.window import MainWindow

    app = QApplication.instance()
    assert isinstance(app, QApplication)
    workdir = Path(tempfile.mkdtemp(prefix="sm-bench-desktop-"))
    ctx = AppContext.create(app, QSettings(str(workdir / "desktop.ini"), QSettings.Format.IniFormat))
    main_window = MainWindow(ctx)
    main_window.resize(1400, 860)
    main_window.show()
    t_signin = time.perf_counter()
    await ctx.signin.sign_in(Profile("bench", url, "password", "admin"), password, remember=False)
    model = ctx.model
    # Polling the model is the measurement itself: a 5 ms granularity is far below what is measured.
    while not (model.rowCount() >= nodes and all(n.latest is not None for n in model.nodes())):  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    t_full = time.perf_counter()
    proc = psutil.Process()
    cpu0, w0 = proc.cpu_times(), time.perf_counter()
    rss: list[float] = []
    while time.perf_counter() - w0 < window:
        await asyncio.sleep(1.0)
        rss.append(proc.memory_info().rss / 2**20)
    cpu1, w1 = proc.cpu_times(), time.perf_counter()
    await ctx.close()
    main_window.close()
    shutil.rmtree(workdir, ignore_errors=True)
    busy = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {
        "start_to_full_table_s": t_full - T_START - t_setup,
        "signin_to_full_table_s": t_full - t_signin,
        "rss_mb_mean": sum(rss) / len(rss),
        "rss_mb_max": max(rss),
        "cpu_pct_of_one_core": 100 * busy / (w1 - w0),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=300)
    ap.add_argument("--window", type=float, default=30.0)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sm-bench-fleet-"))
    # The fleet's own set-up is not the app's start: it is subtracted from the start-up time.
    t0 = time.perf_counter()
    url, password, procs = _start_fleet(base, args.nodes, args.window + 180)
    t_setup = time.perf_counter() - t0
    try:
        import qasync
        from PySide6.QtWidgets import QApplication

        app = QApplication(sys.argv[:1])
        with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
            result = runner.run(_measure(url, password, args.nodes, args.window, t_setup))
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
    print(
        "| nodes | start to full table s | sign-in to full table s | RSS MB mean | RSS MB max | CPU % of a core |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| {args.nodes} | {result['start_to_full_table_s']:.2f} | {result['signin_to_full_table_s']:.2f} | "
        f"{result['rss_mb_mean']:.0f} | {result['rss_mb_max']:.0f} | {result['cpu_pct_of_one_core']:.1f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
