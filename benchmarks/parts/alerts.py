"""Benchmark part e: alerting (issue 11), on a real core under simulated agents.

- cost: N simulated agents at 1 Hz (benchmarks.fleet processes, as in the load part) whose nodes
  are put in groups and tagged, then measurement windows that alternate between no rules at all
  and a rule set under which every node has 10 applicable rules (targeting all nodes, its group or
  its tag; scalar metrics; thresholds at which alerts go pending, firing, resolving and dropping
  all the time, with a webhook channel). The rules are created with POST /api/v1/alert-rules and
  deleted with DELETE before each no-rules window. The core's CPU (user + system, all threads)
  and RSS are measured over each window; the cost is each rules window against the mean of the
  no-rules windows on either side of it.
- latency: a core with alert_group_wait = 0, optionally under a background fleet, a webhook
  receiver (aiohttp on 127.0.0.1, in this process) and probe agents (in this process) whose
  cpu_pct crosses a rule's threshold at a known sample; the figure is the time from the sending
  of the sample that completes the rule's `for` to the receiver's receipt of the firing POST.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from benchmarks.fleet import Fleet, SimAgent
from benchmarks.harness import (
    CoreProc,
    ProcWatch,
    PushClient,
    SystemCpu,
    log,
    pcts_ms,
    sample_every_second,
)
from benchmarks.parts.load import (
    FleetProc,
    LoadOptions,
    core_log_counts,
    fleet_sizes,
    merge_pcts,
    start_fleets,
)
from devkit.ports import free_port
from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from servermanager.common.alerts import WebhookBody

GROUPS = 10  # nodes are spread over group-0..group-9
TAGS = 5  # and tagged tier-0..tier-4


@dataclass(frozen=True)
class RuleTemplate:
    name: str
    metric: str
    threshold: float
    for_: str
    clear: float | None = None
    critical: float | None = None


# Every node gets 4 rules for all + 3 for its group + 3 for its tag = 10. Thresholds are set
# against the simulator's readings (benchmarks.fleet: a random walk per host, 30 readings replayed)
# so that on 5,000 agents about 1,000 alerts are open at a time and some 100 alert changes happen
# each second (pending, firing, resolved, dropped): a fleet with far more going on than a healthy
# one, so the figure is an upper bound for this many rules.
FOR_ALL = (
    RuleTemplate("cpu high", "cpu_pct", 85.0, "5s", clear=80.0, critical=95.0),
    RuleTemplate("memory high", "mem_pct", 80.0, "10s"),
    RuleTemplate("disk almost full", "disk_pct", 85.0, "30s", critical=88.0),
    RuleTemplate("load high", "load1", 6.0, "10s", clear=5.0),
)
FOR_GROUP = (
    RuleTemplate("swap in use", "swap_pct", 9.5, "5s"),
    RuleTemplate("many processes", "procs", 395.0, "10s"),
    RuleTemplate("network in busy", "net_rx_bps", 2_000_000.0, "3s"),
)
FOR_TAG = (
    RuleTemplate("disk writes busy", "disk_write_bps", 6_000_000.0, "2s"),
    RuleTemplate("disk read iops", "disk_read_iops", 140.0, "3s"),
    RuleTemplate("disk write iops", "disk_write_iops", 420.0, "5s"),
)


def rule_bodies(channel_id: int | None) -> list[dict[str, Any]]:
    """The cost run's rule set as POST /api/v1/alert-rules bodies (49 rules, 10 per node); with
    `channel_id` None the rules notify nothing (alerts are evaluated and kept, nothing is sent)."""
    out: list[dict[str, Any]] = []

    def body(t: RuleTemplate, name: str, targets: dict[str, Any]) -> dict[str, Any]:
        b: dict[str, Any] = {
            "name": name,
            "metric": t.metric,
            "op": ">",
            "threshold": t.threshold,
            "for": t.for_,
            "targets": targets,
            "channels": [] if channel_id is None else [channel_id],
        }
        if t.clear is not None:
            b["clear_threshold"] = t.clear
        if t.critical is not None:
            b["critical_threshold"] = t.critical
        return b

    out += [body(t, t.name, {"all": True}) for t in FOR_ALL]
    out += [body(t, f"{t.name} group-{g}", {"group": f"group-{g}"}) for g in range(GROUPS) for t in FOR_GROUP]
    out += [body(t, f"{t.name} tier-{g}", {"tag": f"tier-{g}"}) for g in range(TAGS) for t in FOR_TAG]
    return out


@dataclass(frozen=True)
class AlertOptions:
    """benchmarks.run fills it from its --alert-* flags."""

    agents: int  # simulated agents of the cost run
    rounds: int  # rules windows; each is bracketed by no-rules windows
    window: float  # seconds measured per window
    settle: float  # seconds after switching the rules on or off before a window
    notify: bool  # the cost run's rules notify a webhook channel (False: no channel, nothing sent)
    latency_loads: tuple[int, ...]  # background fleets of the latency runs (0: idle)
    probes: int  # probe agents per latency run; each fires twice
    for_: float  # the probe rule's `for`, seconds


# ---------------------------------------------------------------- a webhook receiver


class WebhookReceiver:
    """aiohttp on 127.0.0.1: answers 200 to every POST and keeps (receipt time, body)."""

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        t = time.time()  # headers parsed; the body (a few hundred bytes) is read next
        self.received.append((t, await request.read()))
        return web.Response(text="ok")

    async def __aenter__(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def bodies(self, since: float = 0.0, until: float = float("inf")) -> list[tuple[float, WebhookBody]]:
        dec = msgspec.json.Decoder(WebhookBody)
        return [(t, dec.decode(b)) for t, b in self.received if since <= t < until]


async def _channel(core: CoreProc, url: str) -> int:
    body = await core.request(
        "POST", "/api/v1/channels", json={"name": "bench-webhook", "kind": "webhook", "url": url}
    )
    return int(body["id"])


# ---------------------------------------------------------------- cost of evaluation


async def _label_nodes(core: CoreProc, concurrency: int = 64) -> int:
    """group-(i % 10) and tier-(i % 5) on every node, through PATCH /api/v1/nodes/{id}."""
    nodes = (await core.request("GET", "/api/v1/nodes"))["nodes"]
    ids = sorted(n["id"] for n in nodes)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, nid: int) -> None:
        async with sem:
            await core.request(
                "PATCH",
                f"/api/v1/nodes/{nid}",
                json={"group": f"group-{i % GROUPS}", "tags": [f"tier-{i % TAGS}"]},
            )

    await asyncio.gather(*(one(i, nid) for i, nid in enumerate(ids)))
    return len(ids)


async def _rules_on(core: CoreProc, channel_id: int | None) -> int:
    for b in rule_bodies(channel_id):
        await core.request("POST", "/api/v1/alert-rules", json=b)
    return len(rule_bodies(channel_id))


async def _rules_off(core: CoreProc) -> int:
    rules = (await core.request("GET", "/api/v1/alert-rules"))["rules"]
    for r in rules:
        await core.request("DELETE", f"/api/v1/alert-rules/{r['id']}")
    return len(rules)


async def _open_alerts(core: CoreProc) -> dict[str, int]:
    out = {}
    for state in ("pending", "firing"):
        body = await core.request("GET", f"/api/v1/alerts?state={state}&limit=5000")
        out[state] = len(body["alerts"])
    return out


async def bench_alert_cost(load: LoadOptions, opts: AlertOptions, workdir: Path) -> dict[str, Any]:
    count = opts.agents
    sizes = fleet_sizes(count, load.per_process)
    kinds = ["off"] + ["on", "off"] * opts.rounds
    # The simulators run for the whole part: enrollment, labelling, then every window.
    run_for = load.warmup + len(kinds) * (opts.settle + opts.window + 30)
    fleet_opts = dataclasses.replace(load, duration=run_for)
    out: dict[str, Any] = {
        "agents": count,
        "simulator_processes": len(sizes),
        "rules": len(rule_bodies(0)),
        "rules_per_node": len(FOR_ALL) + len(FOR_GROUP) + len(FOR_TAG),
        "notify": opts.notify,
        "settle_s": opts.settle,
        "window_s": opts.window,
        "order": kinds,
    }
    async with contextlib.AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        core = await stack.enter_async_context(CoreProc(workdir))
        assert core.proc is not None and core.token is not None
        channel_id = await _channel(core, receiver.url)
        token = await core.enroll_token(count + max(100, count // 2))
        client = PushClient(core.url, core.token)
        await client.start()
        stack.push_async_callback(client.stop)
        t = time.monotonic()
        fleets, ready = await start_fleets(stack, core.url, token, sizes, fleet_opts, workdir)
        out["enroll_seconds"] = round(time.monotonic() - t, 1)
        out["enrolled"] = sum(r["nodes"] for r in ready)
        t = time.monotonic()
        out["labelled_nodes"] = await _label_nodes(core)
        out["label_seconds"] = round(time.monotonic() - t, 1)
        log(f"alert cost: {out['enrolled']} agents enrolled, nodes labelled in {out['label_seconds']}s; "
            f"warming up {load.warmup:g}s")  # fmt: skip
        await asyncio.sleep(load.warmup)

        windows = []
        for i, kind in enumerate(kinds):
            t = time.monotonic()
            switched = (
                await _rules_on(core, channel_id if opts.notify else None)
                if kind == "on"
                else await _rules_off(core)
            )
            switch_s = round(time.monotonic() - t, 2)
            log(f"alert cost: window {i + 1}/{len(kinds)}, rules {kind} ({switched} "
                f"{'created' if kind == 'on' else 'deleted'} in {switch_s}s); settling {opts.settle:g}s")  # fmt: skip
            await asyncio.sleep(opts.settle)
            w = await _window(core, fleets, client, receiver, opts.window)
            w.update(kind=kind, rules_switched=switched, switch_s=switch_s)
            if kind == "on":
                w["open_alerts_after"] = await _open_alerts(core)
            windows.append(w)
            log(f"alert cost: rules {kind}: core cpu {w['core']['cpu_pct']}% rss {w['core']['rss_mb_max']} MB, "
                f"alert changes {w['alert_changes_per_s']}/s, machine busy "
                f"{w['machine_cpu']['busy_pct_of_all_cores']}% (others {w['machine_cpu']['others_pct_of_one_core']})")  # fmt: skip
        out["windows"] = windows
        out["summary"] = summarize_cost(windows)

        for f in fleets:
            with contextlib.suppress(Exception):
                await f.command("stop")
        for f in fleets:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(40):
                    await f.proc.wait()
        await client.stop()
        out["core_exit_code"] = await core.stop()
    out["core_log"] = core_log_counts(core.log)
    return out


async def _window(
    core: CoreProc, fleets: list[FleetProc], client: PushClient, receiver: WebhookReceiver, seconds: float
) -> dict[str, Any]:
    assert core.proc is not None
    core_w = ProcWatch(core.proc.pid, "core")
    sims = [ProcWatch(f.proc.pid, f.name) for f in fleets]
    me = ProcWatch(os.getpid(), "observer", children=False)
    system = SystemCpu()
    for f in fleets:
        await f.command("begin")
    await asyncio.gather(*(f.expect("begin", 30) for f in fleets))
    t0 = time.time()
    for w in [core_w, *sims, me]:
        w.begin()
    system.begin()
    client.begin()
    await sample_every_second([core_w, *sims], seconds)
    client.end()
    t1 = time.time()
    sys_cpu = system.end()
    res = [w.end() for w in [core_w, *sims]]
    observer = me.end()
    for f in fleets:
        await f.command("report")
    reports = await asyncio.gather(*(f.expect("report", 30) for f in fleets))
    wall = res[0]["seconds"]
    ours = sum(r["cpu_pct"] for r in res) + observer["cpu_pct"]
    sys_cpu["others_pct_of_one_core"] = round(
        max(0.0, sys_cpu["busy_pct_of_all_cores"] * sys_cpu["cores"] - ours), 1
    )
    posts = receiver.bodies(t0, t1)
    changes = sum(client.alert_events.values())
    return {
        "started": time.strftime("%H:%M:%S", time.localtime(t0)),
        "core": res[0],
        "simulator_cpu_pct": [r["cpu_pct"] for r in res[1:]],
        "observer_cpu_pct": observer["cpu_pct"],
        "achieved_send_rate": round(sum(r["samples_sent"] for r in reports) / wall, 1),
        "connected_at_end": sum(r["connected"] for r in reports),
        "push_latency_ms": pcts_ms(client.latencies),
        "alert_events": dict(sorted(client.alert_events.items())),
        "alert_changes_per_s": round(changes / wall, 1),
        "webhook_posts": len(posts),
        "webhook_alerts": sum(len(b.alerts) for _, b in posts),
        "machine_cpu": sys_cpu,
    }


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def summarize_cost(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each rules window against the mean of the no-rules windows before and after it."""
    cpu = [w["core"]["cpu_pct"] for w in windows]
    extra, ratio = [], []
    for i, w in enumerate(windows):
        if w["kind"] != "on":
            continue
        around = [cpu[j] for j in (i - 1, i + 1) if 0 <= j < len(windows) and windows[j]["kind"] == "off"]
        base = sum(around) / len(around)
        extra.append(round(cpu[i] - base, 2))
        ratio.append(round(cpu[i] / base, 3) if base else None)
    on = [w for w in windows if w["kind"] == "on"]
    off = [w for w in windows if w["kind"] == "off"]
    first_off = off[0]["core"]
    med_extra = round(_median(extra), 2) if extra else None
    return {
        "cpu_pct_no_rules": [w["core"]["cpu_pct"] for w in off],
        "cpu_pct_rules": [w["core"]["cpu_pct"] for w in on],
        "extra_cpu_pct_of_a_core": extra,
        "extra_cpu_pct_median": med_extra,
        "ratio_rules_over_no_rules": ratio,
        "ratio_median": round(_median([r for r in ratio if r is not None]), 3) if ratio else None,
        "rss_mb_max_first_no_rules": first_off["rss_mb_max"],
        "rss_mb_max_rules": [w["core"]["rss_mb_max"] for w in on],
        "rss_mb_max_no_rules": [w["core"]["rss_mb_max"] for w in off],
        "alert_changes_per_s_rules": [w["alert_changes_per_s"] for w in on],
        "open_alerts_after_rules_windows": [w.get("open_alerts_after") for w in on],
        "target_extra_le_10pct_of_a_core": med_extra is not None and med_extra <= 10.0,
        "every_window_within_target": bool(extra) and max(extra) <= 10.0,
    }


