"""Run-as resolution: [exec] user needs root and an existing account."""

from __future__ import annotations

import os
import pwd

import pytest

from servermanager.agent.exec.runas import RefusedError, resolve_run_as

# ---------------------------------------------------------------- run as


def test_run_as_nobody_needs_root_and_an_existing_user() -> None:
    assert resolve_run_as("") is None
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert resolve_run_as(me) is None  # already that user: no switch
    with pytest.raises(RefusedError, match="'no-such-user-xyz' does not exist on this host"):
        resolve_run_as("no-such-user-xyz")
    with pytest.raises(RefusedError, match=r"cannot switch users \(that needs root\)"):
        resolve_run_as("nobody", euid=pwd.getpwnam("nobody").pw_uid + 1)
    ra = resolve_run_as("nobody", euid=0)
    assert ra is not None and ra.name == "nobody" and ra.uid == pwd.getpwnam("nobody").pw_uid
