"""Frames per second of a HistoryChart panned over 30 days of 1-minute points (4 series, float64).

    .venv/bin/python -m benchmarks.chart_pan                        # offscreen Qt platform
    xvfb-run -a .venv/bin/python -m benchmarks.chart_pan            # a real X server (xcb)
    .venv/bin/python -m benchmarks.chart_pan --doc docs/benchmarks.md   # also record the result

Each frame shifts the x range with setXRange, repaints the widget synchronously (repaint(), which
clips, downsamples, re-ranges y and paints) and drains the event queue; fps = frames / wall time.
With --doc the Markdown goes under "## Desktop chart panning" in that file, one block per Qt platform,
leaving the rest of the file alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pyqtgraph as pg
import PySide6
from PySide6.QtWidgets import QApplication

from servermanager.common.metrics import Unit
from servermanager.desktop.charts.chart import HistoryChart
from servermanager.desktop.charts.families import ChartFamily

SECTION = "## Desktop chart panning"
INTRO = """\
How smoothly the desktop app's history charts (`desktop/charts/`, pyqtgraph) pan over 30 days of
1-minute points, as produced by `benchmarks/chart_pan.py`: each frame moves the x range with
`setXRange`, repaints synchronously (`repaint()`) and drains the event queue.

- The chart is a bytes/s family, whose y axis auto-ranges to the visible data (the costlier kind;
  percentage charts have a fixed 0-100 %), with 4 series of 43,200 float64 points, peak
  downsampling, clip-to-view and 1 px pens (2 px pens cut the full-view rate by more than half).
- "+ min-max band" adds the rollup min-max envelope of every series. The app never asks for
  30 days of 1-minute rollups (30 d uses 1-hour ones, 720 points; the largest 1-minute request is
  7 d, 10,080 points), so these rows are a worst case.
- On this 2-core VM runs varied by about +-25 %; with the core's 5,000-agent load benchmark
  running alongside, the band rows fell to 24-30 fps and the others to 34-47 fps.