# ---------------------------------------------------------------- latency to the webhook

LOW, HIGH = 10.0, 95.0  # the probes' cpu_pct outside and inside the probe rule's condition (> 90)
PROBE_THRESHOLD = 90.0
CYCLES = 2  # firings per probe: a third would be the fifth flip within alert_flap_window (flapping)


class ProbeFleet(Fleet):
    """Probe agents (ProbeAgent) and what they sent: one record per alert they drove to firing."""

    armed = False
    for_ = 2.0
    # (node_id, ts of the first breaching sample = the alert's started_at, ts of the completing sample)
    records: list[tuple[int, float, float]]


class ProbeAgent(SimAgent):
    """A simulated agent whose cpu_pct is LOW, then (once armed, after a random number of samples)
    HIGH until the sample at or after started_at + `for` has been sent, then LOW again; twice."""

    def _init_host(self) -> None:
        super()._init_host()
        self._cycles = 0
        self._low_left = self._rng.randint(2, 25)  # spreads the firings over ~25 s
        self._t0: float | None = None

    def _value(self, ts: float) -> float:
        fleet = self.fleet
        assert isinstance(fleet, ProbeFleet)
        if not fleet.armed or self._cycles >= CYCLES or self.node_id is None:
            return LOW
        if self._t0 is None:
            self._low_left -= 1
            if self._low_left > 0:
                return LOW
            self._t0 = ts
            return HIGH
        if ts - self._t0 >= fleet.for_:  # the engine's own test (machine.py): this sample fires
            fleet.records.append((self.node_id, self._t0, ts))
            self._t0 = None
            self._cycles += 1
            self._low_left = self._rng.randint(3, 8)
        return HIGH

    def _frame(self, seq: int, ts: float) -> bytes:
        reading = msgspec.structs.replace(self.metrics(), cpu_pct=self._value(ts))
        return p.encode(p.Samples(samples=[mt.Sample(seq=seq, ts=ts, metrics=reading)]))


