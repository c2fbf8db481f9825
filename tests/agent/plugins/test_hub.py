"""The plugin hub against real things: commands that hang, flood and print garbage; a scraped aiohttp
endpoint; HTTP(S), TCP and ping checks against servers on loopback."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest
from aiohttp import web

from servermanager.agent.plugins.checks import ping_method
from servermanager.agent.plugins.config import CheckSettings, CustomSettings, ScrapeSettings
from servermanager.agent.plugins.hub import PluginHub
from servermanager.common.series import PluginStatus, SeriesPoint
from servermanager.common.settings import SettingsError
from tests.helpers.tls import CA
from tests.helpers.wait import wait_for

SH = "/bin/sh"


def custom(name: str, script: str, timeout: float = 5.0, **kw: object) -> CustomSettings:
    c = CustomSettings(name=name, command=[SH, "-c", script], interval=60, timeout=timeout, **kw)  # type: ignore[arg-type]
    c.validate()
    return c


def check(name: str, kind: str, target: str, timeout: float = 3.0, **kw: object) -> CheckSettings:
    c = CheckSettings(name=name, type=kind, target=target, interval=60, timeout=timeout, **kw)  # type: ignore[arg-type]
    c.validate()
    return c


async def run_all(hub: PluginHub) -> tuple[dict[tuple[str, str], float], dict[str, PluginStatus]]:
    await asyncio.gather(*(hub.run_once(e) for e in hub.entries))
    values = {
        (p.name, ",".join(f"{k}={v}" for k, v in sorted(p.labels.items()))): p.value for p in hub.points()
    }
    return values, {s.name: s for s in hub.statuses()}


async def test_good_lines_and_prometheus_output() -> None:
    hub = PluginHub(
        [
            custom("lines", 'echo "queue_depth 12"; echo "temp{room=\\"a\\"} 21.5"'),
            custom(
                "prom",
                "printf '# HELP x X\\n# TYPE x gauge\\nx_total{a=\"1\"} 3 1700000000000\\n'",
                format="prometheus",
            ),
        ],
        [],
        [],
    )
    values, status = await run_all(hub)
    assert values[("queue_depth", "")] == 12 and values[("temp", "room=a")] == 21.5
    assert values[("x_total", "a=1")] == 3
    assert values[("plugin_up", "plugin=lines")] == 1 and values[("plugin_up", "plugin=prom")] == 1
    assert status["lines"].ok and status["lines"].error is None


async def test_hang_is_killed_with_its_children_at_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    hub = PluginHub([custom("hang", f"sleep 300 & echo $! > {pidfile}; wait", timeout=0.5)], [], [])
    t0 = time.monotonic()
    values, status = await run_all(hub)
    assert time.monotonic() - t0 < 4
    assert values == {("plugin_up", "plugin=hang"): 0.0}
    assert status["hang"].error == "timed out after 0.5s; killed with its process group"
    child = int(pidfile.read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


async def test_flood_is_cut_and_garbage_is_counted() -> None:
    hub = PluginHub(
        [
            custom("flood", "yes 'x 1'", max_output=4096),
            custom("junk", "echo 'a 1'; echo 'not a metric line'; echo 'b NaN'; echo 'c 2'"),
            custom("allgarbage", "echo '%%%'; echo 'hello world again'"),
            custom("fails", "echo 'a 1'; echo 'broken pipe' >&2; exit 3"),
        ],
        [],
        [],
    )
    values, status = await run_all(hub)
    assert status["flood"].error == "printed over 4096 bytes of output; killed" and not status["flood"].ok
    assert values[("plugin_up", "plugin=flood")] == 0
    # Some lines readable: its values go on, the rest is counted and said.
    assert status["junk"].ok and status["junk"].bad_lines == 2
    assert status["junk"].error == "2 line(s) could not be read, first: 'not a metric line'"
    assert values[("a", "")] == 1 and values[("c", "")] == 2
    assert not status["allgarbage"].ok and values[("plugin_up", "plugin=allgarbage")] == 0
    assert status["fails"].error == "exited with status 3: broken pipe"
    assert ("a", "") in values  # from "junk"; "fails" gave no values of its own
    assert values[("plugin_up", "plugin=fails")] == 0


async def test_a_hanging_plugin_never_holds_the_others() -> None:
    hub = PluginHub([custom("slow", "sleep 30", timeout=20), custom("fast", "echo fast_one 1")], [], [])
    task = asyncio.create_task(hub.run())
    try:
        await wait_for(lambda: any(p.name == "fast_one" for p in hub.points()), timeout=5, what="fast_one")
        assert [s.name for s in hub.statuses()] == ["fast"]  # "slow" has not finished a run
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def server(unused_tcp_port_factory: Callable[[], int]) -> AsyncIterator[str]:
    port = unused_tcp_port_factory()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text='# TYPE pg_up gauge\npg_up 1\npg_conns{db="main"} 7\nother 3\n')

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="status: ok")

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_scrape_of_a_local_endpoint(server: str) -> None:
    s = ScrapeSettings(name="db", url=f"http://{server}/metrics", timeout=2, metrics=["pg_up", "pg_conns"])
    s.validate()
    values, status = await run_all(PluginHub([], [s], []))
    assert values == {("pg_up", ""): 1, ("pg_conns", "db=main"): 7, ("plugin_up", "plugin=db"): 1}
    assert status["db"].ok and status["db"].kind == "scrape"


async def test_http_and_tcp_checks(server: str, unused_tcp_port_factory: Callable[[], int]) -> None:
    closed = unused_tcp_port_factory()  # nothing listens there
    hub = PluginHub(
        [],
        [],
        [
            check("ok", "http", f"http://{server}/health", body_match=r"status: ok"),
            check("nomatch", "http", f"http://{server}/health", body_match=r"^healthy$"),
            check("broken", "http", f"http://{server}/broken"),
            check("want503", "http", f"http://{server}/broken", expect_status=[503]),
            check("tcp", "tcp", server),
            check("closed", "tcp", f"127.0.0.1:{closed}"),
        ],
    )
    values, status = await run_all(hub)
    assert values[("check_up", "check=ok")] == 1 and 0 < values[("check_latency_seconds", "check=ok")] < 3
    assert values[("check_http_status", "check=ok")] == 200
    assert values[("check_up", "check=nomatch")] == 0
    assert status["nomatch"].error == "body does not match '^healthy$'"
    assert (
        values[("check_up", "check=broken")] == 0
        and status["broken"].error == "status 503, expected 2xx or 3xx"
    )
    assert values[("check_up", "check=want503")] == 1
    assert values[("check_up", "check=tcp")] == 1 and ("check_latency_seconds", "check=tcp") in values
    assert values[("check_up", "check=closed")] == 0
    assert "cannot connect to 127.0.0.1" in (status["closed"].error or "")


async def test_https_certificate_days_left(tmp_path: Path, unused_tcp_port: int) -> None:
    ca = CA.make(tmp_path / "ca")
    cert, key, _ = ca.issue(tmp_path / "srv")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port, ssl_context=ctx).start()
    try:
        url = f"https://127.0.0.1:{unused_tcp_port}/"
        hub = PluginHub([], [], [check("tls", "http", url, tls_verify=False), check("strict", "http", url)])
        values, status = await run_all(hub)
    finally:
        await runner.cleanup()
    left = values[("check_cert_days_left", "check=tls")]
    assert 29 < left <= 30, left  # the test CA issues certificates for 30 days
    assert values[("check_up", "check=tls")] == 1
    # Verified against the system's CAs, a private CA's certificate is down, and says why.
    assert values[("check_up", "check=strict")] == 0
    assert "certificate" in (status["strict"].error or "")


async def test_ping_loopback_or_a_clear_refusal() -> None:
    try:
        method = ping_method()
    except SettingsError:
        with pytest.raises(SettingsError, match="ping checks cannot run here"):
            PluginHub([], [], [check("lo", "ping", "127.0.0.1")])
        return
    hub = PluginHub([], [], [check("lo", "ping", "127.0.0.1")])
    assert hub.ping == method
    values, status = await run_all(hub)
    assert values[("check_up", "check=lo")] == 1, status["lo"].error
    assert 0 <= values[("check_latency_seconds", "check=lo")] < 1


def test_points_are_bounded_with_statuses_kept() -> None:
    hub = PluginHub([custom("many", "true")], [], [])
    e = hub.entries[0]
    e.points = (
        *(SeriesPoint(f"m{i}", 1.0) for i in range(600)),
        SeriesPoint("plugin_up", 1.0, {"plugin": "many"}),
    )
    out = hub.points()
    assert len(out) == 500 and out[0].name == "plugin_up"
