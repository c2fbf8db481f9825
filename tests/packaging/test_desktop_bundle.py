"""The frozen desktop bundle (packaging/desktop_bundle.py): built once per source, run from its archive."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from servermanager.common import __version__
from tests.helpers.desktop_entry import DESKTOP, validate

REPO = Path(__file__).resolve().parents[2]
# The freeze takes ~40 s on one CPU; the result is kept per source hash, so CI (a fresh clone)
# builds it once and a developer's re-run reuses it.
CACHE = REPO / "build" / "desktop-bundle-test"
# What the hash covers: everything the bundle is made of, and the freezer's and Qt's versions.
SOURCES = (
    "common",
    "desktop",
    "resources",
    "packaging/desktop",
    "packaging/desktop_bundle.py",
    "pyproject.toml",
)
# Measured on Debian 12 x86_64, PySide6-Essentials 6.11: folder 253 MB, archive 96 MB
# (docs/packaging-desktop.md). The budget leaves room for a Qt update, not for PySide6-Addons.
FOLDER_BUDGET_MB = 300
ARCHIVE_BUDGET_MB = 120

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def source_hash() -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        top = REPO / name
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts:
                continue
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for dist in ("pyinstaller", "pyinstaller-hooks-contrib", "PySide6-Essentials"):
        digest.update(f"{dist}={importlib.metadata.version(dist)}\0".encode())
    return digest.hexdigest()[:16]


def user_env(home: Path) -> dict[str, str]:
    """A user's environment with no display, no Qt settings and a home of its own."""
    drop = {"DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("SM_", "XDG_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"))
    return env


@pytest.fixture(scope="module")
def built() -> Path:
    """dist/ of a bundle built from the current sources (built now, or kept from an earlier run)."""
    key = source_hash()
    out = CACHE / key
    if not (out / "done").exists():
        shutil.rmtree(CACHE, ignore_errors=True)  # older sources' bundles: 250 MB each
        done = subprocess.run(
            [sys.executable, "packaging/desktop_bundle.py", "--dist", out / "dist", "--work", out / "work"],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=840,
        )
        assert done.returncode == 0, f"the freeze failed:\n{done.stdout}\n{done.stderr[-6000:]}"
        shutil.rmtree(out / "work")
        (out / "done").write_text(done.stdout)
    return out / "dist"


@pytest.fixture(scope="module")
def archive(built: Path) -> Path:
    (found,) = built.glob("servermanager-desktop-*.tar.gz")
    return found


@pytest.fixture(scope="module")
def unpacked(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The archive as a user unpacks it: the one folder inside."""
    where = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["tar", "-xzf", archive, "-C", where], check=True, timeout=120)
    (folder,) = where.iterdir()
    yield folder
    shutil.rmtree(where)


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files) / 1e6


def test_the_archive_is_named_for_version_and_machine(archive: Path) -> None:
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(os.uname().machine, os.uname().machine)
    assert archive.name == f"servermanager-desktop-{__version__}-linux-{machine}.tar.gz"
    with tarfile.open(archive) as tar:
        tops = {name.split("/")[0] for name in tar.getnames()}
    assert tops == {archive.name.removesuffix(".tar.gz")}


def test_the_unpacked_bundle_passes_its_self_test_without_a_display(unpacked: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [unpacked / "servermanager-desktop", "--self-test"],
        cwd=tmp_path,
        env=user_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--self-test ok: main window shown (offscreen, Qt " in done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    # Throwaway settings: nothing of the app's lands in the user's config folder.
    assert not (tmp_path / "config").exists() or not any((tmp_path / "config").rglob("*Server*"))


def test_the_bundle_tells_its_version(unpacked: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [unpacked / "servermanager-desktop", "--version"],
        env=user_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"servermanager-desktop {__version__}")


def test_an_unknown_flag_is_one_usage_error(unpacked: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [unpacked / "servermanager-desktop", "--banana"],
        env=user_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unrecognized arguments: --banana" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_bundle_stays_within_its_size_budget(built: Path, archive: Path) -> None:
    folder = built / "servermanager-desktop"
    assert size_mb(folder) < FOLDER_BUDGET_MB, f"the bundle is {size_mb(folder):.0f} MB"
    assert size_mb(archive) < ARCHIVE_BUDGET_MB, f"the archive is {size_mb(archive):.0f} MB"
    internal = folder / "_internal"
    # Nothing of PySide6-Addons, nor what only the core uses.
    assert not list(internal.glob("PySide6/Qt/lib/libQt6WebEngine*"))
    assert not list(internal.glob("PySide6/Qt3D*")) and not list(internal.glob("PySide6/QtCharts*"))
    for unwanted in ("uvloop", "aiosqlite", "psutil", "yaml", "tkinter"):
        assert not (internal / unwanted).exists(), unwanted


def test_the_bundle_holds_the_resources_and_qt_plugins_the_window_needs(unpacked: Path) -> None:
    internal = unpacked / "_internal"
    assert (internal / "servermanager/desktop/resources/icons/app.svg").is_file()
    assert (internal / "servermanager/desktop/resources/themes/dark.qss").is_file()
    plugins = internal / "PySide6/Qt/plugins"
    # The icons are SVG; X11 and Wayland for a desktop, offscreen for --self-test.
    for plugin in (
        "iconengines/libqsvgicon.so",
        "imageformats/libqsvg.so",
        "platforms/libqxcb.so",
        "platforms/libqwayland.so",
        "platforms/libqoffscreen.so",
    ):
        assert (plugins / plugin).is_file(), plugin


def test_install_sh_adds_the_menu_entry_and_takes_it_out(unpacked: Path, tmp_path: Path) -> None:
    env = user_env(tmp_path)
    done = subprocess.run(
        [unpacked / "install.sh"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    entry = tmp_path / "data/applications/servermanager.desktop"
    icon = tmp_path / "data/icons/hicolor/256x256/apps/servermanager.png"
    assert icon.read_bytes() == (DESKTOP / "servermanager.png").read_bytes()
    assert f'Exec="{unpacked}/servermanager-desktop"' in entry.read_text().splitlines()
    validate(entry)
    done = subprocess.run([unpacked / "install.sh", "--uninstall"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not entry.exists() and not icon.exists()
