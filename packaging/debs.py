"""servermanager-core and servermanager-agent .debs, made with dpkg-deb; each carries its own venv in /opt."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "packaging"
OPT = "/opt/servermanager"
MAINTAINER = os.environ.get(
    "SM_DEB_MAINTAINER", "Server Manager maintainers <maintainers@servermanager.invalid>"
)
# What goes into the packages: a change to any of these makes a new build (see source_hash).
SOURCES = ("pyproject.toml", "README.md", "servermanager", "common", "core", "agent", "desktop", "resources")


class BuildError(Exception):
    """The build cannot go on; the message says why, for one line on stderr."""


@dataclass(frozen=True)
class Flavor:
    name: str  # core or agent: the /opt/servermanager/<name> dir and the unit's suffix
    extras: str
    command: str  # /usr/bin/<command>, the venv's servermanager
    user: str
    data_dir: str
    summary: str
    about: str
    suggests: str = ""
    start_note: str = ""
    remove_extra: str = ""
    purge_extra: str = ""

    @property
    def package(self) -> str:
        return f"servermanager-{self.name}"

    @property
    def unit(self) -> str:
        return f"servermanager-{self.name}.service"


FLAVORS = {
    "core": Flavor(
        name="core",
        # apprise too: notification channels to chat apps should not need a pip install on a server.
        extras="core,apprise",
        command="servermanager",
        user="servermanager",
        data_dir="/var/lib/servermanager",
        summary="Server Manager core: the fleet hub (REST, WebSockets, SQLite history)",
        about="The hub that agents report to and the desktop app talks to. It stores metric history in "
        "SQLite under /var/lib/servermanager, serves HTTPS/WSS with a certificate it makes on its "
        "first start, and runs as the system user servermanager under a hardened systemd unit. "
        "It carries its own Python environment in /opt/servermanager/core.",
        start_note="The core needs nothing more than its conffile to start.",
    ),
    "agent": Flavor(
        name="agent",
        extras="agent",
        command="servermanager-agent",
        user="servermanager-agent",
        data_dir="/var/lib/servermanager-agent",
        summary="Server Manager agent: sends this host's metrics to a Server Manager core",
        about="Collects CPU, memory, disk, network and process metrics with psutil and sends them to a "
        "Server Manager core, spooling them on disk while the core is away. It runs as the system "
        "user servermanager-agent under a hardened systemd unit, and can run remote commands and "
        "service actions only when its [exec] settings allow them. It carries its own Python "
        "environment in /opt/servermanager/agent.",
        suggests="polkitd",
        start_note="The unit's conditions skip the agent until agent.env or a credential exists.",
        remove_extra=textwrap.dedent("""\
            if [ "$1" = "remove" ]; then
                # Written by `servermanager polkit-rule` at each agent start: it goes with the agent.
                rm -f "${DPKG_ROOT:-}/etc/polkit-1/rules.d/50-servermanager-agent.rules"
            fi"""),
        purge_extra='    rm -f "${DPKG_ROOT:-}/etc/servermanager/agent.env"',
    ),
}


# ---------------------------------------------------------------- helpers


def clean_env() -> dict[str, str]:
    """This environment without PYTHON* variables: a PYTHONPATH naming the checkout (as in the tests)
    would make pip think servermanager is installed already, and leave it out of the venv."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a build step; its own output stays visible, a failure becomes a BuildError."""
    try:
        return subprocess.run(cmd, check=True, text=True, env=clean_env(), **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise BuildError(f"{cmd[0]} is not installed") from None
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"{' '.join(map(str, cmd[:4]))} ... failed (exit {exc.returncode})") from None


