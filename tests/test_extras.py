"""The built wheel, installed with one extra at a time: each part runs with only its own libraries.

One wheel, three fresh venvs ([agent], [core], [desktop]); each runs its part from the installed
copy, never the source tree, and must not pull in another part's libraries.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.ports import free_port

# Building the venvs takes ~15 s with pip's cache warm; a first download of Qt takes longer.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
EXTRAS = ("agent", "core", "desktop")
# What an install with only that extra must not load: the other parts' libraries.
NOT_IMPORTED = {
    # cryptography is the agent's own (signed commands), loaded only with trusted keys:
    # tests/agent/exec checks that in a subprocess; this imports every module, signing.py included.
    # So is aiohttp since [[check]] and [[scrape]] (loaded only when one is configured: tests/agent/test_imports.py).
    "agent": {"aiosqlite", "PySide6"},
    "core": {"psutil", "PySide6"},
    "desktop": {"aiosqlite", "psutil"},
}
# A module each part's import must reach: its entry point (the stable names, not today's layout).
ENTRY_MODULE = {
    "agent": "servermanager.agent.main",
    "core": "servermanager.core.app",
    "desktop": "servermanager.desktop.main",
}
# Left out of the copy the wheel is built from: build output, caches, venvs, VCS data.
NOT_COPIED = re.compile(r"^(\..*|__pycache__|build|dist|.*\.egg-info)$")

# Runs a `servermanager` subcommand as the console script does; at exit it writes down every
# module it had imported and where servermanager came from.
CLI_ENTRY = """
import atexit, json, sys

def report() -> None:
    import servermanager
    with open(sys.argv[1], "w") as f:
        json.dump({"file": servermanager.__file__, "modules": sorted(sys.modules)}, f)

atexit.register(report)
from servermanager.cli import main

sys.exit(main(sys.argv[2:]))
"""

# Imports every module (but __main__) of servermanager.common and of one part, then tells what
# it loaded and which of the given libraries this install could import at all.
IMPORT_PART = """
import importlib, importlib.util, json, pkgutil, sys

names = []
for package in ("servermanager.common", sys.argv[1]):
    top = importlib.import_module(package)
    names += [package, *(m.name for m in pkgutil.walk_packages(top.__path__, package + "."))]
names = [n for n in names if not n.endswith(".__main__")]  # those run their program
for name in names:
    importlib.import_module(name)
print(json.dumps({
    "file": sys.modules["servermanager"].__file__,
    "imported": names,
    "modules": sorted(sys.modules),
    "importable": {lib: importlib.util.find_spec(lib) is not None for lib in sys.argv[2:]},
}))
"""


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no source tree on the path, no display, no settings."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "DISPLAY", "WAYLAND_DISPLAY"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("SM_", "QT_"))}
    env.update(PYTHONNOUSERSITE="1", PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring", **extra)
    return env


def run(
    argv: list[str | Path], cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    # cwd is never the repository: `python -c` puts the working directory first on sys.path.
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=child_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def top_names(modules: list[str]) -> set[str]:
    return {m.partition(".")[0] for m in modules}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built by pip from a copy of the source, so the build leaves nothing in the tree."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if NOT_COPIED.match(n) or (Path(folder) / n / "pyvenv.cfg").exists()}

    shutil.copytree(REPO, source, symlinks=True, ignore=ignore)
    done = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", source],
        work,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (work / "dist").glob("servermanager-*.whl")
    return built


@pytest.fixture(scope="module")
def venvs(wheel: Path) -> Iterator[dict[str, Path]]:
    """A fresh venv per extra with the wheel installed, built in parallel; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="sm-extras-", ignore_cleanup_errors=True) as folder:
        root = Path(folder)

        def install(extra: str) -> Path:
            venv = root / extra
            # No pip of its own: the test's pip installs into it (pip --python), which is quicker
            # than ensurepip and needs no python3-venv package.
            made = run([sys.executable, "-m", "venv", "--without-pip", venv], root)
            assert made.returncode == 0, made.stderr
            python = venv / "bin" / "python"
            done = run(
                [sys.executable, "-m", "pip", "--python", python, "install", "-q", f"{wheel}[{extra}]"],
                root,
                timeout=540,
            )
            assert done.returncode == 0, f"pip install [{extra}]:\n{done.stdout}{done.stderr}"
            return venv

        with concurrent.futures.ThreadPoolExecutor(len(EXTRAS)) as pool:
            futures = {extra: pool.submit(install, extra) for extra in EXTRAS}
            yield {extra: future.result() for extra, future in futures.items()}


def import_part(venv: Path, extra: str) -> dict[str, Any]:
    libraries = sorted(NOT_IMPORTED[extra])
    done = run([venv / "bin" / "python", "-c", IMPORT_PART, f"servermanager.{extra}", *libraries], venv)
    if done.returncode != 0:
        pytest.fail(
            f"importing servermanager.{extra} with only [{extra}] failed:\n{done.stderr}", pytrace=False
        )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def installed(venv: Path, file: object) -> bool:
    return Path(str(file)).resolve().is_relative_to(venv.resolve())


# ---------------------------------------------------------------- the wheel


