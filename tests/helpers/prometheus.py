"""/metrics as Prometheus reads it: the text format parsed strictly, promtool's lint, a live core's body."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devkit.cores import RunningCore
from servermanager.agent.main import Agent
from tests.agent.fakes import AgentRunner, fast_settings


@dataclass
class Family:
    help: str | None = None
    type: str | None = None
    samples: dict[str, str] = field(default_factory=dict)  # labels -> value


def parse(text: str) -> dict[str, Family]:
    """The text format, strictly: HELP then TYPE then the samples of one family, each family once."""
    families: dict[str, Family] = {}
    current: str | None = None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP ") :].partition(" ")
            assert name not in families, f"{name} declared twice"
            families[name] = Family(help=help_text)
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            assert name == current and families[name].type is None, f"TYPE of {name} not right after its HELP"
            assert kind in ("gauge", "counter"), line
            families[name].type = kind
        else:
            assert line and not line.startswith("#"), repr(line)
            series, _, value = line.rpartition(" ")
            name, _, labels = series.partition("{")
            assert name == current, f"sample of {name} outside its family"
            float(value)
            families[name].samples[labels.rstrip("}")] = value
    return families


def _promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        # Not a skip: CI installs it (.ci/run), so a missing tool is a broken set-up, not a pass.
        pytest.fail("promtool is not installed: `apt-get install prometheus` (Debian) brings it")
    return tool


def promtool_check(text: str) -> str:
    """promtool's verdict on an exposition: "" if it passes, else what it found (parse or lint)."""
    proc = subprocess.run(
        [_promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    return "" if proc.returncode == 0 else (proc.stdout + proc.stderr).strip() or f"exit {proc.returncode}"


async def live_metrics(tmp_path: Path, readings: int = 3) -> str:
    """/metrics of a real core once a real agent (psutil, this host) has sent `readings` samples.

    Enough of them that the rate rows (disk and network per second) have a value too.
    """
    server = await RunningCore(tmp_path / "core", agent_interval=0.0).start()
    runner = AgentRunner()
    try:
        agent = Agent(fast_settings(tmp_path / "agent", server.url), await server.enroll_token())
        runner.start(agent)
        async with asyncio.timeout(20):
            await agent.wait_until(lambda: agent.stats.samples_acked >= readings)
        status, body = await server.request("GET", "/metrics", await server.admin_token())
        assert status == 200, body
        return bytes(body).decode()
    finally:
        await runner.close()
        await server.stop()


def promtool_check_rules(folder: Path, rules: dict[str, object]) -> str:
    """promtool's verdict on a rules file (its PromQL parsed): "" if it passes, else what it found."""
    path = folder / "rules.json"
    # JSON is YAML, so the rules file needs no YAML library.
    path.write_text(json.dumps(rules))
    proc = subprocess.run(
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    return "" if proc.returncode == 0 else (proc.stdout + proc.stderr).strip() or f"exit {proc.returncode}"