def version() -> str:
    text = (ROOT / "common" / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not m:
        raise BuildError("no __version__ in common/__init__.py")
    return m.group(1)


def deb_arch() -> str:
    return run(["dpkg", "--print-architecture"], capture_output=True).stdout.strip()


def target_python(python: str) -> tuple[str, tuple[int, int]]:
    """The interpreter the venvs are built on (the target's system python3) and its X.Y."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        raise BuildError(f"cannot run {python}: the packages are built on the system's python3") from None
    ver = (int(out[0]), int(out[1]))
    if ver < (3, 11):
        raise BuildError(f"{python} is Python {ver[0]}.{ver[1]}; Server Manager needs 3.11 or newer")
    return python, ver


def _files(paths: Iterator[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            yield from _files(
                c for c in sorted(p.iterdir()) if c.name not in ("__pycache__", ".mypy_cache", ".ruff_cache")
            )
        else:
            yield p


def source_hash(python: str, arch: str) -> str:
    """What a cached build depends on: the sources that go in, packaging/, the interpreter, the arch."""
    h = hashlib.sha256(f"{python} {arch}\n".encode())
    roots = [ROOT / s for s in SOURCES] + [HERE]
    for f in _files(iter(roots)):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0")
        h.update(os.readlink(f).encode() if f.is_symlink() else f.read_bytes())
    return h.hexdigest()[:16]


def tree_size_kib(root: Path) -> int:
    return sum((p.lstat().st_size + 1023) // 1024 for p in root.rglob("*") if not p.is_dir()) + 4


# ---------------------------------------------------------------- the Python environment


def copy_sources(dest: Path) -> Path:
    """What the wheel is built from, copied to dest (made afresh): pip wheel on the tree itself
    writes build/ and an .egg-info into it, which another build of the same tree at the same time
    (the core's agent package, the tests' extras) would read half-written, and a read-only tree refuses.
    The core's own copy (core/install/package.py) does the same, but this script runs in a bare venv
    (release.yml) where servermanager is not installed, so it cannot import it."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in (*SOURCES, "LICENSE", "packaging/systemd"):
        src = ROOT / name
        if src.is_dir():
            # symlinks=True: servermanager/core -> ../core stays a link, as the package-dir map expects.
            shutil.copytree(src, dest / name, symlinks=True, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def build_wheel(work: Path) -> Path:
    out = work / "wheel"
    shutil.rmtree(out, ignore_errors=True)
    src = copy_sources(work / "wheel-src")
    try:
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)])
    finally:
        shutil.rmtree(src, ignore_errors=True)
    wheels = sorted(out.glob("servermanager-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one servermanager wheel in {out}, found {len(wheels)}")
    return wheels[0]


def build_venv(stage: Path, flavor: Flavor, wheel: Path, python: str, pip_cache: Path) -> Path:
    """The venv at its final path inside the staging root, then made to name only that final path.

    Built here rather than in postinst: what the package installs is then exactly what was built and
    tested, dpkg knows every file (upgrade and purge remove them), and installing needs neither the
    network nor pip nor python3-venv on the target, only the python3 it was built against.
    """
    final = f"{OPT}/{flavor.name}"
    venv = stage / final.lstrip("/")
    # No pip in the target's venv: nothing installs into it after the build.
    run([python, "-m", "venv", "--without-pip", str(venv)])
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-compile",
            "--no-warn-script-location",
            "--cache-dir",
            str(pip_cache),
            f"{wheel}[{flavor.extras}]",
        ]
    )
    old = str(venv).encode()
    # Script shebangs, activate scripts and pyvenv.cfg name the staging path: make them name /opt.
    for f in [*sorted((venv / "bin").iterdir()), venv / "pyvenv.cfg"]:
        if f.is_symlink() or not f.is_file():
            continue
        data = f.read_bytes()
        if old in data:
            f.write_bytes(data.replace(old, final.encode()))
    got = run(
        [str(venv / "bin" / "python"), "-I", "-B", "-m", "servermanager", "--version"], capture_output=True
    )
    if got.stdout.split() != ["servermanager", version()]:
        raise BuildError(f"the venv in {venv} does not run servermanager {version()}: {got.stdout.strip()}")
    for junk in venv.rglob("direct_url.json"):  # it names the build machine's wheel path
        junk.unlink()
    # Bytecode now, for the final paths: the service cannot write it under ProtectSystem=strict.
    run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "-s",
            str(stage),
            "-p",
            "/",
            str(venv),
        ]
    )
    return venv