- Xvfb: `apt-get install xvfb libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1` (Qt's xcb plugin
  needs the last three)."""
DAY = 86400.0
TARGET_FPS = 30.0


@dataclass
class Result:
    scenario: str
    points: int
    frames: int
    seconds: float
    frame_ms: list[float]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.frame_ms, q))


def build_chart(
    days: int, step: float, width: int, height: int, band: bool
) -> tuple[HistoryChart, float, float]:
    """A shown chart holding `days` of points every `step` seconds for 4 series, auto-ranged in y."""
    family = ChartFamily(
        "bench",
        "Benchmark: 4 series",
        ("net_rx_bps", "net_tx_bps", "disk_read_bps", "disk_write_bps"),
        ("rx", "tx", "read", "write"),
        Unit.BYTES_PER_S,  # auto-ranged y (percent charts have a fixed 0-100 and would be cheaper)
    )
    end = 1_750_000_000.0
    start = end - days * DAY
    ts = np.arange(start, end, step, dtype=np.float64)
    rng = np.random.default_rng(7)
    # Random walks with a daily cycle: realistic peak structure for the peak downsampler.
    day = 2 * np.pi * (ts - start) / DAY
    avg: dict[str, np.ndarray] = {}
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}
    for i, f in enumerate(family.fields):
        walk = np.cumsum(rng.normal(0, 1.0, ts.shape[0]))
        v = np.abs((5 + i) * 2**20 * (1 + 0.5 * np.sin(day + i)) + 2**16 * walk)
        avg[f] = v
        spread = np.abs(rng.normal(0, 2**19, ts.shape[0]))
        lo[f], hi[f] = np.maximum(v - spread, 0), v + spread
    chart = HistoryChart(family, dark=True)
    chart.resize(width, height)
    chart.show()
    chart.set_history(ts, avg, lo if band else None, hi if band else None)
    for _ in range(5):
        QApplication.processEvents()
    return chart, start, end


def pan(chart: HistoryChart, scenario: str, start: float, end: float, window: float, frames: int) -> Result:
    """Pan a `window`-wide view there and back across the data (a full-range view moves by half itself)."""
    travel = end - start - window if end - start > window else window / 2
    chart.set_x_range(start, start + window)
    chart.repaint()
    QApplication.processEvents()
    times: list[float] = []
    t0 = time.perf_counter()
    for k in range(1, frames + 1):
        f0 = time.perf_counter()
        phase = 2.0 * k / frames  # triangle wave: 0 -> 1 -> 0 over the run
        x = start + travel * (phase if phase <= 1.0 else 2.0 - phase)
        chart.vb.setXRange(x, x + window, padding=0.0)
        chart.repaint()
        QApplication.processEvents()
        times.append((time.perf_counter() - f0) * 1000)
    seconds = time.perf_counter() - t0
    points = int(chart.data()[0].shape[0])
    return Result(scenario, points, frames, seconds, times)


def machine() -> dict[str, str]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    app = QApplication.instance()
    qpa = app.platformName() if isinstance(app, QApplication) else "?"
    return {
        # Other work on the machine shows up directly in frame times; the 1-minute load says how much.
        "load": f"{os.getloadavg()[0]:.2f}",
        "cpu": f"{model}, {os.cpu_count()} cores",
        "os": f"{platform.system()} {platform.release()}",
        "versions": (
            f"Python {platform.python_version()}, PySide6 {PySide6.__version__}, "
            f"pyqtgraph {pg.__version__}, numpy {np.__version__}"
        ),
        "qpa": qpa
        + (" (Xvfb)" if qpa == "xcb" and "xvfb" in os.environ.get("XAUTHORITY", "").lower() else ""),
    }


def markdown(results: list[Result], info: dict[str, str], size: tuple[int, int], command: str) -> str:
    lines = [
        f"Qt platform **{info['qpa']}**, chart {size[0]}x{size[1]} px, target > {TARGET_FPS:.0f} fps.",
        "",
        "| scenario | points x series | frames | fps | frame p50 ms | frame p95 ms | target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        ok = "met" if r.fps > TARGET_FPS else "**missed**"
        lines.append(
            f"| {r.scenario} | {r.points:,} x 4 | {r.frames} | {r.fps:.0f} | {r.pct(50):.1f} | {r.pct(95):.1f} | {ok} |"
        )
    lines += [
        "",
        f"Machine: {info['cpu']}; {info['os']}; {info['versions']}; 1-min load average {info['load']} at the end (this run included).",
        f"Reproduce: `{command}`",
    ]
    return "\n".join(lines)


def write_doc(path: Path, qpa: str, block: str) -> None:
    """Put `block` in this platform's slot of the chart panning section, creating what is missing."""
    begin, end = f"<!-- chart-pan:{qpa} begin -->", f"<!-- chart-pan:{qpa} end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    slot = f"{begin}\n{block}\n{end}"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: slot, text, flags=re.S)
    elif SECTION in text:
        # Append the slot at the end of our section (before the next "## " heading, if any).
        head, _, rest = text.partition(SECTION)
        nxt = re.search(r"^## ", rest, flags=re.M)
        cut = nxt.start() if nxt else len(rest)
        body = rest[:cut].rstrip("\n")
        text = f"{head}{SECTION}{body}\n\n{slot}\n" + (f"\n{rest[cut:]}" if nxt else "")
    else:
        text = f"{text.rstrip()}\n\n{SECTION}\n\n{INTRO}\n\n{slot}\n"
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--step", type=float, default=60.0, help="seconds between points (60 = 1-minute rollups)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=400)
    ap.add_argument("--band", action="store_true", help="only the runs with a min-max band (worst case)")
    ap.add_argument("--doc", type=Path, help="record the result in this Markdown file")
    args = ap.parse_args()

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    results: list[Result] = []
    for band in [True] if args.band else [False, True]:
        chart, start, end = build_chart(args.days, args.step, args.width, args.height, band)
        suffix = " + min-max band" if band else ""
        results.append(pan(chart, f"full {args.days} d view{suffix}", start, end, end - start, args.frames))
        results.append(pan(chart, f"1 d view{suffix}", start, end, DAY, args.frames))
        chart.close()
        chart.deleteLater()
        QApplication.processEvents()

    info = machine()
    runner = "xvfb-run -a " if info["qpa"].startswith("xcb") else ""
    command = f"{runner}.venv/bin/python -m benchmarks.chart_pan"
    block = markdown(results, info, (args.width, args.height), command)
    print(block)
    if args.doc:
        write_doc(args.doc, info["qpa"].split()[0], block)
        print(f"\nwritten to {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
