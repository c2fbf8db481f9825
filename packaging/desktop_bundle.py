#!/usr/bin/env python3
"""Freezes the desktop app with PyInstaller (packaging/desktop/) into dist/: a folder, a .tar.gz on Linux."""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "packaging" / "desktop"
SPEC = HERE / "servermanager-desktop.spec"
NAME = "servermanager-desktop"
# Beside the executable in the Linux folder: what a user needs to add the app to their menu.
LINUX_EXTRAS = ("servermanager.desktop", "servermanager.png", "install.sh", "INSTALL.txt")


class BuildError(Exception):
    """The freeze failed; the message says which step."""


def version() -> str:
    text = (ROOT / "common" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if not match:
        raise BuildError("no __version__ in common/__init__.py")
    return match.group(1)


def machine() -> str:
    """x86_64 or aarch64 (arm64 on macOS): the names the archives carry."""
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())


def freeze(dist: Path, work: Path) -> Path:
    """Run PyInstaller on the spec; returns the one-folder bundle (macOS: the .app)."""
    try:
        import PyInstaller  # noqa: F401 - only to say what is missing before the long run
    except ImportError:
        raise BuildError("PyInstaller is not installed: pip install -e '.[dev]'") from None
    argv = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN"]
    argv += ["--distpath", str(dist), "--workpath", str(work), str(SPEC)]
    env = {**os.environ, "SM_BUNDLE_VERSION": version()}
    # The spec's paths are its own; PYTHONPATH would only let a stale install shadow the source.
    env.pop("PYTHONPATH", None)
    done = subprocess.run(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise BuildError(f"PyInstaller failed (exit {done.returncode}); its log is above")
    if sys.platform == "darwin":
        return dist / "Server Manager.app"
    return dist / NAME


def add_linux_extras(folder: Path) -> None:
    for name in LINUX_EXTRAS:
        shutil.copy2(HERE / name, folder / name)
    (folder / "install.sh").chmod(0o755)


def archive(folder: Path, dist: Path) -> Path:
    """folder as servermanager-desktop-<version>-linux-<arch>.tar.gz, one top-level folder inside."""
    top = f"{NAME}-{version()}-linux-{machine()}"
    target = dist / f"{top}.tar.gz"
    partial = target.with_suffix(".partial")
    with tarfile.open(partial, "w:gz", compresslevel=6) as tar:
        tar.add(folder, arcname=top)
    partial.replace(target)
    return target


def build(dist: Path, work: Path | None = None) -> Path:
    """The bundle for this system in dist/: Linux and Windows a folder, macOS a .app; on Linux
    the folder also gets the .desktop file, icon and install script, and is archived beside it.
    Returns the folder (or .app)."""
    dist.mkdir(parents=True, exist_ok=True)
    work = work if work is not None else ROOT / "build" / "desktop-bundle"
    bundle = freeze(dist, work)
    if sys.platform.startswith("linux"):
        add_linux_extras(bundle)
        archive(bundle, dist)
    return bundle


def size(path: Path) -> int:
    """Bytes of the files under path (links not followed)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder (default dist/)")
    ap.add_argument("--work", type=Path, help="PyInstaller's work folder (default build/desktop-bundle)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    try:
        bundle = build(args.dist.resolve(), args.work)
    except (BuildError, OSError) as exc:
        print(f"desktop bundle: {exc}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    print(f"desktop bundle: {bundle} ({size(bundle) / 1e6:.0f} MB) in {took:.0f} s")
    for built in sorted(args.dist.glob(f"{NAME}-*.tar.gz")):
        print(f"desktop bundle: {built} ({size(built) / 1e6:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
