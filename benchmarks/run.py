"""Reproduce every benchmark figure of Server Manager with one command.

    .venv/bin/python -m benchmarks.run                       # everything, about 8-10 minutes
    .venv/bin/python -m benchmarks.run --parts agent         # one part: agent, load, storage, history
    .venv/bin/python -m benchmarks.run --parts load --counts 1000,2500

Parts (each starts its own real core as a subprocess on a throwaway data dir, 127.0.0.1 only):

- agent:   the real `servermanager agent` for ~60 s next to `prometheus-node-exporter` scraped at
           1 Hz, both measured the same way with psutil (RSS, and CPU as a cpu_times delta over
           wall time); figures are reported as ratios against node_exporter.
- load:    1,000 and 5,000 simulated agents at 1 Hz (benchmarks.fleet, in processes of their own),
           the core's CPU and RSS over a window after warm-up, the simulator's achieved send rate,
           and push latency (receipt time minus sample.ts) seen by a client subscribed to all nodes.
- storage: SQLite bytes per stored raw sample (dbstat page counts of samples_raw / rows), taken
           from the database of the last load run (or of a short run of its own).
- history: 30 days x 1440 one-minute rollup rows written straight into a core database, then the
           time to answer GET /api/v1/nodes/{id}/metrics?resolution=1m over ~20 repetitions.
- alerts:  the cost of evaluating 10 rules per node on 5,000 simulated agents (windows alternating
           between no rules and the rule set, in one core), and the time from the sample that
           completes a rule's `for` to a webhook receiver's receipt, idle and under 1,000 and
           5,000 agents (benchmarks.parts.alerts).

Results go to benchmarks/results/latest.json and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.fleet import raise_nofile_limit
from benchmarks.harness import RESULTS, log, machine_info, wait_quiet
from benchmarks.parts.agent import bench_agent
from benchmarks.parts.alerts import AlertOptions, bench_alert_cost, bench_alert_latency
from benchmarks.parts.history import bench_history
from benchmarks.parts.load import LoadOptions, add_profile_argument, bench_load
from benchmarks.parts.storage import storage_stats

# ---------------------------------------------------------------- report


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_total_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, SQLite {m['sqlite']}",
        "",
    ]
    a = results.get("agent_overhead")
    if a:
        lines += ["### Agent overhead (same run, same measurement)", ""]
        if "agent" in a:
            ag, ne, r = a["agent"], a["node_exporter"], a["ratios"]
            lines += [
                "| | servermanager agent | prometheus-node-exporter | agent / node_exporter | target |",
                "|---|---|---|---|---|",
                f"| CPU (% of one core) | {ag['cpu_pct']} | {ne['cpu_pct']} | "
                f"{r['cpu_agent_over_node_exporter']} | ≤ 0.5 x node_exporter: "
                f"{_ok(a['targets']['agent_cpu_le_half_node_exporter'])} |",
                f"| RSS mean / max (MB) | {ag['rss_mb_mean']} / {ag['rss_mb_max']} | "
                f"{ne['rss_mb_mean']} / {ne['rss_mb_max']} | {r['rss_agent_over_node_exporter']} | "
                f"≤ 32 MB: {_ok(a['targets']['agent_rss_le_32mb'])} |",
                f"| USS mean (MB) | {ag.get('uss_mb_mean')} | {ne.get('uss_mb_mean')} | | |",
                f"| CPU ms per sample / per scrape | {ag.get('cpu_ms_per_sample')} | "
                f"{ne.get('cpu_ms_per_scrape')} | | |",
                "",
            ]
        if a.get("error"):
            lines += [f"Error: {a['error']}", ""]
    loads = results.get("core_load") or []
    if loads:
        lines += [
            "### Core under simulated agents (1 sample/s each; simulator shares the 2 cores)",
            "",
            "| agents | sim procs | achieved send rate (/s) | core CPU % (loop thread) | core RSS max (MB) | "
            "push p50 / p99 (ms) | ack p99 (ms) | machine busy % (others, % of a core) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for ld in loads:
            if "error" in ld:
                lines.append(f"| {ld['agents']} | | error: {ld['error']} | | | | | |")
                continue
            s, c, pu = ld["simulator"], ld["core"], ld["push"]["latency_ms"]
            lines.append(
                f"| {ld['agents']} | {ld['simulator_processes']} | {s['achieved_send_rate']} of "
                f"{ld['target_rate']} | {c['cpu_pct']} ({c.get('main_thread_cpu_pct')}) | {c['rss_mb_max']} | "
                f"{pu['p50']} / {pu['p99']} | "
                f"{s['ack_latency_ms']['p99']} | {ld['machine_cpu']['busy_pct_of_all_cores']} "
                f"({ld['machine_cpu'].get('others_pct_of_one_core')}) |"
            )
        lines.append("")
    st = results.get("storage")
    if st and "rows" in st:
        lines += [
            "### SQLite bytes per raw sample",
            "",
            "| rows | nodes | bytes/row (samples_raw pages) | payload bytes/row | page fill | whole file bytes/row |",
            "|---|---|---|---|---|---|",
            f"| {st['rows']} | {st['nodes']} | {st['bytes_per_row_pages']} | {st['bytes_per_row_payload']} | "
            f"{st['page_fill_pct']} % | {st['bytes_per_row_whole_file']} |",
            "",
        ]
    h = results.get("history")
    if h and "queries" in h:
        lines += [
            f"### {h['days']}-day history query ({h['rows_1m']} one-minute rollups)",
            "",
            "| query | resolution | points | response bytes | p50 / p95 (ms) | first (ms) | "
            "cache off: p50 / p95 (ms) | SQL rows only p50 (ms) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, q in h["queries"].items():
            sql = h["sql_only"].get(name, {}).get("p50", "")
            off = h.get("queries_no_cache", {}).get(name, {})
            lines.append(
                f"| {name} | {q['resolution']} | {q['points']} | {q['response_bytes']} | {q['p50']} / "
                f"{q['p95']} | {q['first_ms']} | {off.get('p50')} / {off.get('p95')} | {sql} |"
            )
        t = h["targets"]
        lines += [
            "",
            f"Target p50 < 100 ms, one field at 1m: {_ok(t['p50_lt_100ms_one_field'])} "
            f"(cache off: {_ok(t['p50_lt_100ms_one_field_no_cache'])}); "
            f"all 16 fields at 1m: {_ok(t['p50_lt_100ms_all_fields'])}",
            "",
        ]
    lines += _alerts_markdown(results.get("alerts"))
    return "\n".join(lines)


def _alerts_markdown(al: dict[str, Any] | None) -> list[str]:
    if not al:
        return []
    lines: list[str] = []
    cost = al.get("cost")
    if cost and "summary" in cost:
        s = cost["summary"]
        lines += [
            f"### Alerting: cost of {cost['rules_per_node']} rules per node, {cost['agents']} agents at 1 Hz "
            f"({cost['rules']} rules, {'notifying a webhook' if cost.get('notify', True) else 'no channel'})",
            "",
            "| window | started | rules | core CPU % (loop thread) | core RSS max (MB) | alert changes /s | "
            "webhook POSTs | push p99 (ms) | machine busy % (others) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for i, w in enumerate(cost["windows"]):
            c, mc = w["core"], w["machine_cpu"]
            lines.append(
                f"| {i + 1} | {w['started']} | {w['kind']} | {c['cpu_pct']} ({c.get('main_thread_cpu_pct')}) | "
                f"{c['rss_mb_max']} | {w['alert_changes_per_s']} | {w['webhook_posts']} | "
                f"{w['push_latency_ms']['p99']} | {mc['busy_pct_of_all_cores']} ({mc['others_pct_of_one_core']}) |"
            )
        lines += [
            "",
            f"Extra CPU with rules (each rules window against the no-rules windows around it): "
            f"{s['extra_cpu_pct_of_a_core']} % of a core, median {s['extra_cpu_pct_median']}; ratio "
            f"{s['ratio_rules_over_no_rules']} (median {s['ratio_median']}). Target ≤ 10 % of a core more: "
            f"{_ok(s['target_extra_le_10pct_of_a_core'])}",
            "",
        ]
    elif cost:
        lines += [f"Alerting cost: error: {cost.get('error')}", ""]
    lat = al.get("latency") or []
    if lat:
        lines += [
            "### Alerting: sample completing `for` -> webhook receipt (alert_group_wait = 0)",
            "",
            "| background agents | measured | p50 / p95 / p99 / max (ms) | alert event at a client p50 / p99 (ms) | "
            "background ack p50 / p99 (ms) | machine busy % | p99 < 1 s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in lat:
            if "error" in r:
                lines.append(f"| {r['background_agents']} | error: {r['error']} | | | | | |")
                continue
            q, e = r["latency_ms"], r["alert_event_ms"]
            ok = r["missing"] == 0 and q["p99"] is not None and q["p99"] < 1000
            ack = (r.get("background") or {}).get("ack_latency_ms") or {}
            lines.append(
                f"| {r['background_agents']} | {r['measured']} of {r['expected']} | {q['p50']} / {q['p95']} / "
                f"{q['p99']} / {q['max']} | {e['p50']} / {e['p99']} | {ack.get('p50', '-')} / {ack.get('p99', '-')} | "
                f"{r['machine_cpu']['busy_pct_of_all_cores']} | {_ok(ok)} |"
            )
        lines.append("")
    return lines


def _ok(flag: bool) -> str:
    return "met" if flag else "MISSED"


# ---------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = set(args.parts.split(","))
    unknown = parts - {"agent", "load", "storage", "history", "alerts"}
    if unknown:
        raise SystemExit(f"unknown part(s): {', '.join(sorted(unknown))}")
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    load_opts = LoadOptions(
        interval=args.interval,
        per_process=args.per_process,
        warmup=args.load_warmup,
        duration=args.load_duration,
        start_timeout=args.start_timeout,
        connect_timeout=args.connect_timeout,
        ping_interval=args.ping_interval,
        profile=args.profile,
        procs_top=args.procs_top,
    )
    alert_opts = AlertOptions(
        agents=args.alert_agents,
        rounds=args.alert_rounds,
        window=args.alert_window,
        settle=args.alert_settle,
        notify=not args.alert_no_notify,
        latency_loads=tuple(int(c) for c in args.latency_loads.split(",") if c.strip()),
        probes=args.latency_probes,
        for_=args.latency_for,
    )
    base = Path(tempfile.mkdtemp(prefix="sm-bench-", dir=args.workdir))
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *sys.argv[1:]]),
        "machine": machine_info(),
    }
    try:
        if "agent" in parts:
            log("part a: agent overhead vs prometheus-node-exporter")
            try:
                quiet = await wait_quiet(args.quiet_pct, args.quiet_wait)
                results["agent_overhead"] = await bench_agent(
                    _sub(base, "agent"),
                    duration=args.agent_duration,
                    warmup=args.agent_warmup,
                    source=args.agent_from,
                )
                results["agent_overhead"]["before"] = quiet
            except Exception as exc:
                results["agent_overhead"] = {"error": repr(exc)}
        last_db: Path | None = None
        if "load" in parts:
            results["core_load"] = []
            for n in counts:
                log(f"part b: core load with {n} simulated agents")
                try:
                    quiet = await wait_quiet(args.quiet_pct, args.quiet_wait)
                    res = await bench_load(load_opts, n, _sub(base, f"load-{n}"))
                    res["before"] = quiet
                    last_db = Path(res.pop("db_path"))
                    if "storage" in parts:
                        res["storage"] = storage_stats(last_db)
                except Exception as exc:
                    res = {"agents": n, "error": repr(exc)}
                results["core_load"].append(res)
        if "storage" in parts:
            log("part c: bytes per raw sample")
            if last_db is None:
                small = dataclasses.replace(load_opts, warmup=0.0, duration=30.0)
                res = await bench_load(small, args.storage_agents, _sub(base, "storage"))
                last_db = Path(res["db_path"])
            results["storage"] = storage_stats(last_db)
        if "history" in parts:
            log(f"part d: {args.history_days}-day history query")
            try:
                quiet = await wait_quiet(args.quiet_pct, args.quiet_wait)
                results["history"] = await bench_history(
                    _sub(base, "history"), days=args.history_days, reps=args.history_reps
                )
                results["history"]["before"] = quiet
            except Exception as exc:
                results["history"] = {"error": repr(exc)}
        if "alerts" in parts:
            results["alerts"] = await _alerts(args, load_opts, alert_opts, base)
    finally:
        if args.keep_data:
            log(f"data kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return results


async def _alerts(
    args: argparse.Namespace, load_opts: LoadOptions, opts: AlertOptions, base: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if opts.rounds > 0:
        log(f"part e: alerting cost, {opts.agents} agents, rules off/on x {opts.rounds}")
        try:
            quiet = await wait_quiet(args.quiet_pct, args.quiet_wait)
            out["cost"] = await bench_alert_cost(load_opts, opts, _sub(base, "alert-cost"))
            out["cost"]["before"] = quiet
        except Exception as exc:
            out["cost"] = {"agents": opts.agents, "error": repr(exc)}
    out["latency"] = []
    for n in opts.latency_loads:
        log(f"part e: alert latency with {n} background agents")
        try:
            quiet = await wait_quiet(args.quiet_pct, args.quiet_wait)
            res = await bench_alert_latency(load_opts, opts, n, _sub(base, f"alert-latency-{n}"))
            res["before"] = quiet
        except Exception as exc:
            res = {"background_agents": n, "error": repr(exc)}
        out["latency"].append(res)
    return out


async def _main_cancellable(args: argparse.Namespace) -> dict[str, Any]:
    """SIGTERM and SIGINT cancel the run, so every child is stopped and the data dirs removed."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await run(args)


