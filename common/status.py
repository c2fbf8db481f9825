"""The states of one command run on one node, and which of them are final (core and desktop)."""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    QUEUED = "queued"  # waiting for an offline node to come back
    SENT = "sent"  # handed to the agent, no result yet
    OK = "ok"  # exit status 0
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    REFUSED = "refused"  # the agent's [exec] policy said no
    ERROR = "error"  # could not start
    OFFLINE = "offline"  # the node was offline and the command was not queued
    EXPIRED = "expired"  # queued, and the node did not come back in time
    LOST = "lost"  # the agent went away while running it


FINAL: frozenset[str] = frozenset(RunStatus) - {RunStatus.QUEUED, RunStatus.SENT}
