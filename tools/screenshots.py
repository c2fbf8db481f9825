"""Screenshots for the docs: a core in-process, simulated nodes, the app in both themes (python -m tools.screenshots)."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Without a display, render offscreen; under X11/Wayland the real platform is used.
if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import aiohttp
import msgspec
import qasync
from aiohttp import web
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication, QWidget

from devkit.ports import free_port
from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from servermanager.common.exec_policy import Policy
from servermanager.core.app import create_app
from servermanager.core.datadir import initial_admin_password
from servermanager.core.settings import CoreSettings
from servermanager.desktop.account import StepUpDialog
from servermanager.desktop.accountflow import PASSWORD_REASON
from servermanager.desktop.alerts import FILTERS
from servermanager.desktop.charts.ranges import preset
from servermanager.desktop.context import AppContext
from servermanager.desktop.main import make_app
from servermanager.desktop.net.errors import OTP_REQUIRED
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.settings import Profile
from servermanager.desktop.window import MainWindow

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"

# name, group, tags, base cpu %, memory %, disk %, network scale (bytes/s)
Spec = tuple[str, str, list[str], float, float, float, float]
FLEET: list[Spec] = [
    ("web-1", "frontend", ["eu", "prod"], 34.0, 58.0, 41.0, 2.4e6),
    ("web-2", "frontend", ["eu", "prod"], 41.0, 61.0, 43.0, 2.9e6),
    ("api-1", "frontend", ["us", "prod"], 63.0, 72.0, 37.0, 5.1e6),
    ("db-1", "storage", ["eu", "prod"], 22.0, 86.0, 78.0, 9.0e5),
    ("backup-1", "storage", ["eu"], 8.0, 31.0, 93.0, 3.2e5),
    ("build-1", "ci", ["runner"], 88.0, 64.0, 55.0, 1.1e6),
    ("staging-1", "ci", ["staging"], 12.0, 40.0, 22.0, 2.0e5),
]
OFFLINE = {"staging-1"}
# What each simulated agent says its [exec] allows (the batch preview reads it); the rest: exec off.
READ_ONLY = ["df -h *", "uptime", "service status *"]
EXEC = {
    "web-1": p.ExecReport(enabled=True, allow=READ_ONLY),
    "web-2": p.ExecReport(enabled=True, allow=READ_ONLY),
    "api-1": p.ExecReport(enabled=True, allow=["uptime"]),
    "db-1": p.ExecReport(enabled=True, allow=READ_ONLY),
    "backup-1": p.ExecReport(enabled=True, allow=READ_ONLY),
    "staging-1": p.ExecReport(enabled=True, allow=["*"]),
}
HISTORY = 3600.0  # seconds of backfilled history per node
STEP = 15.0
OUTAGE_NODE, OUTAGE = "api-1", (1500.0, 1320.0)  # three minutes without data, 25 minutes ago


def metrics_at(t: float, cpu: float, mem: float, disk: float, net: float, seed: int) -> mt.Metrics:
    """Plausible readings: slow waves plus noise, so charts have shape."""
    rnd = random.Random(int(t) * 31 + seed)
    wave = math.sin(t / 600 + seed) * 0.25 + math.sin(t / 97 + seed * 2) * 0.1
    c = max(1.0, min(99.0, cpu * (1 + wave) + rnd.uniform(-4, 4)))
    m = max(5.0, min(97.0, mem + wave * 6 + rnd.uniform(-1, 1)))
    total = 16 << 30
    return mt.Metrics(
        cpu_pct=c,
        cpu_per_core=[max(0.0, min(100.0, c + rnd.uniform(-10, 10))) for _ in range(8)],
        load1=c / 100 * 8 * 0.9,
        load5=c / 100 * 8 * 0.8,
        load15=c / 100 * 8 * 0.7,
        mem_total=total,
        mem_used=int(total * m / 100),
        mem_pct=m,
        swap_total=4 << 30,
        swap_used=int((4 << 30) * 0.05),
        swap_pct=5.0,
        uptime=t - (time.time() - 12 * 86400 - seed * 7200),
        procs=180 + seed * 13,
        disks=[
            mt.DiskUsage(
                mount="/", fstype="ext4", total=200 << 30, used=int((200 << 30) * disk / 100), pct=disk
            ),
            mt.DiskUsage(mount="/var/lib", fstype="xfs", total=1 << 40, used=int((1 << 40) * 0.35), pct=35.0),
        ],
        disk_read_bps=net * 0.4 * (1 + wave) + rnd.uniform(0, 1e5),
        disk_write_bps=net * 0.6 * (1 + wave) + rnd.uniform(0, 1e5),
        disk_read_iops=120.0,
        disk_write_iops=80.0,
        disk_io=[
            mt.DiskIO(
                "nvme0n1", net * 0.4 * (1 + wave) + rnd.uniform(0, 1e5), net * 0.6 * (1 + wave), 120.0, 80.0
            ),
            mt.DiskIO(
                "sdb", rnd.uniform(0, 4e5), rnd.uniform(1e5, 9e5), rnd.uniform(5, 20), rnd.uniform(20, 60)
            ),
        ],
        nets=[
            mt.NetIface(
                name="eth0",
                rx_total=10**12,
                tx_total=10**11,
                rx_bps=net * (1 + wave) + rnd.uniform(0, net * 0.1),
                tx_bps=net * 0.4 * (1 + wave) + rnd.uniform(0, net * 0.05),
            ),
            mt.NetIface(
                name="lo", rx_total=10**9, tx_total=10**9, rx_bps=2e4 + rnd.uniform(0, 5e3), tx_bps=2e4
            ),
        ],
        net_rx_bps=net * (1 + wave) + rnd.uniform(0, net * 0.1),
        net_tx_bps=net * 0.4 * (1 + wave) + rnd.uniform(0, net * 0.05),
        temps=[
            mt.Temperature("coretemp", "Package id 0", 45 + c * 0.3 + rnd.uniform(-1, 1)),
            mt.Temperature("nvme", "Composite", 38 + wave * 4),
        ],
        procs_top=procs_at(c, total, rnd),
    )


# A plausible host's busiest processes: (name, user, command line, share of the CPU, RSS share).
_PROCS = (
    ("postgres", "postgres", "postgres: checkpointer", 0.30, 0.18),
    ("python3", "www-data", "/srv/api/.venv/bin/python3 -m gunicorn api.wsgi -w 4", 0.25, 0.09),
    ("nginx", "www-data", "nginx: worker process", 0.12, 0.01),
    ("node", "app", "node /srv/web/server.js --port 3000", 0.10, 0.06),
    ("redis-server", "redis", "/usr/bin/redis-server 127.0.0.1:6379", 0.06, 0.03),
    ("servermanager-agent", "root", "/opt/servermanager/bin/servermanager agent", 0.02, 0.002),
    ("systemd-journald", "root", "/lib/systemd/systemd-journald", 0.02, 0.004),
    ("sshd", "root", "sshd: admin@pts/0", 0.01, 0.001),
)


def procs_at(cpu: float, mem_total: int, rnd: random.Random) -> list[mt.ProcInfo]:
    """The top list a real agent sends: the busiest first, with CPU, RSS and I/O rates."""
    return [
        mt.ProcInfo(
            pid=400 + i * 97,
            name=name,
            cpu_pct=round(max(0.1, cpu * share * rnd.uniform(0.7, 1.3)), 1),
            rss=int(mem_total * mem * rnd.uniform(0.95, 1.05)),
            user=user,
            read_bps=round(rnd.expovariate(1 / 40_000), 1),
            write_bps=round(rnd.expovariate(1 / 90_000), 1),
            cmd=cmd,
        )
        for i, (name, user, cmd, share, mem) in enumerate(_PROCS)
    ]


class SimNode:
    """A simulated agent on /ws/agent: enrolls, backfills an hour, then sends a sample a second."""

    def __init__(self, http: aiohttp.ClientSession, url: str, spec: Spec, seed: int) -> None:
        self.http = http
        self.url = url
        self.name, self.group, self.tags, self.cpu, self.mem, self.disk, self.net = spec
        self.seed = seed
        self.seq = 0
        self.node_id = 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        # (from, to) seconds before now with no samples: the node view shows it as a gap.
        self.outage: tuple[float, float] | None = OUTAGE if self.name == OUTAGE_NODE else None

    def _sample(self, t: float) -> mt.Sample:
        self.seq += 1
        return mt.Sample(
            seq=self.seq, ts=t, metrics=metrics_at(t, self.cpu, self.mem, self.disk, self.net, self.seed)
        )

    async def start(self, enroll_token: str) -> None:
        self.ws = await self.http.ws_connect(self.url.replace("http", "ws") + p.AGENT_WS_PATH)
        host = mt.HostFacts(
            hostname=self.name,
            os="Debian GNU/Linux",
            os_version="12 (bookworm)",
            kernel="6.1.0-28-amd64",
            arch="x86_64",
            cpu_model="AMD EPYC 7302P 16-Core Processor",
            cpu_count=8,
            mem_total=16 << 30,
            agent_version="0.1.0",
            boot_time=time.time() - 12 * 86400 - self.seed * 7200,
        )
        await self.ws.send_bytes(
            p.encode(
                p.Hello(
                    protocol=p.PROTOCOL_VERSION,
                    host=host,
                    enroll_token=enroll_token,
                    exec_policy=EXEC.get(self.name, p.ExecReport(enabled=False)),
                )
            )
        )
        welcome = p.decode(p.decoder(p.CoreToAgent), (await self.ws.receive()).data)
        assert isinstance(welcome, p.Welcome), welcome
        self.node_id = welcome.node_id
        now = time.time()
        t = now - HISTORY
        batch: list[mt.Sample] = []
        while t < now - 1:
            if not self.outage or not (now - self.outage[0] <= t < now - self.outage[1]):
                batch.append(self._sample(t))
            t += STEP
        await self.send(batch)

    async def send(self, samples: list[mt.Sample]) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(p.encode(p.Samples(samples=samples)))
        dec = p.decoder(p.CoreToAgent)
        while True:  # wait for the ack so the samples are stored before anyone looks
            frame = p.decode(dec, (await self.ws.receive()).data)
            if isinstance(frame, p.Ack):
                return
            if isinstance(frame, p.Command):
                await self.answer(frame)

    async def answer(self, cmd: p.Command) -> None:
        """Canned output for the console screenshot: a df-like table, and a warning on stderr; a
        refusal where the [exec] it reported would refuse, as a real agent does."""
        assert self.ws is not None
        report = EXEC.get(self.name, p.ExecReport(enabled=False))
        line = cmd.shell if cmd.shell is not None else " ".join(cmd.argv or [])
        why = (
            Policy(report.allow, report.deny).check(line, shell=cmd.shell is not None)
            if report.enabled
            else None
        )
        if not report.enabled or why is not None:
            message = why or "remote execution is disabled in this agent's config ([exec] enabled = false)"
            refusal = p.CommandResult(
                command_id=cmd.command_id, status="refused", message=message, duration=0.0
            )
            await self.ws.send_bytes(p.encode(refusal))
            return
        out = (
            "Filesystem      Size  Used Avail Use% Mounted on\n"
            f"/dev/sda1        80G   {int(self.disk * 0.8)}G   {80 - int(self.disk * 0.8)}G  {int(self.disk)}% /\n"
        )
        chunks = [("stdout", out)]
        if self.disk > 70:
            chunks.append(("stderr", f"warning: / is {int(self.disk)}% full\n"))
        for stream, data in chunks:
            await self.ws.send_bytes(
                p.encode(p.CommandOutput(command_id=cmd.command_id, stream=stream, data=data))  # type: ignore[arg-type]
            )
        code = 1 if self.disk > 70 else 0
        await self.ws.send_bytes(
            p.encode(
                p.CommandResult(
                    command_id=cmd.command_id,
                    status="failed" if code else "ok",
                    exit_code=code,
                    duration=0.04,
                    stdout_bytes=len(out),
                )
            )
        )

    async def run(self) -> None:
        while True:
            await self.send([self._sample(time.time())])
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def enroll_fleet(
    http: aiohttp.ClientSession, url: str, auth: dict[str, str], specs: Sequence[Spec], first_seed: int = 0
) -> list[SimNode]:
    """Enroll a simulated node per spec (each backfills its hour) and give it its group and tags."""
    async with http.post(url + "/api/v1/enroll-tokens", json={"uses": len(specs)}, headers=auth) as r:
        enroll = (await r.json())["token"]
    nodes = []
    for seed, spec in enumerate(specs, start=first_seed):
        node = SimNode(http, url, spec, seed)
        await node.start(enroll)
        async with http.patch(
            f"{url}/api/v1/nodes/{node.node_id}", json={"group": node.group, "tags": node.tags}, headers=auth
        ) as r:
            r.raise_for_status()
        nodes.append(node)
    return nodes


async def wait_for(pred: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError("screenshot set-up timed out")
        await asyncio.sleep(0.05)


async def settle(seconds: float = 0.4) -> None:
    """Let layouts, repaints and pyqtgraph's deferred updates happen before grabbing. The qasync loop
    runs Qt's events while this sleeps; QApplication.processEvents() here would run asyncio callbacks
    re-entrantly ("Cannot enter into task ... while another task is being executed"), and the task
    whose step that was never ran again (a simulated node fell silent, a load never finished)."""
    await asyncio.sleep(seconds)


# Accounts for the Users tab: name, role, disabled
USERS = [
    ("alice", "operator", False),
    ("bob", "viewer", False),
    ("carol", "admin", False),
    ("dave", "operator", True),
]
RECOVERY = ["3f9a-c2e1", "a07b-5d44", "91ce-0b8f", "6d2e-f713", "e58a-2c90",
            "0b4f-9e6d", "c7d1-48a5", "5e93-b20c", "f2a6-7d18", "84bc-e3f5"]  # fmt: skip


async def shoot_accounts(window: MainWindow, theme: str, out: Path) -> None:
    """The Users tab, Sessions and tokens, and the account dialogs."""
    view = window.open_accounts("users")
    assert view is not None
    await wait_for(lambda: view.users.loads >= 1)
    view.users.select("alice")
    await settle()
    save(window, f"users-{theme}", out)
    view.show_page("sessions")
    await wait_for(lambda: view.sessions.loads >= 1)
    await settle()
    save(window, f"sessions-{theme}", out)
    tf = window.account.two_factor()
    assert tf is not None
    await wait_for(lambda: tf.page == "off")
    tf.setup_button.click()
    await wait_for(lambda: tf.page == "setup")
    await settle()
    save(tf, f"two-factor-setup-{theme}", out)
    tf.show_codes(RECOVERY)  # as after a first code; the real ones are the core's
    await settle()
    save(tf, f"recovery-codes-{theme}", out)
    tf.reject()
    step = StepUpDialog("admin", totp=False, parent=window)
    step.show()
    await settle()
    save(step, f"step-up-{theme}", out)
    step.reject()
    password = window.account.change_password(reason=PASSWORD_REASON)
    assert password is not None
    await settle()
    save(password, f"change-password-{theme}", out)
    password.reject()
    connect = window.open_connection()
    connect.user_edit.setText("alice")
    connect.password_edit.setText("alice-password")
    connect.ask_code(OTP_REQUIRED)
    await settle()
    save(connect, f"connect-code-{theme}", out)
    connect.reject()


async def shoot_batch(window: MainWindow, node_ids: list[int], theme: str, out: Path) -> None:
    """The batch preview on the whole fleet, then its result grid."""
    window.fleet.select_nodes(node_ids)
    dialog = window.batch.open_dialog()
    assert dialog is not None
    dialog.command.setText("df -h /")
    dialog.request_preview()
    await wait_for(lambda: dialog.previews >= 1)
    await settle()
    save(dialog, f"batch-preview-{theme}", out)
    dialog.run()
    view = window.batch_views[-1]
    await wait_for(lambda: view.model.finished)
    view.table.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    view.table.selectRow(0)
    await settle()
    save(window, f"batch-{theme}", out)
    window._close_tab(window.tabs.indexOf(view))


def save(widget: QWidget, name: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    if not widget.grab().save(str(path)):
        raise RuntimeError(f"could not write {path}")
    print(f"wrote {path}")
    return path


async def start_core(data_dir: Path) -> tuple[str, web.AppRunner]:
    """A core in this process on a free loopback port: its URL and runner (cleanup() stops it)."""
    port = free_port()
    settings = msgspec.convert(
        {"data_dir": str(data_dir), "listen": f"127.0.0.1:{port}", "log_level": "WARNING"}, CoreSettings
    )
    runner = web.AppRunner(create_app(settings), handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return f"http://127.0.0.1:{port}", runner


# A second site's core, for the merged fleet: one of its nodes has the name of one of Production's.
SITE_B: list[Spec] = [
    ("web-1", "frontend", ["us", "prod"], 27.0, 52.0, 35.0, 1.9e6),
    ("shop-db", "storage", ["us", "prod"], 18.0, 79.0, 66.0, 7.0e5),
    ("mail-1", "mail", ["us"], 6.0, 38.0, 47.0, 2.1e5),
]


async def shoot_cores(window: MainWindow, http: aiohttp.ClientSession, workdir: Path, out: Path) -> None:
    """Two cores in one window (both themes), then the second one down: only its rows grey out."""
    url, runner = await start_core(workdir / "core-b")
    nodes: list[SimNode] = []
    feeders: list[asyncio.Task[None]] = []
    stopped = False
    try:
        password = initial_admin_password(workdir / "core-b")
        async with http.post(
            url + "/api/v1/auth/login", json={"username": "admin", "password": password}
        ) as r:
            auth = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
        for node in await enroll_fleet(http, url, auth, SITE_B, first_seed=len(FLEET)):
            nodes.append(node)
            feeders.append(asyncio.create_task(node.run()))
        dialog = window.core_menu.open_dialog()
        profile = Profile("Site B", url, "password", "admin", remember=False)
        ctx_b = await window.core_menu.connect_core(dialog, profile, password, remember=False)
        assert ctx_b is not None, dialog.error.text()
        await wait_for(lambda: ctx_b.live.state == LinkState.CONNECTED)
        await wait_for(lambda: window.cores.fleet.rowCount() == len(FLEET) + len(SITE_B))
        window.tabs.setCurrentIndex(0)
        window.fleet.table.clearSelection()
        for theme in ("light", "dark"):
            window.ctx.settings.set("theme", theme)
            await settle()
            save(window, f"fleet-cores-{theme}", out)
        for task in feeders:
            task.cancel()
        await runner.cleanup()
        stopped = True
        await wait_for(lambda: window.cores.fleet.problem(1) is not None, timeout=30)
        await settle()
        save(window, "fleet-core-down-" + window.ctx.settings.get("theme"), out)
    finally:
        for task in feeders:
            task.cancel()
        await asyncio.gather(*feeders, return_exceptions=True)
        await window.cores.close()
        for node in nodes:
            await node.close()
        if not stopped:
            await runner.cleanup()


async def shoot(app: QApplication, workdir: Path, out: Path, size: tuple[int, int] = (1400, 860)) -> None:
    url, runner = await start_core(workdir / "core")
    http = aiohttp.ClientSession()
    nodes: list[SimNode] = []
    feeders: list[asyncio.Task[None]] = []
    ctx: AppContext | None = None
    try:
        password = initial_admin_password(workdir / "core")
        async with http.post(
            url + "/api/v1/auth/login", json={"username": "admin", "password": password}
        ) as r:
            admin = (await r.json())["access_token"]
        auth = {"Authorization": f"Bearer {admin}"}
        nodes += await enroll_fleet(http, url, auth, FLEET)
        for node in nodes:
            if node.name in OFFLINE:
                await node.close()
            else:
                feeders.append(asyncio.create_task(node.run()))

        ctx = AppContext.create(app, QSettings(str(workdir / "desktop.ini"), QSettings.Format.IniFormat))
        window = MainWindow(ctx)
        window.resize(*size)
        window.show()
        await ctx.signin.sign_in(Profile("Production", url, "password", "admin"), password, remember=False)
        await wait_for(lambda: ctx is not None and ctx.live.state == LinkState.CONNECTED)
        await wait_for(lambda: ctx is not None and ctx.live.latency_ms is not None)
        window.fleet.table.sortByColumn(
            ctx.model.column("name"), window.fleet.table.horizontalHeader().sortIndicatorOrder()
        )
        web1 = next(n for n in nodes if n.name == "api-1")
        # An alert rule that the busiest node trips, so the Alerting pages have something to show.
        rule = {"name": "CPU busy", "metric": "cpu_pct", "threshold": 50, "clear_threshold": 45,
                "critical_threshold": 95, "for": "5s", "targets": {"all": True}}  # fmt: skip
        async with http.post(url + "/api/v1/alert-rules", json=rule, headers=auth) as r:
            r.raise_for_status()
        silence = {"group": "ci", "duration": "4h", "comment": "runner image upgrade"}
        async with http.post(url + "/api/v1/silences", json=silence, headers=auth) as r:
            r.raise_for_status()
        for name, role, disabled in USERS:
            user = {"name": name, "password": f"{name}-password", "role": role}
            async with http.post(url + "/api/v1/users", json=user, headers=auth) as r:
                r.raise_for_status()
                uid = (await r.json())["id"]
            async with http.post(
                url + "/api/v1/auth/login", json={"username": name, "password": user["password"]}
            ) as r:
                r.raise_for_status()
            if disabled:
                async with http.patch(
                    f"{url}/api/v1/users/{uid}", json={"disabled": True}, headers=auth
                ) as r:
                    r.raise_for_status()
        # These nodes were enrolled a moment ago, so a node view would open live; the backfilled
        # hour is what the screenshot shows, as if the user had picked it.
        ctx.settings.set("chart_range", "1h")
        for theme in ("light", "dark"):
            ctx.settings.set("theme", theme)
            window.tabs.setCurrentIndex(0)
            window.fleet.select_node(web1.node_id)
            await settle()
            save(window, f"fleet-{theme}", out)
            palette = window.open_palette()
            palette.filter.setText("web")
            await settle()
            save(palette, f"palette-{theme}", out)
            palette.close()
            view = window.open_node(web1.node_id)
            await wait_for(lambda: view.history_loads >= 1)  # noqa: B023 - awaited right here
            await settle(0.8)
            save(window, f"node-{theme}", out)
            # The Processes and Devices tabs of the same node, each loaded when first shown.
            view.sections.setCurrentWidget(view.processes)
            await wait_for(lambda: view.processes.loads >= 1)  # noqa: B023 - awaited right here
            await settle()
            save(window, f"node-processes-{theme}", out)
            view.sections.setCurrentWidget(view.devices)
            await wait_for(lambda: view.devices.chart_loads >= 1)  # noqa: B023 - awaited right here
            await settle(0.8)
            save(window, f"node-devices-{theme}", out)
            view.sections.setCurrentWidget(view.charts_box)
            window.close_node(view.node_id)
            # Compare: the frontend nodes' CPU over the same hour on one chart.
            window.fleet.select_nodes([n.node_id for n in nodes if n.group == "frontend"])
            compare = window.open_compare()
            assert compare is not None
            compare.select_range(preset("1h"))
            loads = compare.history_loads
            await wait_for(lambda: compare.history_loads > loads)  # noqa: B023 - awaited right here
            await settle(0.8)
            save(window, f"compare-{theme}", out)
            window._close_tab(window.tabs.indexOf(compare))
            alerting = window.open_alerting()
            assert alerting is not None
            page = alerting.alerts
            loads = page.loads
            page.filter.setCurrentIndex(len(FILTERS) - 1)  # "All": a random walk may resolve it
            page.refresh()
            await wait_for(lambda: page.loads > loads and page.model.rowCount() > 0, timeout=30)  # noqa: B023
            page.table.selectRow(0)
            await wait_for(lambda: "Transitions:" in page.detail.toPlainText())  # noqa: B023
            await settle()
            save(window, f"alerts-{theme}", out)
            alerting.show_page("rules")
            await wait_for(lambda: alerting.rules.loads >= 1)  # noqa: B023
            await settle()
            save(window, f"rules-{theme}", out)
            alerting.show_page("alerts")
            await shoot_accounts(window, theme, out)
            await shoot_batch(window, [n.node_id for n in nodes], theme, out)
        storage = [n.node_id for n in nodes if n.group == "storage"]
        window.fleet.select_nodes(storage)
        console = window.open_console()
        assert console is not None
        console.command.setText("df -h /")
        console.run()
        await wait_for(lambda: not console.running and console.command_id is not None)
        console.tabs.setCurrentIndex(len(storage) - 1)
        console.command.setText("uptime")
        await settle()
        save(window, "console-" + ctx.settings.get("theme"), out)
        dialog = window.open_connection()
        await settle()
        save(dialog, "connect-" + ctx.settings.get("theme"), out)
        dialog.reject()
        settings_dialog = window.open_settings()
        await settle()
        save(settings_dialog, "settings-" + ctx.settings.get("theme"), out)
        settings_dialog.close()
        await shoot_cores(window, http, workdir, out)
        window._quitting = True
        window.close()
    finally:
        for task in feeders:
            task.cancel()
        await asyncio.gather(*feeders, return_exceptions=True)
        if ctx is not None:
            await ctx.close()
        for node in nodes:
            await node.close()
        await http.close()
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the PNGs go (default {OUT})")
    parser.add_argument("--size", default="1400x860", help="window size WxH (default 1400x860)")
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size: expected WxH such as 1024x640, got {args.size!r}")
    app = make_app()
    with (
        tempfile.TemporaryDirectory(prefix="sm-shots-") as tmp,
        asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner,
    ):
        runner.run(shoot(app, Path(tmp), args.out, (width, height)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
