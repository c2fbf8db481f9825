"""Remote operations on the agent: make_runner() picks the runner [exec] asks for."""

from __future__ import annotations

import os
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
    state_dir: str | os.PathLike[str] | None = None,
    node_id: Callable[[], int | None] = lambda: None,
    fresh_enrollment: bool = False,
) -> Runner:
    """The agent's runner: a CommandRunner if [exec] is enabled, else a RefusingRunner.

    With trusted keys in [exec] the runner gets a Verifier (exec.signing, which brings
    `cryptography`): only signed requests for this node run. Its replay cache lives in
    `state_dir`; `node_id` says which node the agent is, once the core has welcomed it.
    SettingsError if the keys cannot be read.
    """
    if not settings.enabled:
        return RefusingRunner()
    verifier = None
    if settings.requires_signatures:
        if state_dir is None:
            raise ValueError("an agent with trusted keys needs a state dir for its replay cache")
        from servermanager.agent.exec.signing import make_verifier

        verifier = make_verifier(
            settings.trusted_keys,
            settings.trusted_keys_file,
            state_dir,
            node_id,
            fresh_enrollment=fresh_enrollment,
        )
    # The runner brings the run-as, process-group and service-manager code: 0.3 MB of the agent's
    # RSS with bytecode caches, 1.4 MB when compiled from source at start. Only an agent that runs
    # commands imports it. (Every agent imports this package for make_runner: keep its own imports
    # as light as the outbox.)
    from servermanager.agent.exec.runner import CommandRunner

    return CommandRunner(settings, max_frame_bytes=max_frame_bytes, on_change=on_change, verifier=verifier)
