"""Real daemons in subprocesses, for what only a separate process can show (kill -9, SIGTERM, exit codes)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from devkit.ports import free_port
from servermanager.core.datadir import initial_admin_password
from tests.helpers.wait import wait_sync

CLI = [sys.executable, "-m", "servermanager"]


def cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)


class Daemon:
    """A `servermanager` daemon in a subprocess, its output in a log file."""

    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class PortTaken(AssertionError):
    """The core could not listen: another process took its port first."""


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` has a TCP socket listening on `port`."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns)


class CoreProcess(Daemon):
    """`servermanager core` on a loopback port, its log captured to a file.

    host: the address it binds (it is always reached through 127.0.0.1); tls: it serves HTTPS, so
    `url` says https and requests trust its certificate without checking it (tests pin it apart).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        tls: bool = False,
        args: tuple[str, ...] = (),
        command: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.data_dir = data_dir
        self.command = list(command) or CLI  # another install's `servermanager` (the .deb's, say)
        self.port = port or free_port()
        self._own_port = port is None  # chosen here, so another can be chosen if it was taken meanwhile
        self.host = host
        self.tls = tls
        self.args = args
        self.env = {**os.environ, "SM_CORE_FLUSH_EVERY": "0.01", "SM_CORE_AGENT_INTERVAL": "1", **env}
        self.log_path = data_dir.parent / f"core-{self.port}.log"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def start(self) -> CoreProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            listen = f"{self.host}:{self.port}"
            with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
                self.proc = subprocess.Popen(
                    [*self.command, "core", "--data-dir", str(self.data_dir), "--listen", listen, *self.args],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                )
            try:
                wait_sync(self.healthy, what="core health")
                return self
            except PortTaken:
                # free_port() chose it when the fixture was made; on a busy test run another
                # worker's server can bind it before this core starts. Any other failure is the test's.
                if not self._own_port or attempt == 2:
                    raise
                self.port = free_port()
                self.log_path = self.data_dir.parent / f"core-{self.port}.log"
        raise AssertionError("unreachable")

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            log = self.log()
            if "the port is in use" in log:
                raise PortTaken(f"core exited with {self.proc.returncode}:\n{log}")
            raise AssertionError(f"core exited with {self.proc.returncode}:\n{log}")
        # Only this core's own listener counts: another worker's server on the same port would
        # answer the health check too, then vanish under the test.
        if not _listens(self.proc.pid, self.port):
            return False
        try:
            with urllib.request.urlopen(self.url + "/api/v1/health", timeout=1, context=self._context()) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def api(self, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10, context=self._context()) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def admin_token(self) -> str:
        password = initial_admin_password(self.data_dir)
        status, body = self.api(
            "POST", "/api/v1/auth/login", body={"username": "admin", "password": password}
        )
        assert status == 200, body
        return str(body["access_token"])


class AgentProcess(Daemon):
    """`servermanager agent` with its own state dir."""

    def __init__(
        self,
        core_url: str,
        state_dir: Path,
        token: str | None = None,
        interval: float = 1.0,
        command: tuple[str, ...] = (),
    ) -> None:
        self.state_dir = state_dir
        self.env = {**os.environ, "SM_AGENT_BACKOFF_INITIAL": "0.2", "SM_AGENT_BACKOFF_MAX": "1"}
        if token:
            self.env["SM_AGENT_ENROLL_TOKEN"] = token
        self.args = [
            *(list(command) or CLI),
            "agent",
            "--core",
            core_url,
            "--state-dir",
            str(state_dir),
            "--interval",
            str(interval),
        ]
        self.log_path = state_dir.parent / f"agent-{state_dir.name}.log"

    def start(self, uid: int | None = None) -> AgentProcess:
        """uid: run as that (unprivileged) user; the caller must be root."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                user=uid,
                group=uid,
                extra_groups=[] if uid is not None else None,
            )
        return self
