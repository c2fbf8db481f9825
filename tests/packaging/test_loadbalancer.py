"""packaging/loadbalancer/: the nginx and HAProxy examples pass their own parsers' checks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.packaging.conftest import REPO

FOLDER = REPO / "packaging" / "loadbalancer"


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path


def _cert(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate where the examples expect the balancer's own."""
    key, cert = folder / "fleet.key", folder / "fleet.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=fleet.example",
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


def test_haproxy_example_is_valid(tmp_path: Path) -> None:
    haproxy = _tool("haproxy")
    key, cert = _cert(tmp_path)
    (tmp_path / "both.pem").write_bytes(cert.read_bytes() + key.read_bytes())
    text = (
        (FOLDER / "haproxy.cfg").read_text().replace("/etc/haproxy/tls/fleet.pem", str(tmp_path / "both.pem"))
    )
    assert "/api/v1/health" in text and "timeout tunnel" in text
    (tmp_path / "haproxy.cfg").write_text(text)
    r = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_nginx_example_is_valid(tmp_path: Path) -> None:
    nginx = _tool("nginx")
    _cert(tmp_path)
    site = (FOLDER / "nginx.conf").read_text().replace("/etc/nginx/tls", str(tmp_path))
    assert "proxy_set_header Upgrade $http_upgrade;" in site
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\ninclude {tmp_path}/site.conf;\n}}\n"
    )
    r = subprocess.run([nginx, "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
