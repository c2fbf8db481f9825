"""The [exec] security policy on its own: glob patterns, allow/deny lists and risky env variables.

The agent admits commands by it and its settings check their patterns with compile_patterns(); the
core replays it over what each agent reports in its hello for a command preview. Standard library only.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from typing import Final

# On POSIX a wildcard in an allow pattern never stretches over these in a shell command line:
# `echo *` allows `echo hi`, not `echo hi; rm -rf /`. cmd.exe has its own set.
SHELL_META_POSIX: Final = ";&|<>()$`\\\n\r"
SHELL_META_WINDOWS: Final = "&|<>()^%!\n\r"
_SEGMENT_SPLIT = re.compile(r"\|\||&&|\$\(|[;&|\n\r`()]")

# Variables that change which program runs or what it loads: with them an allowed command line
# could run anything. Refused in a command's env unless the allow list is `*` (full trust).
RISKY_ENV: Final = (
    "PATH",
    "LD_*",
    "DYLD_*",
    "BASH_ENV",
    "ENV",
    "BASH_FUNC_*",
    "IFS",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "CDPATH",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "PYTHON*",
    "PERL5*",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "GIT_SSH*",
    "GIT_EXEC_PATH",
    "GIT_CONFIG*",
)

# ---------------------------------------------------------------- patterns


def _glob_regex(pattern: str, wildcard: str) -> str:
    """fnmatch syntax (* ? [seq] [!seq]) to a regex whose wildcards match only `wildcard` chars."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            while i < n and pattern[i] == "*":
                i += 1
            out.append(f"{wildcard}*")
        elif c == "?":
            out.append(wildcard)
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
                continue
            body = pattern[i:j]
            i = j + 1
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            body = "".join(ch if ch == "-" else re.escape(ch) for ch in body)
            if negate:
                # A negated set must not let a metacharacter through either.
                excluded = wildcard[3:-1] if wildcard.startswith("[^") else ""
                out.append(f"[^{body}{excluded}]")
            else:
                out.append(f"[{body}]")
        else:
            out.append(re.escape(c))
    return "(?s:" + "".join(out) + r")\Z"


def portable_regex(pattern: str) -> str:
    """A plain pattern's whole-line regex in syntax JavaScript reads too (the agent's polkit rule)."""
    body = _glob_regex(pattern, r"[\s\S]")  # no (?s:) flag in JavaScript: [\s\S] is any character
    return "^(?:" + body.removeprefix("(?s:").removesuffix(r")\Z") + ")$"


def compile_patterns(patterns: Iterable[str], meta: str | None = None) -> list[tuple[str, re.Pattern[str]]]:
    """Each pattern with its regex: plain fnmatch, or with wildcards that skip `meta` characters."""
    wildcard = "." if meta is None else "[^" + "".join(re.escape(c) for c in meta) + "]"
    compiled = []
    for p in patterns:
        try:
            compiled.append((p, re.compile(_glob_regex(p, wildcard))))
        except re.error as exc:
            raise ValueError(f"bad pattern {p!r}: {exc}") from None
    return compiled


# ---------------------------------------------------------------- policy


class Policy:
    """Allow and deny lists of glob patterns (fnmatch syntax, case-sensitive, whole line).

    - An empty allow list allows nothing. Deny wins over allow.
    - For a shell command (POSIX sh or cmd.exe), a wildcard in an ALLOW pattern does not match
      shell metacharacters (; & | < > ( ) $ ` backslash newline; on Windows & | < > ( ) ^ % !),
      so `systemctl status *` cannot be stretched into `systemctl status x; reboot`. Literal
      metacharacters in the pattern still match themselves, and the pattern `*` alone allows
      everything.
    - A command's env may not set PATH, LD_*, DYLD_*, BASH_ENV, PYTHON* and the like (RISKY_ENV)
      unless the allow list is `*`: they would make an allowed line run something else.
    - For a shell command, DENY patterns are also tried against each simple command of the
      line (split at ; & && | || ` $( ( ) newline), so `rm *` catches `cd /tmp && rm -rf x`.
      Deny is a guard rail, not a sandbox: a shell can always spell a command another way, so
      the allow list is what keeps a host safe.
    """

    def __init__(self, allow: Iterable[str], deny: Iterable[str], *, windows: bool | None = None) -> None:
        meta = (
            SHELL_META_WINDOWS
            if (sys.platform == "win32" if windows is None else windows)
            else SHELL_META_POSIX
        )
        self.allow = list(allow)
        self.deny = list(deny)
        self._allow_any = compile_patterns(self.allow)
        self._allow_shell = compile_patterns(self.allow, meta)
        self._deny = compile_patterns(self.deny)
        self._risky_env = compile_patterns(RISKY_ENV)
        self.unrestricted = "*" in self.allow

    def check_env(self, env: Iterable[str]) -> str | None:
        """None if a command may set these variables, else why not.

        PATH, LD_PRELOAD and the like would let an allowed command line run something else, so
        they are refused unless the allow list is `*` (which allows everything anyway).
        """
        if self.unrestricted:
            return None
        for name in sorted(env):
            for _, rx in self._risky_env:
                if rx.match(name.upper()):
                    return (
                        f"env variable {name!r} is not allowed: it changes which program runs or what "
                        "it loads (only an [exec] allow list of '*' permits it)"
                    )
        return None

    def check(self, line: str, *, shell: bool = False) -> str | None:
        """None if `line` may run, else the reason it may not (for the operator)."""
        candidates = [line]
        if shell:
            candidates += [s.strip() for s in _SEGMENT_SPLIT.split(line) if s.strip()]
        for pattern, rx in self._deny:
            if any(rx.match(c) for c in candidates):
                return f"command matches [exec] deny pattern {pattern!r}"
        if not self.allow:
            return "command not allowed: the [exec] allow list is empty, so nothing may run"
        allow = self._allow_shell if shell else self._allow_any
        for pattern, rx in allow:
            if pattern == "*" or rx.match(line):
                return None
        return "command not allowed by [exec] allow list"
