"""Runs the agent's [[custom]], [[scrape]] and [[check]] entries, each in its own task, and keeps their last results.

The sampler never waits for them: each sample takes the latest good values (points()) and every
entry's status (statuses()). A run that hangs, floods or prints garbage costs its own entry only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from servermanager.agent.plugins.checks import PING_COMMAND, CheckResult, ping_method, run_check
from servermanager.agent.plugins.config import CheckSettings, CustomSettings, ScrapeSettings
from servermanager.agent.plugins.parse import parse
from servermanager.common.series import MAX_PLUGIN_ERROR, MAX_SERIES_POINTS, PluginStatus, SeriesPoint

log = logging.getLogger(__name__)

# stderr kept for the error text of a failed run; the rest is read and dropped.
MAX_STDERR = 4096


class RunFailed(Exception):
    """A run that gave nothing usable; the message is the entry's error."""


@dataclass
class _Entry:
    name: str
    kind: str  # custom | scrape | check
    interval: float
    timeout: float
    run: Callable[[], Awaitable[tuple[list[SeriesPoint], int, str | None]]]  # points, bad lines, note
    points: tuple[SeriesPoint, ...] = ()
    status: PluginStatus | None = None


async def _drain(stream: asyncio.StreamReader, keep: int, limit: int | None = None) -> bytes:
    """Read to EOF keeping the first `keep` bytes; RunFailed once more than `limit` arrived."""
    out = bytearray()
    total = 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        if limit is not None and total > limit:
            raise RunFailed(f"printed over {limit} bytes of output; killed")
        if len(out) < keep:
            out += chunk[: keep - len(out)]
    return bytes(out)


