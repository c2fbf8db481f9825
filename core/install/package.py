"""The agent wheel this core hands to new servers: the `agent_package` setting, or built once from its own source."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from servermanager.common import __version__

log = logging.getLogger(__name__)

CACHE_DIR = "agent-package"  # under the data dir
BUILD_TIMEOUT = 300.0


class PackageError(Exception):
    """No agent package can be served; the message says why and what to set."""


@dataclass(frozen=True)
class AgentPackage:
    path: Path
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        return self.path.name


def _describe(path: Path) -> AgentPackage:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return AgentPackage(path, digest.hexdigest(), path.stat().st_size)


def source_tree() -> Path | None:
    """The project root this core runs from (a clone or an editable install), or None for an installed wheel."""
    here = Path(__file__)
    # servermanager/core/install/ in a clone run as is; core/install/ itself in an editable install.
    for root in (here.parents[3], here.resolve().parents[2]):
        try:
            project = tomllib.loads((root / "pyproject.toml").read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if project.get("project", {}).get("name") == "servermanager":
            return root
    return None


def _source_parts(root: Path) -> list[Path]:
    """What a wheel build reads: pyproject.toml, the files it names and each package dir it maps."""
    project = tomllib.loads((root / "pyproject.toml").read_text())
    dirs = project.get("tool", {}).get("setuptools", {}).get("package-dir", {}).values()
    parts = {root / "pyproject.toml", *(root / str(d).split("/")[0] for d in dirs)}
    parts |= {p for p in root.iterdir() if p.name.upper().startswith(("README", "LICENSE"))}
    return sorted(p for p in parts if p.exists())


def _source_key(root: Path) -> str:
    """Changes whenever a file a build reads changes (name, size or time): a dev tree rebuilds, a
    release tree never does."""
    h = hashlib.sha256(__version__.encode())
    for part in _source_parts(root):
        files = [part] if part.is_file() else sorted(part.rglob("*"))
        for f in files:
            if "__pycache__" in f.parts or not f.is_file():
                continue
            st = f.stat()
            h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


class PackageSource:
    """Finds or builds the wheel once per process; concurrent first requests share one build."""

    def __init__(self, setting: str, data_dir: Path, prefix: str = sys.prefix) -> None:
        self.setting = setting
        self.cache = data_dir / CACHE_DIR
        # Where a package build (the .deb, an image) puts the wheel it installed the core from:
        # <venv>/share/servermanager/servermanager-<version>-*.whl, found with no setting.
        self.shipped = Path(prefix) / "share" / "servermanager"
        self._package: AgentPackage | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> AgentPackage:
        async with self._lock:
            if self._package is None:
                self._package = await self._find()
            return self._package

    async def _find(self) -> AgentPackage:
        found = await asyncio.to_thread(self._locate)
        if isinstance(found, AgentPackage):
            return found
        root, folder = found
        return await asyncio.to_thread(_describe, await self._build(root, folder))

    def _locate(self) -> AgentPackage | tuple[Path, Path]:
        """The package, or (source tree, cache folder) when it must be built first."""
        if self.setting:
            path = Path(self.setting).expanduser()
            if path.suffix != ".whl" or not path.is_file():
                raise PackageError(f"setting agent_package: {path} is not a wheel file (.whl)")
            return _describe(path)
        shipped = sorted(self.shipped.glob(f"servermanager-{__version__}-*.whl"))
        if shipped:
            return _describe(shipped[-1])
        root = source_tree()
        if root is None:
            raise PackageError(
                "this core runs from an installed package without its source, so it cannot build the "
                f"agent wheel: set agent_package to the servermanager wheel (.whl) of this version, or "
                f"put it in {self.shipped}"
            )
        folder = self.cache / f"{__version__}-{_source_key(root)}"
        built = sorted(folder.glob("servermanager-*.whl")) if folder.is_dir() else []
        return _describe(built[0]) if built else (root, folder)

    async def _build(self, root: Path, folder: Path) -> Path:
        """pip wheel on a copy of the source, so the tree (maybe read-only) gets no build/ or egg-info."""
        self.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        log.info("building the agent package from %s (once per version)", root)
        with tempfile.TemporaryDirectory(dir=self.cache) as tmp:
            src, out = Path(tmp) / "src", Path(tmp) / "out"
            await asyncio.to_thread(_copy_source, root, src)
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check"),
                *("-q", "-w", str(out), str(src)),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PIP_NO_INPUT": "1"},
            )
            try:
                async with asyncio.timeout(BUILD_TIMEOUT):
                    output, _ = await proc.communicate()
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise PackageError(f"building the agent package took over {BUILD_TIMEOUT:g}s") from None
            wheels = sorted(out.glob("servermanager-*.whl"))
            if proc.returncode != 0 or not wheels:
                tail = output.decode(errors="replace").strip().splitlines()[-5:]
                log.error("pip wheel failed (exit %s): %s", proc.returncode, "\n".join(tail))
                raise PackageError("building the agent package failed; see the core log")
            # Whole or not at all: a crash mid-copy must not leave a half wheel that looks built.
            staging = Path(tmp) / "ready"
            staging.mkdir()
            shutil.move(wheels[0], staging / wheels[0].name)
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)
        log.info("agent package %s ready", folder / wheels[0].name)
        return folder / wheels[0].name


def _copy_source(root: Path, dest: Path) -> None:
    dest.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for part in _source_parts(root):
        if part.is_dir():
            # symlinks=True: servermanager/core -> ../core stays a link, as setuptools expects it.
            shutil.copytree(part, dest / part.name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(part, dest / part.name)
    # The agent's unit is package data through a link to packaging/systemd: copy what it points at.
    packaging = root / "packaging" / "systemd"
    if packaging.is_dir():
        shutil.copytree(packaging, dest / "packaging" / "systemd")
