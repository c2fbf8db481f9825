"""Whom a command runs as and in what environment: [exec] user, a minimal env, a login-like cwd."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

if sys.platform != "win32":
    import pwd

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RefusedError(Exception):
    """The command cannot run here as configured; the message goes back to the operator."""


@dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int
    groups: list[int]
    home: str


def resolve_run_as(user: str, *, euid: int | None = None) -> RunAs | None:
    """The account for [exec] user, or None to run as the agent itself; RefusedError if impossible."""
    user = user.strip()
    if not user:
        return None
    if sys.platform == "win32":
        raise RefusedError(
            f"[exec] user = {user!r}, but running commands as another user is not supported on "
            "Windows; leave [exec] user empty to run them as the agent's own account"
        )
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise RefusedError(f"[exec] user {user!r} does not exist on this host") from None
    me = os.geteuid() if euid is None else euid
    if pw.pw_uid == me:
        return None
    if me != 0:
        try:
            my_name = pwd.getpwuid(me).pw_name
        except KeyError:
            my_name = str(me)
        raise RefusedError(
            f"[exec] user = {user!r}, but this agent runs as {my_name!r} and cannot switch users "
            "(that needs root); run the agent as root or leave [exec] user empty"
        )
    return RunAs(
        name=pw.pw_name,
        uid=pw.pw_uid,
        gid=pw.pw_gid,
        groups=os.getgrouplist(pw.pw_name, pw.pw_gid),
        home=pw.pw_dir,
    )


def minimal_env(extra: dict[str, str], run_as: RunAs | None) -> dict[str, str]:
    """PATH, LANG and HOME (plus what Windows needs to start anything), then the command's env."""
    if sys.platform == "win32":
        keep = (
            "PATH",
            "PATHEXT",
            "SYSTEMROOT",
            "SYSTEMDRIVE",
            "WINDIR",
            "COMSPEC",
            "TEMP",
            "TMP",
            "USERPROFILE",
        )
        env = {k: os.environ[k] for k in keep if k in os.environ}
    elif run_as is not None:
        env = {
            "PATH": DEFAULT_PATH,
            "LANG": os.environ.get("LANG") or "C.UTF-8",
            "HOME": run_as.home,
            "USER": run_as.name,
            "LOGNAME": run_as.name,
        }
    else:
        env = {
            "PATH": os.environ.get("PATH") or DEFAULT_PATH,
            "LANG": os.environ.get("LANG") or "C.UTF-8",
            "HOME": _own_home(),
        }
    env.update(extra)
    return env


def _own_home() -> str:
    if sys.platform != "win32":
        with contextlib.suppress(KeyError):
            return pwd.getpwuid(os.geteuid()).pw_dir
    return os.path.expanduser("~")


def default_cwd(run_as: RunAs | None) -> str | None:
    """Like a login: the user's home when it exists, else / (never the agent's own cwd)."""
    if sys.platform == "win32":
        return None
    home = run_as.home if run_as is not None else _own_home()
    return home if os.path.isdir(home) else "/"
