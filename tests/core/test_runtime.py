"""The core process: first start, a clean stop on SIGTERM, and the event loop it runs on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servermanager.core.datadir import INITIAL_PASSWORD_FILE
from tests.helpers.procs import CoreProcess


@pytest.fixture
def core_proc(tmp_path: Path) -> Iterator[CoreProcess]:
    proc = CoreProcess(tmp_path / "data")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.mark.slow
def test_first_start_admin_and_clean_sigterm(core_proc: CoreProcess) -> None:
    core_proc.start()
    pw_file = core_proc.data_dir / INITIAL_PASSWORD_FILE
    assert pw_file.stat().st_mode & 0o077 == 0
    token = core_proc.admin_token()
    assert core_proc.terminate() == 0
    log = core_proc.log()
    # The log says where the password is, never what it is, and never prints a token.
    assert str(pw_file) in log
    assert pw_file.read_text().strip() not in log
    assert token not in log and "sma_" not in log


def test_core_event_loop_is_uvloop_unless_switched_off() -> None:
    import asyncio

    import uvloop

    from servermanager.core.runtime import new_event_loop

    fast, plain = new_event_loop(prefer_uvloop=True), new_event_loop(prefer_uvloop=False)
    try:
        assert isinstance(fast, uvloop.Loop)
        assert not isinstance(plain, uvloop.Loop) and isinstance(plain, asyncio.AbstractEventLoop)
    finally:
        fast.close()
        plain.close()


def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    import resource

    from servermanager.core.runtime import raise_open_files_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert raise_open_files_limit(want) == want
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == want
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
