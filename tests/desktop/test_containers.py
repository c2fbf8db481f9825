"""The Containers tab end to end: a real agent polling a real Podman engine, through a real core, to
the table (sorted, a busy container on top), the picked container's charts, the fleet count, the
hardware lines of the node header, and container logs in the Logs tab."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.cores import RunningCore
from devkit.engine import Podman
from servermanager.agent.link.connection import ConnState
from servermanager.agent.main import Agent
from servermanager.agent.settings import load_agent_settings
from servermanager.common import metrics as mt
from servermanager.common import rest as m
from servermanager.desktop.containers import SORT_ROLE, ContainersModel
from servermanager.desktop.context import AppContext
from servermanager.desktop.nodeview import hardware_lines
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import Cores, Run, close_agents, sign_in, until


@pytest.fixture
def cores(run: Run, tmp_path: Path) -> Iterator[Cores]:
    """The desktop tests' core, but one that lets agents sample every second (theirs: a minute)."""
    box = Cores(tmp_path / "core", agent_interval=1.0)
    run(box.start())
    try:
        yield box
    finally:
        run(close_agents())
        run(box.stop())


def test_model_sorts_and_shows(qtmodeltester: Any) -> None:
    model = ContainersModel()
    model.set_rows(
        [
            m.Container(
                name="web",
                image="nginx",
                state="running",
                health="healthy",
                cpu_pct=150.5,
                mem_used=1 << 20,
                mem_limit=1 << 30,
            ),
            m.Container(
                name="db", image="postgres", state="running", cpu_pct=9.0, net_rx_bps=10.0, net_tx_bps=0.0
            ),
            m.Container(name="old", state="exited"),
        ]
    )
    qtmodeltester.check(model)
    assert model.data(model.index(0, ContainersModel.CPU)) == "150.5 %"  # percent of one CPU: past 100
    assert model.data(model.index(0, ContainersModel.MEMORY)) == "1.00 MiB / 1.00 GiB"
    assert model.data(model.index(2, ContainersModel.CPU), SORT_ROLE) == -1.0
    assert model.data(model.index(1, ContainersModel.CPU), SORT_ROLE) < model.data(
        model.index(0, ContainersModel.CPU), SORT_ROLE
    )


def test_hardware_lines_say_why_nothing_is_shown() -> None:
    assert hardware_lines(None)[0].startswith("not reported")
    hw = mt.Hardware(
        gpu_note="not present (no NVIDIA driver: Driver Not Loaded)",
        smart=[
            mt.DiskHealth("/dev/sda", "Samsung SSD 870", True, 31.0, 12873),
            mt.DiskHealth("/dev/vda", note="Unable to detect device type"),
        ],
    )
    gpu, smart = hardware_lines(hw)
    assert gpu == "not present (no NVIDIA driver: Driver Not Loaded)"
    assert (
        smart == "/dev/sda Samsung SSD 870: PASSED, 31 °C, 12873 h on; /dev/vda: Unable to detect device type"
    )
    gpus = mt.Hardware(
        gpus=[mt.GpuInfo(0, "NVIDIA T4", 50.0, 1 << 30, 16 << 30, 60.0)],
        smart_note="smartctl not installed (smartmontools)",
    )
    assert hardware_lines(gpus) == (
        "NVIDIA T4 50 %, 1.00 GiB of 16.0 GiB, 60 °C",
        "smartctl not installed (smartmontools)",
    )


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    why = Podman.why_not()
    if why is not None:
        pytest.skip(f"no container engine can run here: {why}")
    with Podman.throwaway() as engine:
        engine.run("burner", "sh", "-c", "yes > /dev/null")
        engine.run("talker", "sh", "-c", "i=0; while true; do echo hello $i; i=$((i+1)); sleep 0.2; done")
        yield engine


@pytest.fixture
def agent(core: RunningCore, run: Run, tmp_path: Path, podman: Podman) -> Iterator[Agent]:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'core = "{core.url}"\nstate_dir = "{tmp_path / "agent"}"\ninterval = 1\n'
        f"[logs]\njournal = false\ncontainers = true\n"
        f'[containers]\nsocket = "unix://{podman.socket}"\ninterval = 1\n'
        f"[hardware]\ngpu = true\nsmart = false\n"
    )
    a = Agent(load_agent_settings(config_file=cfg, environ={}), run(core.enroll_token()))
    task = asyncio.get_event_loop().create_task(a.run())
    try:
        run(a.wait_state(ConnState.STREAMING))
        yield a
    finally:
        a.stop()
        run(asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10))
        a.close()


def top(panel: Any) -> m.Container:
    c = panel.model.row_at(panel.proxy.mapToSource(panel.proxy.index(0, 0)).row())
    assert c is not None
    return c


def names(panel: Any) -> list[str]:
    return [panel.proxy.index(r, 0).data() for r in range(panel.proxy.rowCount())]


def test_containers_tab_end_to_end(
    window: MainWindow, ctx: AppContext, core: RunningCore, agent: Agent, run: Run
) -> None:
    assert agent.node_id is not None
    run(sign_in(ctx, core))
    window.show()
    # The fleet table counts the node's running containers.
    run(
        until(
            lambda: (ctx.model.node(agent.node_id or 0) or _none()).containers == 2,
            "the fleet count",
            timeout=15,
        ),
        timeout=20,
    )
    view = window.open_node(agent.node_id)
    panel = view.show_containers()
    # Sorted by CPU, busiest first, once the agent has measured a CPU rate (its second poll).
    run(
        until(
            lambda: names(panel)[:1] == ["burner"] and (top(panel).cpu_pct or 0) > 20,
            "the burner on top",
            timeout=15,
        ),
        timeout=20,
    )
    assert top(panel).state == "running" and top(panel).image == "localhost/sm-busybox:latest"
    assert set(names(panel)) == {"burner", "talker"}
    # Picking it charts its history.
    assert panel.select("burner")
    run(until(lambda: panel.history_loads >= 1, "the burner's history"))
    xs, ys = panel.cpu_chart.data()
    assert xs.size >= 1 and float(ys["cpu_pct"][-1]) > 20
    assert panel.mem_chart.data()[0].size == xs.size
    # The node header says why there is no GPU or SMART reading.
    run(
        until(
            lambda: (
                view.fact_labels["gpu"].text() not in ("", "—")
                and not view.fact_labels["gpu"].text().startswith("not reported")
            ),
            "the hardware lines",
        )
    )
    assert "nvidia-ml-py" in view.fact_labels["gpu"].text() or "NVIDIA" in view.fact_labels["gpu"].text()
    assert view.fact_labels["smart"].text() == "off in this agent's config ([hardware] smart = false)"
    # The Logs tab offers the containers' output, and reads it through the agent.
    logs = view.show_logs()
    run(until(lambda: logs.loads >= 1, "the log sources"))
    i = logs.source.findData("container:talker")
    assert i >= 0, [logs.source.itemData(k) for k in range(logs.source.count())]
    logs.source.setCurrentIndex(i)
    loads = logs.loads
    logs.load()
    run(until(lambda: logs.loads > loads, "the container's lines"))
    assert logs.model.rowCount() > 0
    texts = [logs.model.index(r, logs.model.columnCount() - 1).data() for r in range(logs.model.rowCount())]
    assert any(t and t.startswith("hello ") for t in texts), texts


def _none() -> Any:
    class Nothing:
        containers = None

    return Nothing()
