"""Alert rule evaluation per sample by kind of metric: scalars (the baseline) against named series
(`series:`), devices (`dev:`), containers (`container:`) and GPUs (`gpu:`).

A real core in-process (devkit) and its AlertEngine; one node; `--rules` rules of one kind apply to
it, each on a different selector, with thresholds never reached: the steady state, where a rule x
sample costs one read and one comparison. Each sample goes to `AlertEngine.on_sample` as the agent
gateway hands it; the figure is the time per sample and rule, the best of `--rounds` rounds, and
its ratio to the scalar rules measured in the same run. The samples carry a busy host's lists: 4
mounts, 3 interfaces, 6 sensors, 10 containers, 2 GPUs and 20 named series (built before timing).

Reproduce: .venv/bin/python -m benchmarks.rule_eval --rules 10 --samples 20000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from pathlib import Path

from devkit.cores import RunningCore
from servermanager.common import rest as m
from servermanager.common.metrics import (
    SCALAR_FIELDS,
    ContainerInfo,
    DiskUsage,
    GpuInfo,
    Hardware,
    Metrics,
    NetIface,
    Sample,
    Temperature,
)
from servermanager.common.series import SeriesPoint
from servermanager.core.alerts.engine import AlertEngine
from servermanager.core.alerts.rules import normalize
from servermanager.core.nodes import NodeState

MOUNTS = [f"/m{i}" for i in range(4)]


def reading(i: int) -> Metrics:
    v = float(i % 50)
    return Metrics(
        cpu_pct=v,
        cpu_per_core=[v] * 8,
        load1=1.0,
        load5=1.0,
        load15=1.0,
        mem_total=16 << 30,
        mem_used=4 << 30,
        mem_pct=25.0,
        swap_total=0,
        swap_used=0,
        swap_pct=0.0,
        uptime=1000.0,
        procs=300,
        disks=[DiskUsage(mount=mt, fstype="ext4", total=1000, used=400, pct=40.0) for mt in MOUNTS],
        disk_read_bps=1.0,
        disk_write_bps=1.0,
        disk_read_iops=1.0,
        disk_write_iops=1.0,
        nets=[NetIface(name=f"eth{k}", rx_total=1, tx_total=1, rx_bps=v, tx_bps=v) for k in range(3)],
        net_rx_bps=v,
        net_tx_bps=v,
        temps=[Temperature("coretemp", f"Core {k}", 50.0 + k) for k in range(6)],
        containers=[
            ContainerInfo(name=f"c{k}", state="running", cpu_pct=v, mem_used=1 << 20, mem_limit=1 << 30)
            for k in range(10)
        ],
        hardware=Hardware(gpus=[GpuInfo(index=k, name="T4", util_pct=v, temp=60.0) for k in range(2)]),
        series=[SeriesPoint(f"s{k}", v, {"job": "bench"}) for k in range(20)],
    )


def selectors(kind: str, n: int) -> list[str]:
    """`n` different metrics of one kind, each a rule."""
    if kind == "scalar":
        pool = [f for f in SCALAR_FIELDS]
    elif kind == "series":
        pool = [f'series:s{k}{{job="bench"}}' for k in range(20)]
    elif kind == "dev":
        pool = [f'dev:{name}{{mount="{mt}"}}' for name in ("disk_pct", "disk_used_bytes") for mt in MOUNTS]
        pool += [f'dev:net_rx_bps{{iface="eth{k}"}}' for k in range(3)] + ["dev:temp_celsius", "dev:disk_pct"]
    elif kind == "container":
        pool = [f'container:{name}{{name="c{k}"}}' for k in range(10) for name in ("cpu_pct", "mem_pct")]
    else:
        pool = [
            f'gpu:{name}{{index="{k}"}}'
            for k in range(2)
            for name in ("util_pct", "temp_celsius", "mem_used")
        ]
        pool += ["gpu:util_pct", "gpu:temp_celsius"]
    return list(itertools.islice(itertools.cycle(pool), n))


def load_rules(engine: AlertEngine, kind: str, n: int, node: int) -> None:
    for rid in list(engine.rules):
        engine.rule_changed(None, rid)
    for i, metric in enumerate(selectors(kind, n)):
        body = m.RuleCreate(
            name=f"{kind}-{i}",
            metric=metric,
            # A distinct op or threshold per rule keeps repeated selectors (a small pool) separate rules.
            op=">" if i % 2 == 0 else "<",
            threshold=1e15 if i % 2 == 0 else -1e15,
            targets=m.Targets(nodes=[node]),
        )
        spec = normalize(body, rule_id=i + 1, created_at=0.0, created_by="bench", channels=[], nodes=[node])
        engine.rule_changed(spec, spec.id)


def per_rule_ns(engine: AlertEngine, st: NodeState, samples: list[Sample], rules: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for s in samples:
            engine.on_sample(st, s)
        best = min(best, time.perf_counter() - t0)
    assert not engine.open, "a benchmark rule fired: its threshold is reachable"
    return best / len(samples) / rules * 1e9


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        core = await RunningCore(Path(tmp)).start()
        try:
            engine = core.core.alerts
            st = NodeState(id=1, name="bench", group="", tags=[], created_at=0.0, last_seen=None, host=None)
            samples = [
                Sample(seq=i + 1, ts=1_800_000_000.0 + i, metrics=reading(i)) for i in range(args.samples)
            ]
            figures: dict[str, float] = {}
            for kind in ("scalar", "series", "dev", "container", "gpu"):
                load_rules(engine, kind, args.rules, st.id)
                figures[kind] = per_rule_ns(engine, st, samples, args.rules, args.rounds)
            base = figures["scalar"]
            print(
                f"{args.rules} rules of one kind on one node, {args.samples} samples, best of {args.rounds}"
            )
            print("| rules on | ns per rule and sample | vs scalar |")
            print("|---|---|---|")
            for kind, ns in figures.items():
                print(f"| {kind} | {ns:.0f} | {ns / base:.2f}x |")
        finally:
            await core.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
