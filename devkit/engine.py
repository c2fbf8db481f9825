"""A real container engine for tests and demos: Podman's Docker-compatible API service on a socket in
a throwaway directory, with its own storage (vfs) and a busybox image made from /bin/busybox, so
nothing is pulled from a registry and nothing of the host's own containers is touched.

Needs root, `podman` and a static busybox (Debian: podman runc busybox-static). `Podman.why_not()`
says what is missing, for a test's skip reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

IMAGE = "localhost/sm-busybox:latest"
BUSYBOX = ("/bin/busybox", "/usr/bin/busybox")
# runc, not crun: crun refuses this machine kind's hybrid cgroup v1 layout. The limits: the
# runtime may not raise them above the host's own (no CAP_SYS_RESOURCE here), and the defaults do.
_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "{runtime}"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
_STORAGE = """\
[storage]
driver = "vfs"
graphroot = "{root}/graph"
runroot = "{root}/run"
"""


def _busybox() -> str | None:
    return next((b for b in BUSYBOX if os.path.isfile(b)), None)


class Podman:
    """`start()` runs `podman system service` on `socket`; `run(...)` starts containers; `stop()`
    removes them all and ends the service."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = str(root / "podman.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        runtime = "runc" if shutil.which("runc") else "crun"
        (root / "containers.conf").write_text(_CONF.format(runtime=runtime))
        (root / "storage.conf").write_text(_STORAGE.format(root=root))
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
        }

    @classmethod
    @contextlib.contextmanager
    def throwaway(cls) -> Iterator[Podman]:
        """A started engine in a new temporary directory; stopped, and the directory removed, after."""
        root = Path(tempfile.mkdtemp(prefix="sm-podman-"))
        engine = cls(root)
        try:
            engine.start()
            yield engine
        finally:
            engine.stop()
            _remove(root)

    @staticmethod
    def why_not() -> str | None:
        """Why no engine can run here, or None."""
        if shutil.which("podman") is None:
            return "podman is not installed (apt-get install podman runc busybox-static)"
        if os.geteuid() != 0:
            return "rootful podman needs root"
        if _busybox() is None:
            return "no static busybox to build the test image from (apt-get install busybox-static)"
        return None

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=120, check=check
        )

    def start(self) -> None:
        bb = _busybox()
        assert bb is not None
        rootfs = self.root / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        for d in ("tmp", "proc", "sys", "dev", "etc"):
            (rootfs / d).mkdir()
        shutil.copy2(bb, rootfs / "bin" / "busybox")
        for applet in ("sh", "sleep", "cat", "echo", "yes", "dd", "true", "head"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        tar = self.root / "rootfs.tar"
        with tarfile.open(tar, "w") as t:
            t.add(rootfs, arcname=".")
        self.podman("import", "--change", 'CMD ["/bin/sh"]', str(tar), IMAGE)
        log = open(self.root / "service.log", "wb")  # noqa: SIM115 - the service's for its life
        self.proc = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 30
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not start: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        p = self.root / "service.log"
        return p.read_text(errors="replace")[-2000:] if p.exists() else ""

    def run(self, name: str, *command: str, health: bool = False) -> str:
        """Start a detached container of the busybox image; its id."""
        extra = ["--health-cmd", "true"] if health else []
        done = self.podman("run", "-d", "--name", name, "--network", "none", *extra, IMAGE, *command)
        if health:
            # No systemd timer runs health checks here: one run sets the status.
            self.podman("healthcheck", "run", name, check=False)
        return done.stdout.strip()

    def stop(self) -> None:
        self.podman("rm", "-a", "-f", "-t", "0", check=False)
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


def _remove(root: Path, timeout: float = 10.0) -> None:
    """Remove the engine's directory. Podman's cleanup processes can still be removing image layers
    under it for a moment after the service has stopped ("Directory not empty" in full test runs):
    try again until it goes, and leave what is left after `timeout` rather than fail a test on it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            shutil.rmtree(root)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                shutil.rmtree(root, ignore_errors=True)
                return
            time.sleep(0.1)
