"""Fan-out: one command to 100 simulated agents (the benchmark's fleet simulator) collects 100 results."""

from __future__ import annotations

from benchmarks.fleet import Fleet
from devkit.cores import RunningCore
from tests.helpers.wait import wait_until


async def test_fan_out_to_100_simulated_agents(core_server: RunningCore) -> None:
    token = await core_server.admin_token()
    async with Fleet(core_server.url, await core_server.enroll_token(uses=100), 100, interval=1.0) as fleet:
        assert fleet.enrolled == 100
        status, info = await core_server.request(
            "POST",
            "/api/v1/commands",
            token,
            json={"targets": {"all": True}, "command": "true", "timeout": 10},
        )
        assert status == 202
        assert len(info["runs"]) == 100
        _, done = await wait_until(
            lambda: core_server.request("GET", f"/api/v1/commands/{info['id']}", token),
            lambda r: r[1]["status"] != "running",
            what="100 results",
        )
        assert fleet.commands_received == 100
    assert sorted(r["node_id"] for r in done["runs"]) == sorted(fleet.nodes)
    assert {r["status"] for r in done["runs"]} == {"ok"}
    assert {r["exit_code"] for r in done["runs"]} == {0}
    status, audit = await core_server.request("GET", "/api/v1/audit?action=command.result&limit=500", token)
    assert status == 200, audit
    assert len(audit["entries"]) == 100
