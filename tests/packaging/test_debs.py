"""The .debs as files: control fields, contents and modes, maintainer scripts, lintian, no build paths."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from servermanager.common import __version__
from tests.packaging.conftest import BUILD_TIMEOUT, REPO, Debs, need

pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT)]


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True, timeout=120).stdout


def contents(deb: Path) -> dict[str, tuple[str, str, str]]:
    """path -> (mode string, owner/group, symlink target or '')."""
    out = {}
    for line in dpkg_deb("--contents", str(deb)).splitlines():
        mode, owner, _size, _date, _time, rest = line.split(None, 5)
        path, _, target = rest.partition(" -> ")
        out[path.removeprefix(".").rstrip("/") or "/"] = (mode, owner, target)
    return out


def python_xy() -> tuple[int, int]:
    out = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True
    ).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.parametrize("name", ["core", "agent"])
def test_control_fields(debs: Debs, name: str) -> None:
    deb = getattr(debs, name)
    fields = dict(
        line.split(": ", 1) for line in dpkg_deb("--field", str(deb)).splitlines() if not line.startswith(" ")
    )
    assert fields["Package"] == f"servermanager-{name}"
    assert fields["Version"] == __version__
    assert fields["Architecture"] == debs.arch
    major, minor = python_xy()
    depends = [d.strip() for d in fields["Depends"].split(",")]
    # The venv's compiled modules fit the python3 it was built on, and only that X.Y.
    assert f"python3 (>= {major}.{minor})" in depends and f"python3 (<< {major}.{minor + 1})" in depends
    assert "systemd | systemd-sysusers" in depends
    assert re.fullmatch(r"libc6 \(>= 2\.\d+\)", next(d for d in depends if d.startswith("libc6")))
    assert fields.get("Suggests") == ("polkitd" if name == "agent" else None)
    conffiles = dpkg_deb("--info", str(deb), "conffiles").split()
    assert conffiles == [f"/etc/servermanager/{name}.toml"]


@pytest.mark.parametrize(("name", "command"), [("core", "servermanager"), ("agent", "servermanager-agent")])
def test_contents_and_modes(debs: Debs, name: str, command: str) -> None:
    files = contents(getattr(debs, name))
    pkg = f"servermanager-{name}"
    regular = {
        f"/lib/systemd/system/{pkg}.service": "-rw-r--r--",
        f"/usr/lib/sysusers.d/{pkg}.conf": "-rw-r--r--",
        f"/usr/lib/tmpfiles.d/{pkg}.conf": "-rw-r--r--",
        f"/etc/servermanager/{name}.toml": "-rw-r--r--",
        f"/usr/share/doc/{pkg}/copyright": "-rw-r--r--",
        f"/usr/share/doc/{pkg}/changelog.gz": "-rw-r--r--",
        f"/usr/share/lintian/overrides/{pkg}": "-rw-r--r--",
        f"/opt/servermanager/{name}/bin/servermanager": "-rwxr-xr-x",
        f"/opt/servermanager/{name}/pyvenv.cfg": "-rw-r--r--",
    }
    for path, mode in regular.items():
        assert files[path][0] == mode, path
    assert files[f"/usr/bin/{command}"][2] == f"/opt/servermanager/{name}/bin/servermanager"
    assert files[f"/opt/servermanager/{name}/bin/python3"][2] == "/usr/bin/python3"  # the system's
    # Everything root's, nothing writable by others; bytecode shipped for the service's read-only /opt.
    assert {owner for _, owner, _ in files.values()} == {"root/root"}
    assert not [p for p, (mode, _, _) in files.items() if mode[8] == "w" and mode[0] != "l"]
    site = f"/opt/servermanager/{name}/lib/python3.{python_xy()[1]}/site-packages"
    assert any(p.startswith(f"{site}/servermanager/__pycache__/cli.cpython-") for p in files)
    assert not [p for p in files if re.search(r"/site-packages/(pip|setuptools)/", p)]  # no installer inside


@pytest.mark.parametrize("name", ["core", "agent"])
def test_maintainer_scripts(debs: Debs, name: str, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "--control", str(getattr(debs, name)), str(tmp_path)], check=True)
    for script in ("postinst", "prerm", "postrm"):
        path = tmp_path / script
        assert path.stat().st_mode & 0o777 == 0o755
        text = path.read_text()
        assert "@" not in text.replace("deb-systemd-helper", ""), f"unfilled placeholder in {script}"
        subprocess.run(["sh", "-n", str(path)], check=True)  # parses as POSIX sh
    postrm = (tmp_path / "postrm").read_text()
    assert f'rm -rf "${{DPKG_ROOT:-}}/var/lib/servermanager{"-agent" if name == "agent" else ""}"' in postrm
    assert "userdel" not in postrm and "deluser" not in postrm  # users stay after purge (Debian policy)


def test_lintian_finds_no_errors(debs: Debs) -> None:
    lintian = need("lintian", "lintian")
    proc = subprocess.run(
        [lintian, "--display-info", "--tag-display-limit", "0", *map(str, debs.both)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    tags = [line for line in proc.stdout.splitlines() if re.match(r"[EWIXPO]: ", line)]
    errors = [t for t in tags if t.startswith("E: ")]
    assert errors == [], "\n".join(errors)
    # Every override still matches something: a stale one would hide the next real error.
    assert not [t for t in tags if "unused-override" in t], "\n".join(tags)


def test_no_build_machine_paths_inside(debs: Debs, tmp_path: Path) -> None:
    for deb in debs.both:
        subprocess.run(["dpkg-deb", "--extract", str(deb), str(tmp_path)], check=True)
    leaks = (b"deb-work", str(REPO).encode())  # the staging dir's name, the checkout
    found = [
        str(p.relative_to(tmp_path))
        for p in tmp_path.rglob("*")
        if p.is_file() and not p.is_symlink() and any(leak in p.read_bytes() for leak in leaks)
    ]
    assert found == []
