"""main(): exit codes, clean shutdown on SIGTERM, and no secrets in the log."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from servermanager.agent.credentials import CredentialStore
from servermanager.agent.main import EXIT_FATAL, EXIT_OK, main
from servermanager.agent.spool import SPOOL_FILE, Spool
from servermanager.common.protocol import CloseCode
from tests.agent.fakes import ISSUED_CREDENTIAL, FakeCore, fast_settings

REPO = Path(__file__).resolve().parents[2]
TOKEN = "enroll-token-main-0987654321"


@pytest.fixture
def agent_log_level() -> Iterator[None]:
    # main() sets the "agent" logger's level from settings; give the next test a clean slate.
    logger = logging.getLogger("servermanager.agent")
    before = logger.level
    yield
    logger.setLevel(before)


@pytest.mark.usefixtures("agent_log_level")
def test_open_state_dir_exits_2_naming_the_fix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    assert main(fast_settings(state, "ws://127.0.0.1:9"), TOKEN) == EXIT_FATAL
    assert f"chmod 700 {state}" in caplog.text
    assert not (state / SPOOL_FILE).exists()


@pytest.mark.usefixtures("agent_log_level")
async def test_main_in_a_worker_thread_maps_auth_failure_to_2(
    tmp_path: Path, fake_core: FakeCore, caplog: pytest.LogCaptureFixture
) -> None:
    fake_core.refuse_code = CloseCode.UNAUTHORIZED
    settings = fast_settings(tmp_path / "state", fake_core.url)
    async with asyncio.timeout(20):
        code = await asyncio.to_thread(main, settings, TOKEN)
    assert code == EXIT_FATAL
    assert "refused this agent's enrollment token" in caplog.text
    assert TOKEN not in caplog.text
    assert fake_core.connections == 1


async def _spawn(args: list[str], env_extra: dict[str, str]) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SM_")}
    env.update(env_extra)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def _read_until(proc: asyncio.subprocess.Process, needle: str, seen: list[str]) -> None:
    assert proc.stderr is not None
    while True:
        line = (await proc.stderr.readline()).decode()
        if not line:
            raise AssertionError(f"agent exited before logging {needle!r}:\n{''.join(seen)}")
        seen.append(line)
        if needle in line:
            return


async def test_sigterm_shuts_down_cleanly_with_exit_0(tmp_path: Path, fake_core: FakeCore) -> None:
    state = tmp_path / "state"
    args = ["--core", fake_core.url, "--state-dir", str(state), "--interval", "1s"]
    proc = await _spawn(args, {"SM_AGENT_ENROLL_TOKEN": TOKEN, "SM_AGENT_LOG_LEVEL": "DEBUG"})
    seen: list[str] = []
    try:
        async with asyncio.timeout(30):
            await _read_until(proc, "-> STREAMING", seen)
            await fake_core.wait_until(lambda: len(fake_core.batches) >= 1)  # a sample went through
            proc.send_signal(signal.SIGTERM)
            assert proc.stderr is not None
            seen.append((await proc.stderr.read()).decode())
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = "".join(seen)
    assert code == EXIT_OK, log
    assert "received SIGTERM" in log and "agent stopped cleanly" in log
    assert fake_core.close_codes[-1] == CloseCode.GOING_AWAY
    assert TOKEN not in log and ISSUED_CREDENTIAL not in log  # not even at DEBUG
    creds = CredentialStore(state).load()
    assert creds is not None and creds.node_id == fake_core.node_id
    wal = state / f"{SPOOL_FILE}-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # closed cleanly: WAL folded back
    with Spool(state / SPOOL_FILE) as spool:
        assert spool.last_seq >= 1


async def test_auth_refusal_exits_2_without_retrying(tmp_path: Path, fake_core: FakeCore) -> None:
    fake_core.refuse_code = CloseCode.UNAUTHORIZED
    args = ["--core", fake_core.url, "--state-dir", str(tmp_path / "state"), "--enroll-token", TOKEN]
    proc = await _spawn(args, {})
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    log = err.decode()
    assert proc.returncode == EXIT_FATAL, log
    assert "AUTH_FAILED" in log and TOKEN not in log
    assert fake_core.connections == 1


async def test_bad_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = await _spawn(["--state-dir", str(tmp_path / "s"), "--interval", "0.5"], {})
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == EXIT_FATAL
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "interval must be at least 1 second" in lines[0]