def test_the_wheel_installs_only_the_servermanager_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    outside = [n for n in names if not re.match(r"servermanager/|servermanager-[^/]+\.dist-info/", n)]
    assert not outside, f"files outside servermanager/: {outside}"
    assert not [n for n in names if n.split("/")[0] in {"core", "agent", "desktop", "common"}]
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["servermanager"]


def test_the_wheel_holds_every_module_and_resource_of_the_source(wheel: Path) -> None:
    # pyproject.toml names each package; a sub-package it does not name is left out of the wheel.
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders: dict[str, str] = tool["package-dir"]

    def folder_of(package: str) -> Path:
        owner = max((p for p in folders if package == p or package.startswith(p + ".")), key=len)
        return REPO / folders[owner] / package[len(owner) :].lstrip(".").replace(".", "/")

    expected = set()
    for package, folder in folders.items():
        for path in (REPO / folder).rglob("*.py"):
            rel = path.relative_to(REPO / folder)
            # servermanager/'s links lead to the other folders, counted under their own package.
            if "__pycache__" not in rel.parts and not (REPO / folder / rel.parts[0]).is_symlink():
                expected.add(f"{package.replace('.', '/')}/{rel.as_posix()}")
    for package, patterns in tool.get("package-data", {}).items():
        for pattern in patterns:
            for path in folder_of(package).glob(pattern):
                expected.add(f"{package.replace('.', '/')}/{path.name}")
    assert any(name.endswith(".svg") for name in expected)
    missing = expected - set(zipfile.ZipFile(wheel).namelist())
    assert not missing, (
        f"in the source but not in the wheel (a package missing in pyproject.toml?): {sorted(missing)}"
    )


# ---------------------------------------------------------------- one extra at a time


@pytest.mark.parametrize("extra", EXTRAS)
def test_each_part_imports_with_only_its_extra(venvs: dict[str, Path], extra: str) -> None:
    venv = venvs[extra]
    result = import_part(venv, extra)
    assert installed(venv, result["file"]), result["file"]
    assert ENTRY_MODULE[extra] in result["imported"]
    loaded = top_names(result["modules"]) & NOT_IMPORTED[extra]
    assert not loaded, f"servermanager.{extra} imports another part's libraries: {sorted(loaded)}"
    if extra == "agent":
        # The agent runs on servers: nothing of the hub's or the GUI's may even be installed.
        assert result["importable"] == dict.fromkeys(sorted(NOT_IMPORTED["agent"]), False)


@pytest.mark.parametrize("extra", EXTRAS)
def test_the_console_script_runs_the_subcommand(venvs: dict[str, Path], extra: str) -> None:
    venv = venvs[extra]
    done = run([venv / "bin" / "servermanager", extra, "--help"], venv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: servermanager {extra}")


def get_json(url: str) -> tuple[int, Any]:
    # Straight to loopback, whatever proxy the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=2) as response:
        return response.status, json.load(response)


def test_core_alone_serves_health_and_stops_on_sigterm(
    venvs: dict[str, Path], wheel: Path, tmp_path: Path
) -> None:
    venv = venvs["core"]
    report, log, port = tmp_path / "modules.json", tmp_path / "core.log", free_port()
    argv = ["core", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data")]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [venv / "bin" / "python", "-c", CLI_ENTRY, report, *argv],
            cwd=tmp_path,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline, health = time.monotonic() + 60, None
        while health is None:
            assert proc.poll() is None, f"the core exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no answer on port {port}:\n{log.read_text()}"
            try:
                health = get_json(f"http://127.0.0.1:{port}/api/v1/health")
            except OSError:
                time.sleep(0.1)
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        stopped_in = time.monotonic() - stopping
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    status, body = health
    assert (status, body["status"]) == (200, "ok")
    assert wheel.name.startswith(f"servermanager-{body['version']}-")
    assert code == 0, log.read_text()
    assert stopped_in < 10, f"SIGTERM took {stopped_in:.1f} s"
    result = json.loads(report.read_text())
    assert installed(venv, result["file"]), result["file"]
    loaded = top_names(result["modules"]) & NOT_IMPORTED["core"]
    assert not loaded, f"the running core imported {sorted(loaded)}"


def test_desktop_alone_passes_its_self_test(venvs: dict[str, Path], tmp_path: Path) -> None:
    venv = venvs["desktop"]
    home = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    # The console script as a user runs it, with no display and no QT_QPA_PLATFORM.
    done = run([venv / "bin" / "servermanager", "desktop", "--self-test"], tmp_path, **home)
    assert done.returncode == 0, done.stderr
    assert "--self-test ok: main window shown (offscreen, " in done.stdout
    # The same again, writing down what it imported.
    report = tmp_path / "modules.json"
    done = run([venv / "bin" / "python", "-c", CLI_ENTRY, report, "desktop", "--self-test"], tmp_path, **home)
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    assert installed(venv, result["file"]), result["file"]
    assert {"servermanager.desktop.main", "PySide6"} <= top_names(result["modules"]) | set(result["modules"])
    loaded = top_names(result["modules"]) & NOT_IMPORTED["desktop"]
    assert not loaded, f"the desktop app imported {sorted(loaded)}"