def _sub(base: Path, name: str) -> Path:
    d = base / name
    d.mkdir(mode=0o700)
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--parts",
        default="agent,load,storage,history,alerts",
        help="comma list of agent,load,storage,history,alerts",
    )
    ap.add_argument("--counts", default="1000,5000", help="simulated agent counts for the load part")
    ap.add_argument("--interval", type=float, default=1.0, help="simulated agents' sample interval (s)")
    ap.add_argument(
        "--procs-top", type=int, default=0, help="processes in every simulated sample's top list (0: none)"
    )
    ap.add_argument("--per-process", type=int, default=2500, help="simulated agents per simulator process")
    ap.add_argument(
        "--load-warmup", type=float, default=15.0, help="seconds after enrollment before measuring"
    )
    ap.add_argument(
        "--load-duration", type=float, default=45.0, help="seconds of the core measurement window"
    )
    ap.add_argument("--start-timeout", type=float, default=180.0, help="seconds allowed to enroll a fleet")
    ap.add_argument(
        "--ping-interval",
        type=float,
        default=0.0,
        help="simulated agents' extra ping period (default 0: none, as a streaming agent sends none)",
    )
    ap.add_argument("--connect-timeout", type=float, default=10.0, help="simulated agents' handshake timeout")
    ap.add_argument("--storage-agents", type=int, default=1000, help="agents of the storage part's own run")
    ap.add_argument("--agent-duration", type=float, default=60.0, help="seconds of the agent measurement")
    ap.add_argument(
        "--agent-from",
        choices=("venv", "tree"),
        default="venv",
        help="venv: pip-install the agent into a fresh venv, as on a server (default); tree: run this checkout",
    )
    ap.add_argument("--agent-warmup", type=float, default=10.0, help="seconds after the agent's first sample")
    ap.add_argument("--history-days", type=int, default=30)
    ap.add_argument("--history-reps", type=int, default=20)
    ap.add_argument(
        "--alert-agents", type=int, default=5000, help="simulated agents of the alerting cost run"
    )
    ap.add_argument(
        "--alert-rounds",
        type=int,
        default=4,
        help="rules windows of the cost run, each between two no-rules windows (0: skip the cost run)",
    )
    ap.add_argument("--alert-window", type=float, default=40.0, help="seconds measured per cost window")
    ap.add_argument(
        "--alert-settle", type=float, default=15.0, help="seconds after switching rules before a cost window"
    )
    ap.add_argument(
        "--alert-no-notify",
        action="store_true",
        help="the cost run's rules have no channel: evaluated and kept, nothing sent",
    )
    ap.add_argument(
        "--latency-loads",
        default="0,1000,5000",
        help="background agents of each alert latency run (0: idle; empty: none)",
    )
    ap.add_argument(
        "--latency-probes", type=int, default=120, help="probe agents per latency run (2 firings each)"
    )
    ap.add_argument("--latency-for", type=float, default=2.0, help="the probe rule's `for` (s)")
    ap.add_argument("--quiet-pct", type=float, default=10.0, help="machine busy %% to wait for before a part")
    ap.add_argument("--quiet-wait", type=float, default=60.0, help="longest wait for a quiet machine (s)")
    add_profile_argument(ap)
    ap.add_argument(
        "--workdir", default=None, help="parent of the throwaway data dirs (default: system temp)"
    )
    ap.add_argument("--keep-data", action="store_true", help="keep data dirs and logs")
    ap.add_argument("--out", default=str(RESULTS / "latest.json"), help="where the JSON results go")
    args = ap.parse_args(argv)
    for name in ("load_duration", "agent_duration", "alert_window"):
        if not 1 <= getattr(args, name) <= 3600:
            ap.error(f"--{name.replace('_', '-')} must be between 1 and 3600 seconds")
    raise_nofile_limit()
    try:
        results = asyncio.run(_main_cancellable(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        log("interrupted: children stopped, nothing written")
        return 130
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    log(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
