"""The alerting part's pure pieces: the rule set, the cost summary, the probes' values, matching receipts, the report."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from benchmarks.parts.alerts import (
    CYCLES,
    FOR_ALL,
    GROUPS,
    HIGH,
    LOW,
    TAGS,
    ProbeAgent,
    ProbeFleet,
    WebhookReceiver,
    _latencies,
    rule_bodies,
    summarize_cost,
)
from benchmarks.run import markdown
from servermanager.common import rest as m
from servermanager.core.alerts.rules import normalize


def test_every_node_gets_ten_valid_rules() -> None:
    bodies = rule_bodies(channel_id=3)
    specs = [
        normalize(
            msgspec.convert(b, m.RuleCreate),
            rule_id=i,
            created_at=0.0,
            created_by="t",
            channels=[3],
            nodes=[],
        )
        for i, b in enumerate(bodies, 1)
    ]
    assert len({s.name for s in specs}) == len(specs) == len(FOR_ALL) + 3 * GROUPS + 3 * TAGS
    assert all(s.channels == (3,) for s in specs)
    for i in range(2 * GROUPS * TAGS):  # the benchmark labels node i with group-(i % 10), tier-(i % 5)
        group, tag = f"group-{i % GROUPS}", f"tier-{i % TAGS}"
        mine = [s for s in specs if s.targets.all or s.targets.group == group or s.targets.tag == tag]
        assert len(mine) == 10


def _window(kind: str, cpu: float) -> dict[str, Any]:
    return {
        "kind": kind,
        "core": {"cpu_pct": cpu, "rss_mb_max": 200.0 + cpu},
        "alert_changes_per_s": 100.0 if kind == "on" else 0.0,
    }


def test_each_rules_window_is_weighed_against_the_no_rules_windows_around_it() -> None:
    s = summarize_cost([_window("off", 50.0), _window("on", 58.0), _window("off", 54.0), _window("on", 70.0)])
    # 58 - mean(50, 54) = 6; the last has only the window before it: 70 - 54 = 16.
    assert s["extra_cpu_pct_of_a_core"] == [6.0, 16.0]
    assert s["extra_cpu_pct_median"] == 11.0
    assert s["ratio_rules_over_no_rules"] == [round(58 / 52, 3), round(70 / 54, 3)]
    assert s["target_extra_le_10pct_of_a_core"] is False and s["every_window_within_target"] is False
    assert s["rss_mb_max_first_no_rules"] == 250.0


def test_a_probe_breaches_until_the_sample_that_completes_for_then_clears() -> None:
    fleet = ProbeFleet("http://127.0.0.1:1", "t", 1, 1.0, "probe", pool=0, seed=1, agent_class=ProbeAgent)
    fleet.records, fleet.for_ = [], 2.0
    agent = fleet.agents[0]
    assert isinstance(agent, ProbeAgent)
    agent.node_id = 7
    assert agent._value(100.0) == LOW  # not armed yet
    fleet.armed = True
    values = [(ts, agent._value(ts)) for ts in (100.0 + 0.999 * k for k in range(80))]
    highs = [ts for ts, v in values if v == HIGH]
    assert len(fleet.records) == CYCLES
    for node, started, done in fleet.records:
        assert node == 7
        # The first breaching sample opens the alert; every sample after it breaches until the
        # first whose ts is `for` past it (1.998 s is not enough, 2.997 s is), and none after that.
        assert [round(t - started, 3) for t in highs if started <= t <= done] == [0.0, 0.999, 1.998, 2.997]
        assert done - started >= 2.0
    assert set(v for ts, v in values if ts > fleet.records[-1][2]) == {LOW}


def test_latencies_match_firing_posts_to_completing_samples() -> None:
    receiver = WebhookReceiver()
    now = time.time()

    def post(status: str, *alerts: tuple[int, float], at: float) -> None:
        body = {
            "status": status,
            "alerts": [
                {"id": 1, "rule": "r", "node": "n", "node_id": nid, "severity": "warning", "value": 95.0,
                 "threshold": 90.0, "started_at": started, "resolved_at": None}
                for nid, started in alerts
            ],
        }  # fmt: skip
        receiver.received.append((at, msgspec.json.encode(body)))

    records = [(1, now, now + 2.0), (2, now + 0.5, now + 2.5), (3, now + 1.0, now + 3.0)]
    post("firing", (1, now), (2, now + 0.5), at=now + 2.6)
    post("resolved", (3, now + 1.0), at=now + 3.1)  # not a firing notification: node 3 is missing
    post("firing", (1, now), at=now + 9.0)  # a repeat: the first receipt counts
    out = _latencies(records, receiver, {(1, now): now + 2.001})
    assert (out["expected"], out["measured"], out["missing"]) == (3, 2, 1)
    assert out["latency_ms"]["p50"] == 100.0 and out["latency_ms"]["max"] == 600.0
    assert out["alert_event_ms"]["n"] == 1
    assert (out["firing_posts"], out["alerts_per_firing_post_max"]) == (2, 2)


def test_report_shows_the_alerting_part() -> None:
    w = {
        "started": "10:00:00",
        "core": {"cpu_pct": 60.0, "main_thread_cpu_pct": 45.0, "rss_mb_max": 250.0},
        "alert_changes_per_s": 0.0,
        "webhook_posts": 0,
        "push_latency_ms": {"p99": 50.0},
        "machine_cpu": {"busy_pct_of_all_cores": 80.0, "others_pct_of_one_core": 5.0},
    }
    results = {
        "machine": {
            "nproc": 2,
            "cpu_model": "T",
            "mem_total_gib": 4,
            "kernel": "6",
            "python": "3.11",
            "sqlite": "3",
        },
        "alerts": {
            "cost": {
                "agents": 5000,
                "rules": 49,
                "rules_per_node": 10,
                "windows": [
                    {**w, "kind": "off"},
                    {**w, "kind": "on", "core": {**w["core"], "cpu_pct": 66.0}},
                ],
                "summary": summarize_cost(
                    [
                        _window("off", 60.0),
                        {**_window("on", 66.0), "core": {"cpu_pct": 66.0, "rss_mb_max": 1}},
                    ]
                ),
            },
            "latency": [
                {
                    "background_agents": 1000,
                    "measured": 240,
                    "expected": 240,
                    "missing": 0,
                    "latency_ms": {"p50": 3.0, "p95": 10.0, "p99": 150.0, "max": 170.0},
                    "alert_event_ms": {"p50": 1.5, "p99": 140.0},
                    "background": {"ack_latency_ms": {"p50": 30.0, "p99": 200.0}},
                    "machine_cpu": {"busy_pct_of_all_cores": 60.0},
                },
                {"background_agents": 5000, "error": "RuntimeError('x')"},
            ],
        },
    }
    lines = markdown(results).splitlines()
    assert "| 2 | 10:00:00 | on | 66.0 (45.0) | 250.0 | 0.0 | 0 | 50.0 | 80.0 (5.0) |" in lines
    assert any(
        line.startswith("Extra CPU with rules") and "[6.0]" in line and "met" in line for line in lines
    )
    assert (
        "| 1000 | 240 of 240 | 3.0 / 10.0 / 150.0 / 170.0 | 1.5 / 140.0 | 30.0 / 200.0 | 60.0 | met |"
        in lines
    )
    assert "| 5000 | error: RuntimeError('x') | | | | | |" in lines
