"""Remote operations on the agent: make_runner() picks the runner [exec] asks for."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from servermanager.agent.exec.outbox import RefusingRunner, Runner
from servermanager.common.protocol import DEFAULT_MAX_FRAME_BYTES

if TYPE_CHECKING:
    from servermanager.agent.settings import ExecSettings


def make_runner(
    settings: ExecSettings,
    *,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    on_change: Callable[[], None] | None = None,
) -> Runner:
    """The agent's runner: a CommandRunner if [exec] is enabled, else a RefusingRunner."""
    if not settings.enabled:
        return RefusingRunner()
    # The runner brings the run-as, process-group and service-manager code: 0.3 MB of the agent's
    # RSS with bytecode caches, 1.4 MB when compiled from source at start. Only an agent that runs
    # commands imports it. (The settings import exec.policy, which imports this package first:
    # keep its own imports as light as the outbox.)
    from servermanager.agent.exec.runner import CommandRunner

    return CommandRunner(settings, max_frame_bytes=max_frame_bytes, on_change=on_change)