async def bench_alert_latency(
    load: LoadOptions, opts: AlertOptions, background: int, workdir: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "background_agents": background,
        "probes": opts.probes,
        "firings_per_probe": CYCLES,
        "rule_for_s": opts.for_,
        "alert_group_wait_s": 0.0,
    }
    async with contextlib.AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        core = await stack.enter_async_context(CoreProc(workdir, env={"SM_CORE_ALERT_GROUP_WAIT": "0"}))
        assert core.proc is not None and core.token is not None
        channel_id = await _channel(core, receiver.url)
        token = await core.enroll_token(background + max(100, background // 2) + opts.probes)
        client = PushClient(core.url, core.token)
        client.track_fired = True
        await client.start()
        stack.push_async_callback(client.stop)
        fleets: list[FleetProc] = []
        if background:
            sizes = fleet_sizes(background, load.per_process)
            fleets, ready = await start_fleets(
                stack, core.url, token, sizes, dataclasses.replace(load, duration=300.0), workdir
            )
            out["enrolled"] = sum(r["nodes"] for r in ready)
            log(f"alert latency: {out['enrolled']} background agents; warming up {load.warmup:g}s")
            await asyncio.sleep(load.warmup)
        probes = ProbeFleet(
            core.url, token, opts.probes, 1.0, "probe", pool=0, seed=7, agent_class=ProbeAgent
        )
        probes.records, probes.for_ = [], opts.for_
        await probes.start()
        stack.push_async_callback(probes.stop)
        await core.request(
            "POST",
            "/api/v1/alert-rules",
            json={
                "name": "probe cpu",
                "metric": "cpu_pct",
                "op": ">",
                "threshold": PROBE_THRESHOLD,
                "for": opts.for_,
                "targets": {"nodes": probes.nodes},
                "channels": [channel_id],
            },
        )
        await asyncio.sleep(2.0)
        core_w = ProcWatch(core.proc.pid, "core")
        system = SystemCpu()
        for f in fleets:
            await f.command("begin")
        await asyncio.gather(*(f.expect("begin", 30) for f in fleets))
        core_w.begin()
        system.begin()
        client.begin()
        probes.armed = True
        expected = opts.probes * CYCLES
        log(f"alert latency ({background} background agents): {expected} firings by {opts.probes} probes")
        deadline = time.monotonic() + 25 + CYCLES * (opts.for_ + 12) + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            core_w.sample()
            if len(probes.records) >= expected and _matched(probes.records, receiver) >= expected:
                break
        client.end()
        out["core"] = core_w.end()
        out["machine_cpu"] = system.end()
        out.update(_latencies(probes.records, receiver, client.fired))
        out["probe_send_rate"] = probes.window_stats().send_rate
        if fleets:
            # How far behind the writer was meanwhile: the background agents' send-to-ack (= commit) time.
            for f in fleets:
                await f.command("report")
            reports = await asyncio.gather(*(f.expect("report", 30) for f in fleets))
            out["background"] = {
                "send_rate": round(sum(r["send_rate"] for r in reports), 1),
                "ack_latency_ms": merge_pcts([r["ack_latency_ms"] for r in reports]),
                "reconnects": sum(r["reconnects"] for r in reports),
                "connected_at_end": sum(r["connected"] for r in reports),
            }
        for f in fleets:
            with contextlib.suppress(Exception):
                await f.command("stop")
        for f in fleets:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(40):
                    await f.proc.wait()
        await probes.stop()
        await client.stop()
        out["core_exit_code"] = await core.stop()
    log(f"alert latency ({background} background agents): {out['measured']} of {out['expected']} measured, "
        f"p50 {out['latency_ms']['p50']} p99 {out['latency_ms']['p99']} max {out['latency_ms']['max']} ms")  # fmt: skip
    return out


def _receipts(receiver: WebhookReceiver) -> dict[tuple[int, float], float]:
    """First receipt of a firing notification per alert, by (node_id, started_at)."""
    got: dict[tuple[int, float], float] = {}
    for t, body in receiver.bodies():
        if body.status == "firing":
            for a in body.alerts:
                got.setdefault((a.node_id, a.started_at), t)
    return got


def _matched(records: list[tuple[int, float, float]], receiver: WebhookReceiver) -> int:
    got = _receipts(receiver)
    return sum(1 for nid, t0, _ in records if (nid, t0) in got)


def _latencies(
    records: list[tuple[int, float, float]], receiver: WebhookReceiver, fired: dict[tuple[int, float], float]
) -> dict[str, Any]:
    got = _receipts(receiver)
    webhook, event = [], []
    for nid, t0, done in records:
        t = got.get((nid, t0))
        if t is not None:
            webhook.append(t - done)
        e = fired.get((nid, t0))
        if e is not None:
            event.append(e - done)
    posts = [b for _, b in receiver.bodies() if b.status == "firing"]
    return {
        "expected": len(records),
        "measured": len(webhook),
        "missing": len(records) - len(webhook),
        "latency_ms": pcts_ms(webhook, (50, 95, 99)),
        # The same alerts' firing event at a /ws/client subscriber: committed and published.
        "alert_event_ms": pcts_ms(event, (50, 95, 99)),
        "firing_posts": len(posts),
        "alerts_per_firing_post_max": max((len(b.alerts) for b in posts), default=0),
    }
