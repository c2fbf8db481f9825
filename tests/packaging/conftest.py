"""The .debs, built once per run (cached by source hash in .cache/build), and a throwaway root they go into."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from servermanager.common import __version__

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "build"
# Building (pip from PyPI, bytecode, xz) takes a minute or two on a busy 2-CPU machine, once.
BUILD_TIMEOUT = 900


def need(tool: str, package: str) -> str:
    """The tool's path; fail (never skip) without it: .ci/run installs it."""
    found = shutil.which(tool)
    if not found:
        pytest.fail(f"{tool} is needed for the packaging tests (Debian: apt-get install {package})")
    return found


@dataclass(frozen=True)
class Debs:
    core: Path
    agent: Path
    arch: str

    @property
    def both(self) -> list[Path]:
        return [self.core, self.agent]


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Debs:
    need("dpkg-deb", "dpkg")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "packaging" / "build.py"),
            "--only",
            "deb",
            "--out",
            str(out),
            "--cache",
            str(CACHE),
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert proc.returncode == 0, f"build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    result = Debs(
        out / f"servermanager-core_{__version__}_{arch}.deb",
        out / f"servermanager-agent_{__version__}_{arch}.deb",
        arch,
    )
    assert sorted(out.iterdir()) == sorted(result.both)
    return result


class Root:
    """An empty directory with a dpkg database of its own: `dpkg --root` installs into it.

    --force-script-chrootless runs the maintainer scripts on this machine with DPKG_ROOT set, so
    they act on the root (systemd-sysusers --root, systemd-tmpfiles --root, deb-systemd-helper);
    --force-depends because python3 and systemd are this machine's, not the root's.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        admin = path / "var/lib/dpkg"
        for sub in ("info", "updates", "triggers"):
            (admin / sub).mkdir(parents=True)
        for f in ("status", "available"):
            (admin / f).touch()

    def dpkg(self, *args: str) -> subprocess.CompletedProcess[str]:
        need("systemd-sysusers", "systemd")
        cmd = [
            "dpkg",
            f"--root={self.path}",
            "--force-script-chrootless",
            "--force-depends",
            "--log=/dev/null",
        ]
        proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"dpkg {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel.lstrip("/")

    def passwd(self) -> dict[str, list[str]]:
        """name -> the other fields of the root's /etc/passwd."""
        lines = (self / "etc/passwd").read_text().splitlines()
        return {line.split(":")[0]: line.split(":")[1:] for line in lines if line}


@pytest.fixture(scope="module")
def installed(debs: Debs, tmp_path_factory: pytest.TempPathFactory) -> Root:
    """Both packages installed into a fresh root, as a first install."""
    root = Root(tmp_path_factory.mktemp("root"))
    root.dpkg("-i", *map(str, debs.both))
    return root