def min_glibc(venv: Path) -> str:
    """The newest glibc any bundled wheel was built for (manylinux_2_28 -> 2.28; 2014 -> 2.17)."""
    best = (2, 17)
    for wheel_file in venv.glob("lib/python3*/site-packages/*.dist-info/WHEEL"):
        for m in re.finditer(r"manylinux_(\d+)_(\d+)_", wheel_file.read_text(encoding="utf-8")):
            best = max(best, (int(m.group(1)), int(m.group(2))))
    return f"{best[0]}.{best[1]}"


# ---------------------------------------------------------------- the package tree


def _install(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def _template(name: str, flavor: Flavor) -> str:
    text = (HERE / "debian" / f"{name}.in").read_text(encoding="utf-8")
    for key, value in {
        "PACKAGE": flavor.package,
        "UNIT": flavor.unit,
        "USER": flavor.user,
        "DATA_DIR": flavor.data_dir,
        "START_NOTE": flavor.start_note,
        "REMOVE_EXTRA": flavor.remove_extra,
        "PURGE_EXTRA": flavor.purge_extra,
    }.items():
        text = text.replace(f"@{key}@", value)
    return text


def _copyright() -> str:
    year = time.gmtime().tm_year
    return textwrap.dedent(f"""\
        Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
        Upstream-Name: servermanager
        Source: the servermanager source tree

        Files: *
        Copyright: {year} Server Manager contributors
        License: Expat

        Files: opt/servermanager/*/lib/*
        Copyright: the authors of each bundled Python distribution
        License: various
         Each bundled distribution's license is in its .dist-info directory under
         /opt/servermanager/*/lib/python3*/site-packages/.

        License: Expat
         Permission is hereby granted, free of charge, to any person obtaining a copy
         of this software and associated documentation files (the "Software"), to deal
         in the Software without restriction, including without limitation the rights
         to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
         copies of the Software, and to permit persons to whom the Software is
         furnished to do so, subject to the following conditions:
         .
         The above copyright notice and this permission notice shall be included in all
         copies or substantial portions of the Software.
         .
         THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
         IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
         FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
         AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
         LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
         OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
         SOFTWARE.
        """)


def _changelog(flavor: Flavor, ver: str) -> bytes:
    text = (
        f"{flavor.package} ({ver}) unstable; urgency=medium\n\n"
        f"  * Release {ver}; the project's CHANGELOG.md has the details.\n\n"
        f" -- {MAINTAINER}  {formatdate(usegmt=False, localtime=False)}\n"
    )
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def build_tree(stage: Path, flavor: Flavor, ver: str, arch: str, pyver: tuple[int, int], glibc: str) -> None:
    """Everything but the venv: units, users, config, docs, the command link and DEBIAN/."""
    name = flavor.name
    _install(HERE / "systemd" / flavor.unit, stage / "lib/systemd/system" / flavor.unit, 0o644)
    _install(
        HERE / "sysusers" / f"{flavor.package}.conf",
        stage / f"usr/lib/sysusers.d/{flavor.package}.conf",
        0o644,
    )
    _install(
        HERE / "tmpfiles" / f"{flavor.package}.conf",
        stage / f"usr/lib/tmpfiles.d/{flavor.package}.conf",
        0o644,
    )
    _install(HERE / f"{name}.toml.example", stage / f"etc/servermanager/{name}.toml", 0o644)
    doc = stage / "usr/share/doc" / flavor.package
    doc.mkdir(parents=True, exist_ok=True)
    (doc / "copyright").write_text(_copyright(), encoding="utf-8")
    (doc / "changelog.gz").write_bytes(_changelog(flavor, ver))
    _install(HERE / f"{name}.toml.example", doc / f"{name}.toml.example", 0o644)
    overrides = HERE / "debian" / f"{flavor.package}.lintian-overrides"
    if overrides.exists():
        _install(overrides, stage / "usr/share/lintian/overrides" / flavor.package, 0o644)
    link = stage / "usr/bin" / flavor.command
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(f"{OPT}/{name}/bin/servermanager")

    debian = stage / "DEBIAN"
    debian.mkdir()
    for script in ("postinst", "prerm", "postrm"):
        (debian / script).write_text(_template(script, flavor), encoding="utf-8")
        (debian / script).chmod(0o755)
    (debian / "conffiles").write_text(f"/etc/servermanager/{name}.toml\n", encoding="utf-8")
    depends = [
        # The venv links to the system interpreter and its compiled modules fit this X.Y only.
        f"python3 (>= {pyver[0]}.{pyver[1]})",
        f"python3 (<< {pyver[0]}.{pyver[1] + 1})",
        f"libc6 (>= {glibc})",
        "systemd | systemd-sysusers",
    ]
    fields = {
        "Package": flavor.package,
        "Version": ver,
        "Architecture": arch,
        "Maintainer": MAINTAINER,
        "Installed-Size": str(tree_size_kib(stage)),
        "Depends": ", ".join(depends),
        "Suggests": flavor.suggests,
        "Section": "admin",
        "Priority": "optional",
        "Description": flavor.summary
        + "\n"
        + textwrap.fill(flavor.about, 76, initial_indent=" ", subsequent_indent=" "),
    }
    (debian / "control").write_text("".join(f"{k}: {v}\n" for k, v in fields.items() if v), encoding="utf-8")
    sums = []
    for f in sorted(p for p in stage.rglob("*") if p.is_file() and not p.is_symlink()):
        rel = f.relative_to(stage)
        if rel.parts[0] != "DEBIAN":
            sums.append(f"{hashlib.md5(f.read_bytes()).hexdigest()}  {rel}\n")  # dpkg's md5sums format
    (debian / "md5sums").write_text("".join(sums), encoding="utf-8")
    (debian / "md5sums").chmod(0o644)


# ---------------------------------------------------------------- entry


def build(out: Path, *, python: str = "/usr/bin/python3", cache: Path | None = None) -> list[Path]:
    """Build both .debs into out; with a cache dir, reuse a build of the same sources."""
    if shutil.which("dpkg-deb") is None:
        raise BuildError("dpkg-deb is not installed (Debian: apt-get install dpkg)")
    python, pyver = target_python(python)
    arch, ver = deb_arch(), version()
    names = [f"{f.package}_{ver}_{arch}.deb" for f in FLAVORS.values()]
    out.mkdir(parents=True, exist_ok=True)
    cached = cache / f"deb-{source_hash(python, arch)}" if cache else None
    if cached and all((cached / n).is_file() for n in names):
        print(f"debs: unchanged sources, reusing {cached}", flush=True)
        for n in names:
            shutil.copyfile(cached / n, out / n)
        return [out / n for n in names]

    work = (cache or ROOT / "build") / "deb-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    wheel = build_wheel(work)
    pip_cache = (cache or ROOT / "build") / "pip-cache"
    built = []
    for flavor, name in zip(FLAVORS.values(), names, strict=True):
        started = time.monotonic()
        stage = work / flavor.package
        venv = build_venv(stage, flavor, wheel, python, pip_cache)
        if flavor.name == "core":
            # The core serves this wheel to new servers ("Add server"), found here with no setting.
            _install(wheel, venv / "share" / "servermanager" / wheel.name, 0o644)
        build_tree(stage, flavor, ver, arch, pyver, min_glibc(venv))
        # --root-owner-group: root-owned files whoever builds; xz level 6 is dpkg's default.
        run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(stage), str(out / name)],
            stdout=subprocess.DEVNULL,
        )
        print(
            f"debs: {out / name} ({(out / name).stat().st_size >> 20} MiB, {time.monotonic() - started:.0f}s)",
            flush=True,
        )
        built.append(out / name)
    if cached:
        for stale in cached.parent.glob("deb-*"):  # one build kept: the cache never grows
            if stale.is_dir() and stale.name != "deb-work":
                shutil.rmtree(stale, ignore_errors=True)
        cached.mkdir(parents=True, exist_ok=True)
        for p in built:
            shutil.copyfile(p, cached / p.name)
    shutil.rmtree(work, ignore_errors=True)
    return built
