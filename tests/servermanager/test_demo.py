"""`servermanager demo` on a headless machine: core and agent run, the app is skipped with a reason."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from devkit.ports import free_port
from servermanager.core.datadir import INITIAL_PASSWORD_FILE
from tests.helpers.procs import CLI
from tests.helpers.wait import wait_sync

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_headless_demo_runs_core_and_agent(tmp_path: Path, stop: signal.Signals) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [*CLI, "demo", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "demo")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own process group, so a failed test can stop the core and agent it started too.
            start_new_session=True,
        )
    try:
        password_file = tmp_path / "demo" / "core" / INITIAL_PASSWORD_FILE
        wait_sync(password_file.exists, what="the demo core")
        url = f"http://127.0.0.1:{port}"

        seen: dict[str, Any] = {}

        def node_online() -> bool:
            login = urllib.request.Request(
                url + "/api/v1/auth/login",
                data=json.dumps(
                    {"username": "admin", "password": password_file.read_text().strip()}
                ).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(login, timeout=5) as r:
                    seen["token"] = json.loads(r.read())["access_token"]
                nodes = _api(url, seen["token"], "GET", "/api/v1/nodes")["nodes"]
            except OSError:  # the file is written just before the core starts listening
                return False
            seen["node"] = nodes[0]["id"] if nodes else None
            return bool(nodes) and nodes[0]["online"] and nodes[0]["latest"] is not None

        wait_sync(node_online, what="the demo agent's first sample")
        assert demo.poll() is None, log.read_text()
        assert "Not opening the desktop app: there is no display" in log.read_text()
        # The demo's agent runs read-only commands, says so, and refuses anything else.
        assert "runs only these read-only ones" in log.read_text()
        runs = {}
        for command in ("uptime", "touch /tmp/servermanager-demo-was-here"):
            cmd = _api(
                url,
                seen["token"],
                "POST",
                "/api/v1/commands",
                {"targets": {"nodes": [seen["node"]]}, "command": command, "timeout": 10},
            )

            def finished(cid: str = cmd["id"], command: str = command) -> bool:
                info = _api(url, seen["token"], "GET", f"/api/v1/commands/{cid}")
                runs[command] = info["runs"][0]
                return bool(info["status"] != "running")

            wait_sync(finished, what=f"{command!r} on the demo agent")
        assert runs["uptime"]["status"] == "ok" and "load average" in runs["uptime"]["stdout"], runs
        assert runs["touch /tmp/servermanager-demo-was-here"]["status"] == "refused", runs
        children = psutil.Process(demo.pid).children()
        assert len(children) == 2, children  # the core and the agent
        # To the demo alone: a signal from kill or a service manager, not a terminal's to its group.
        demo.send_signal(stop)
        try:
            code = demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not stop within 30 s of {stop.name}; its output:\n" + log.read_text())
        assert code == 0, log.read_text()
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running after {stop.name}: {alive}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGKILL)
        demo.wait()


def _api(url: str, token: str, method: str, path: str, body: object = None) -> Any:
    req = urllib.request.Request(
        url + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())
