"""The agent daemon: a sampler filling the spool, a link draining it, a runner for commands; and main()."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from servermanager.agent.collectors import MetricsCollector
from servermanager.agent.credentials import CredentialStore, StateDirError, ensure_state_dir
from servermanager.agent.exec import make_runner
from servermanager.agent.exec.outbox import Runner
from servermanager.agent.hostfacts import agent_version, host_facts
from servermanager.agent.incident import Snapshots
from servermanager.agent.link.connection import AgentError, Connection, ConnState
from servermanager.agent.logread.service import LogService
from servermanager.agent.plugins.hub import PluginHub
from servermanager.agent.settings import AgentSettings
from servermanager.agent.spool import SPOOL_FILE, Spool
from servermanager.agent.stats import Pulse, Stats
from servermanager.common import logs
from servermanager.common.metrics import HostFacts, Metrics, Sample
from servermanager.common.settings import SettingsError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FATAL = 2  # auth refused, protocol mismatch, unusable settings or state dir
# How long stopping waits for a sample under way (seconds) before leaving its thread behind.
SAMPLER_JOIN_TIMEOUT = 10.0


class SupportsCollect(Protocol):
    def collect(self) -> Metrics: ...


class Agent:
    """One agent: construct (checks the state dir, opens the spool), `await run()`, `stop()`, `close()`.

    Meant to be driven in-process by tests as well as by main(): `wait_state()` and
    `wait_until()` replace sleeps, `stats` counts samples spooled, sent and acknowledged.
    """

    def __init__(
        self,
        settings: AgentSettings,
        enroll_token: str | None = None,
        *,
        collector: SupportsCollect | None = None,
        facts: HostFacts | None = None,
    ) -> None:
        self.settings = settings
        state_dir = ensure_state_dir(settings.state_dir)
        self._store = CredentialStore(state_dir)
        credentials = self._store.load()
        self._spool = Spool(state_dir / SPOOL_FILE, settings.spool_max_samples)
        # Background polls of the container engine and the hardware: the samples take their
        # newest lists and never wait for them.
        self.containers = settings.containers.watcher()
        self.hardware = settings.hardware.watcher()
        try:
            # Built (and primed) now, so the first sample one interval after start has real rates.
            self._collector: SupportsCollect = collector or MetricsCollector(
                host_root=settings.host_root,
                processes=settings.processes.collector(),
                containers=self.containers.take if self.containers is not None else None,
                hardware=self.hardware.take if self.hardware is not None else None,
            )
            facts = facts or host_facts()
        except BaseException:
            self._spool.close()
            raise
        try:
            # Named series from [[custom]], [[scrape]] and [[check]]: each entry runs in its own task.
            self.plugins = PluginHub(settings.custom, settings.scrape, settings.check)
        except BaseException:
            self._spool.close()  # a ping check that cannot run here: SettingsError, exit 2
            raise
        self.stats = Stats()
        self._pulse = Pulse()
        # Remote operations: the runner answers every command frame, refusing them all unless
        # [exec] enables and allows them. With [exec] disabled it is a RefusingRunner, and the
        # executing code is never imported. The link only hands it frames and drains its outbox.
        # With trusted keys it runs only signed requests naming this node (the one it was enrolled
        # as); a missing credential file means a fresh enrollment, which may name a new node.
        try:
            self._runner: Runner = make_runner(
                settings.exec,
                max_frame_bytes=settings.max_frame_bytes,
                on_change=self._pulse.fire,
                state_dir=state_dir,
                node_id=lambda: self._conn.node_id,
                fresh_enrollment=credentials is None,
            )
        except BaseException:
            self._spool.close()  # unreadable trusted keys: SettingsError, exit 2
            raise
        # Snapshots for the core when an alert fires: read-only, bounded, refused if [incident] is off.
        self.snapshots = Snapshots(settings.incident)
        # Logs for the node view: read-only, only what [logs] allowlists; works with [exec] off.
        self.logs = LogService(
            settings.logs, max_frame_bytes=settings.max_frame_bytes, containers=self.containers
        )
        self._conn = Connection(
            settings,
            self._spool,
            self._store,
            facts,
            credentials=credentials,
            enroll_token=enroll_token,
            outbox=self._runner.outbox,
            dispatch=self._runner.handle,
            incident=self.snapshots.answer,
            logs=self.logs,
            stats=self.stats,
            pulse=self._pulse,
        )
        self._ran = False

    # ------------------------------------------------------------ observation

    @property
    def state(self) -> ConnState:
        return self._conn.state

    @property
    def node_id(self) -> int | None:
        return self._conn.node_id

    @property
    def commands(self) -> Runner:
        """The remote-operations runner: running ids, counters, and its outbox.

        A CommandRunner (exec.runner) with [exec] enabled, else a RefusingRunner.
        """
        return self._runner

    @property
    def spool(self) -> Spool:
        return self._spool

    @property
    def interval(self) -> float:
        """The sampling interval in force: the setting, or what the core's welcome asked for."""
        return self._conn.interval

    @property
    def url(self) -> str:
        return self._conn.url

    async def wait_state(self, *states: ConnState) -> ConnState:
        """Return once the connection is in one of `states`; StateWaitError if it ends elsewhere."""
        return await self._conn.wait_state(*states)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once predicate() holds; re-checked after every sample, batch, ack and transition.

        Bound it with `async with asyncio.timeout(...)`.
        """
        await self._pulse.wait_until(predicate)

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Sample and stream until stop(); raises AgentError (exit 2) if the core refuses us."""
        if self._ran:
            raise RuntimeError("Agent.run() can only be called once; build a new Agent")
        self._ran = True
        log.info(
            "agent %s starting: core %s, state dir %s, interval %gs, %d sample(s) spooled",
            agent_version(),
            self._conn.url,
            self.settings.state_dir,
            self.interval,
            self._spool.count(),
        )
        if self.settings.exec.enabled:
            log.info(
                "remote execution enabled: %d allow and %d deny pattern(s)%s",
                len(self.settings.exec.allow),
                len(self.settings.exec.deny),
                f", commands run as {self.settings.exec.user}" if self.settings.exec.user else "",
            )
        inc = self.settings.incident
        log.info(
            "incident snapshots %s",
            f"on: top {inc.top}, command lines {'shown' if inc.cmdline else 'hidden'}, journal "
            + (f"up to {inc.journal_lines} lines" if inc.journal else "off")
            if inc.enabled
            else "off",
        )
        lg = self.settings.logs
        log.info(
            "logs: journal %s, %d allowlisted file pattern(s)",
            "on" if lg.journal else "off",
            len(lg.files),
        )
        if self.plugins:
            log.info(
                "plugins: %d custom, %d scrape, %d check",
                len(self.settings.custom),
                len(self.settings.scrape),
                len(self.settings.check),
            )
        sampler = asyncio.create_task(self._sampler(), name="agent-sampler")
        polls = [
            asyncio.create_task(w.run(), name=f"agent-{name}")
            for name, w in (("containers", self.containers), ("hardware", self.hardware))
            if w is not None
        ]
        polls.append(asyncio.create_task(self.plugins.run(), name="agent-plugins"))
        try:
            await self._conn.run()
        finally:
            for task in (sampler, *polls):
                task.cancel()
            await asyncio.gather(sampler, *polls, return_exceptions=True)
            # Running commands are killed (group SIGTERM, then SIGKILL) rather than orphaned.
            await self._runner.shutdown()

    def stop(self) -> None:
        """Ask run() to finish: closes the socket with 1001 and stops sampling. Idempotent."""
        self._conn.stop()

    def close(self) -> None:
        """Close the spool cleanly (after run() returned). Idempotent."""
        self._spool.close()

    # ------------------------------------------------------------ sampling

    async def _sampler(self) -> None:
        """Sample on a monotonic schedule (tick n at start + n*interval), whatever the connection
        does, in a thread of its own (_sampling): it wakes on its own timer, reads the host and
        spools the reading, and wakes the event loop once, to send it. A thread pool would cost
        the loop a timer, a hand-over and a completion every second; blocking reads (a hung
        network mount) stall this thread only. This task relays interval changes to it."""
        loop = asyncio.get_running_loop()
        conn = self._conn
        halt = threading.Event()  # set: sample no more
        rephase = threading.Event()  # set: wake early, the interval changed (or halt)
        thread = threading.Thread(
            target=self._sampling, args=(loop, halt, rephase), name="agent-sampler", daemon=True
        )
        thread.start()
        try:
            while True:
                await conn.interval_changed.wait()
                conn.interval_changed.clear()
                rephase.set()
        finally:
            halt.set()
            rephase.set()
            # A sample under way finishes (spooled whole) before the spool may close; one stuck in
            # a hung read is left behind after a while, as a daemon thread.
            await asyncio.shield(asyncio.to_thread(thread.join, SAMPLER_JOIN_TIMEOUT))

    def _sampling(
        self, loop: asyncio.AbstractEventLoop, halt: threading.Event, rephase: threading.Event
    ) -> None:
        """The sampling thread: the schedule of _sampler, one sample per tick, until halt."""
        conn = self._conn
        last_tick = time.monotonic()
        next_at = last_tick + conn.interval
        while not halt.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and rephase.wait(delay):
                rephase.clear()
                # The core asked for another interval (or we halt): keep the phase of the last tick.
                next_at = last_tick + conn.interval
                continue
            if halt.is_set() or not self._take_sample(loop):
                return
            interval = conn.interval
            last_tick = next_at
            next_at += interval
            now = time.monotonic()
            if next_at <= now:
                # Suspended or starved: skip the missed ticks instead of firing a burst of them.
                missed = int((now - next_at) // interval) + 1
                next_at += missed * interval
                log.warning("sampling fell %d interval(s) behind; skipped them", missed)

    def _collect_and_spool(self, ts: float) -> Sample:
        """Read the host and spool the reading (blocking: the sampling thread's work)."""
        metrics = self._collector.collect()
        if self.plugins:
            # The last results of each plugin entry (each replaced whole by its run, so a snapshot
            # read from this thread): a plugin still running is never waited for.
            metrics = msgspec.structs.replace(
                metrics, series=self.plugins.points(), plugins=self.plugins.statuses()
            )
        return self._spool.append(ts, metrics)

    def _take_sample(self, loop: asyncio.AbstractEventLoop) -> bool:
        """One sample, reported to the loop; False once the loop is gone."""
        ts = time.time()
        try:
            sample = self._collect_and_spool(ts)
        except Exception as exc:
            done: Callable[[], None] = functools.partial(self._sample_failed, exc)
        else:
            done = functools.partial(self._sampled, sample.seq)
        try:
            loop.call_soon_threadsafe(done)
        except RuntimeError:
            return False  # the loop closed: the agent is stopping
        return True

    def _sampled(self, seq: int) -> None:
        self.stats.samples_spooled += 1
        log.debug("spooled sample seq %d", seq)
        self._conn.notify_new_samples()
        self._pulse.fire()

    def _sample_failed(self, exc: Exception) -> None:
        # One lost tick is better than a dead sampler; the error says which part failed.
        self.stats.sample_errors += 1
        log.error("sampling failed: %r", exc)


# ---------------------------------------------------------------- process entry points


def setup_logging(level: str) -> None:
    """One line per event on stderr, unless the embedding program configured logging already."""
    logs.setup(level)
    # The agent's own loggers follow log_level even when the embedding program set up the root.
    logging.getLogger("servermanager.agent").setLevel(level.upper())


async def _run_until_signal(agent: Agent) -> None:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s, shutting down", sig.name)
        agent.stop()

    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
            except NotImplementedError:
                # Windows event loops have no add_signal_handler; route the C-level handler instead.
                signal.signal(sig, lambda s, _f: loop.call_soon_threadsafe(on_signal, signal.Signals(s)))
    # Elsewhere (an agent embedded in a worker thread) signals belong to the host program,
    # which stops the agent through Agent.stop().
    try:
        await agent.run()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(settings: AgentSettings, enroll_token: str | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT (0); auth refusal or unusable state dir gives 2."""
    setup_logging(settings.log_level)
    try:
        agent = Agent(settings, enroll_token)
    except (StateDirError, SettingsError) as exc:
        log.error("%s", exc)
        return EXIT_FATAL
    except (sqlite3.Error, OSError) as exc:
        log.error("cannot open the spool in %s: %s", settings.state_dir, exc)
        return EXIT_FATAL
    try:
        asyncio.run(_run_until_signal(agent))
    except AgentError as exc:
        log.error("%s", exc)
        return exc.exit_code
    finally:
        agent.close()
    log.info("agent stopped cleanly")
    return EXIT_OK
