"""The served OpenAPI document against the real core, by schemathesis: no server error, no undocumented status."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.procs import CoreProcess, cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Calls that end the fuzzer's own access (its logout, its password, its tokens, itself) would turn
# the rest of the run into 401s; each is covered by tests of its own (tests/core/http/test_accounts.py).
SELF_HARM = r"(/auth/(logout|password)$|/auth/tokens/|^/api/v1/users/\{id\}$)"


@pytest.fixture
def core_process(tmp_path: Path) -> Iterator[CoreProcess]:
    proc = CoreProcess(tmp_path / "core").start()
    try:
        yield proc
    finally:
        proc.stop()


def test_every_operation_answers_within_its_documented_statuses(core_process: CoreProcess) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is in the dev extra"
    r = cli("admin", "api-token", "fuzzer", "--role", "admin", "--data-dir", str(core_process.data_dir))
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    done = subprocess.run(
        [
            st,
            "run",
            f"{core_process.url}/api/v1/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,status_code_conformance",
            "--max-examples",
            "15",
            "--seed",
            "1",
            "--exclude-path-regex",
            SELF_HARM,
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=core_process.data_dir.parent,  # schemathesis keeps a cache in its working dir
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Authentication failed" not in done.stdout, done.stdout[-3000:]
    assert "Traceback" not in core_process.log() and " ERROR " not in core_process.log(), core_process.log()[
        -4000:
    ]