async def run_command(argv: list[str], timeout: float, max_output: int) -> str:
    """The command's stdout, or RunFailed: timed out, too much output, or a non-zero exit.

    Runs without a shell in a new session; whatever the outcome, its process group is killed
    before this returns, so a plugin's leftover children cannot pile up.
    """
    # Imported here: an agent without [[custom]] entries (and [exec] off) never loads exec code.
    from servermanager.agent.exec.subproc import OWN_CHILDREN, kill_group_now, new_group_kwargs, wait_exit

    try:
        proc = await OWN_CHILDREN.spawn(
            lambda: asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                **new_group_kwargs(),
            )
        )
    except OSError as exc:
        raise RunFailed(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    assert proc.stdout is not None and proc.stderr is not None
    reads = [
        asyncio.ensure_future(_drain(proc.stdout, max_output, max_output)),
        asyncio.ensure_future(_drain(proc.stderr, MAX_STDERR)),
    ]
    try:
        async with asyncio.timeout(timeout):
            out, err = await asyncio.gather(*reads)
            rc = await proc.wait()
    except TimeoutError:
        raise RunFailed(f"timed out after {timeout:g}s; killed with its process group") from None
    finally:
        kill_group_now(proc)  # the whole group, ended or not: whatever it left running goes too
        # Its pipes reach EOF once the group is gone; then asyncio can close them cleanly.
        await asyncio.wait(reads, timeout=2)
        for r in reads:
            r.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
        with contextlib.suppress(Exception):
            # A reader that stopped at the output limit left its pipe paused; read it to EOF
            # so that its transport closes.
            async with asyncio.timeout(2):
                for stream in (proc.stdout, proc.stderr):
                    while await stream.read(65536):
                        pass
        with contextlib.suppress(Exception):
            await wait_exit(proc, timeout=2)
            async with asyncio.timeout(2):
                await proc.wait()
        OWN_CHILDREN.release(proc)
    if rc != 0:
        said = err.decode("utf-8", errors="replace").strip().splitlines()
        raise RunFailed(f"exited with status {rc}" + (f": {said[-1][:200]}" if said else ""))
    return out.decode("utf-8", errors="replace")


async def fetch_url(url: str, timeout: float, max_output: int) -> str:
    """GET a loopback metrics endpoint; RunFailed for anything but a 200 within the limits."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                raise RunFailed(f"{url} answered status {resp.status}")
            body = await resp.content.read(max_output + 1)
    except TimeoutError:
        raise RunFailed(f"no answer from {url} within {timeout:g}s") from None
    except aiohttp.ClientError as exc:
        raise RunFailed(f"cannot scrape {url}: {exc}") from None
    if len(body) > max_output:
        raise RunFailed(f"{url} sent over {max_output} bytes")
    return body.decode("utf-8", errors="replace")


def _check_points(name: str, r: CheckResult) -> list[SeriesPoint]:
    labels = {"check": name}
    pts = [SeriesPoint("check_up", 1.0 if r.up else 0.0, labels)]
    if r.latency is not None:
        pts.append(SeriesPoint("check_latency_seconds", round(r.latency, 6), labels, "s"))
    if r.status is not None:
        pts.append(SeriesPoint("check_http_status", float(r.status), labels))
    if r.cert_days_left is not None:
        pts.append(SeriesPoint("check_cert_days_left", r.cert_days_left, labels, "d"))
    return pts


class PluginHub:
    """The entries of one agent's config: start with run(), read with points() and statuses()."""

    def __init__(
        self,
        custom: list[CustomSettings],
        scrape: list[ScrapeSettings],
        check: list[CheckSettings],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self.entries: list[_Entry] = []
        # Decided at start, so a ping check that cannot run here is a precise error then.
        self.ping = ping_method() if any(c.type == "ping" for c in check) else None
        for c in custom:
            self.entries.append(_Entry(c.name, "custom", c.interval, c.timeout or 0, self._custom_run(c)))
        for s in scrape:
            self.entries.append(_Entry(s.name, "scrape", s.interval, s.timeout or 0, self._scrape_run(s)))
        for k in check:
            self.entries.append(_Entry(k.name, "check", k.interval, k.timeout or 0, self._check_run(k)))
        self._cut_logged = False

    def __bool__(self) -> bool:
        return bool(self.entries)

    # ------------------------------------------------------------ each kind's run

    def _custom_run(
        self, c: CustomSettings
    ) -> Callable[[], Awaitable[tuple[list[SeriesPoint], int, str | None]]]:
        async def run() -> tuple[list[SeriesPoint], int, str | None]:
            text = await run_command(c.command, c.timeout or 0, c.max_output)
            p = parse(text)
            return p.points, p.bad, p.first_bad

        return run

    def _scrape_run(
        self, s: ScrapeSettings
    ) -> Callable[[], Awaitable[tuple[list[SeriesPoint], int, str | None]]]:
        allow = frozenset(s.metrics) if s.metrics else None

        async def run() -> tuple[list[SeriesPoint], int, str | None]:
            text = await fetch_url(s.url, s.timeout or 0, s.max_output)
            p = parse(text, allow=allow)
            return p.points, p.bad, p.first_bad

        return run

    def _check_run(
        self, k: CheckSettings
    ) -> Callable[[], Awaitable[tuple[list[SeriesPoint], int, str | None]]]:
        async def run() -> tuple[list[SeriesPoint], int, str | None]:
            r = await run_check(k, self.ping)
            if not r.up:
                # A down check still has series (check_up 0, its latency if it answered).
                raise _Down(_check_points(k.name, r), r.error or "down")
            return _check_points(k.name, r), 0, None

        return run

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        """Every entry on its own schedule until cancelled."""
        if not self.entries:
            return
        if self.ping == PING_COMMAND:
            log.info("ping checks run the system's ping program (no ICMP socket is allowed to the agent)")
        tasks = [asyncio.create_task(self._loop(e), name=f"plugin-{e.kind}-{e.name}") for e in self.entries]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                # gather() cancelled them already when it was: a second cancel would interrupt
                # the cleanup that kills a running plugin's process group.
                if not t.done() and not t.cancelling():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, e: _Entry) -> None:
        next_at = time.monotonic()
        while True:
            await self.run_once(e)
            next_at += e.interval
            now = time.monotonic()
            if next_at <= now:  # a run longer than the interval: skip the missed ticks
                next_at = now + e.interval
            await asyncio.sleep(next_at - now)

    async def run_once(self, e: _Entry) -> None:
        """One run of `e`, its outcome recorded; never raises but for cancellation."""
        points: list[SeriesPoint] = []
        bad, note, error = 0, None, None
        try:
            # A backstop over each kind's own timeout: nothing an entry does can hold its task.
            async with asyncio.timeout(e.timeout + 5):
                points, bad, note = await e.run()
        except _Down as down:
            points, error = down.points, down.error
        except RunFailed as exc:
            error = str(exc)
        except TimeoutError:
            error = f"timed out after {e.timeout:g}s"
        except Exception as exc:  # a fault in one entry must not end the others
            log.exception("%s %r failed", e.kind, e.name)
            error = f"internal error: {exc!r}"
        if error is None and bad:
            error = f"{bad} line(s) could not be read, first: {note!r}"
        ok = error is None or (bad > 0 and bool(points) and e.kind != "check")
        if e.kind != "check":
            points = [*points, SeriesPoint("plugin_up", 1.0 if ok else 0.0, {"plugin": e.name})]
        status = PluginStatus(
            name=e.name,
            kind=e.kind,
            ok=ok,
            error=error[:MAX_PLUGIN_ERROR] if error else None,
            bad_lines=bad,
            last_run=round(self._clock(), 3),
        )
        prev = e.status
        if prev is None or prev.ok != status.ok or prev.error != status.error:
            if status.ok and status.error is None:
                if prev is not None:
                    log.info("%s %r is back: %d series point(s)", e.kind, e.name, len(points))
            else:
                log.warning("%s %r: %s", e.kind, e.name, status.error)
        e.points = tuple(points)
        e.status = status

    # ------------------------------------------------------------ what a sample takes

    def points(self) -> list[SeriesPoint]:
        """Every entry's latest points, statuses (plugin_up, check_up) first, cut to the sample's bound."""
        first = [p for e in self.entries for p in e.points if p.name in ("plugin_up", "check_up")]
        rest = [p for e in self.entries for p in e.points if p.name not in ("plugin_up", "check_up")]
        out = first + rest
        if len(out) > MAX_SERIES_POINTS:
            if not self._cut_logged:
                log.warning(
                    "plugins made %d series points; a sample carries %d, the rest are left out",
                    len(out),
                    MAX_SERIES_POINTS,
                )
                self._cut_logged = True
            out = out[:MAX_SERIES_POINTS]
        return out

    def statuses(self) -> list[PluginStatus]:
        return [e.status for e in self.entries if e.status is not None]


class _Down(Exception):
    def __init__(self, points: list[SeriesPoint], error: str) -> None:
        super().__init__(error)
        self.points, self.error = points, error
