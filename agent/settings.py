"""The agent's settings schema: TOML file, then SM_AGENT_* variables, then command-line flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from servermanager.agent.containers import ContainersSettings
from servermanager.agent.hardware import HardwareSettings
from servermanager.agent.logread.config import LogsSettings
from servermanager.agent.plugins.config import CheckSettings, CustomSettings, ScrapeSettings, validate_all

# The pattern syntax only: the runner (exec.runner) is imported when [exec] is enabled.
from servermanager.common.exec_policy import compile_patterns
from servermanager.common.incidents import MAX_JOURNAL_LINES, MAX_TOP
from servermanager.common.metrics import MAX_PROCS_TOP_N
from servermanager.common.protocol import AGENT_WS_PATH, DEFAULT_MAX_FRAME_BYTES, MAX_SAMPLES_PER_BATCH
from servermanager.common.settings import SettingsError, load_settings
from servermanager.common.signing import KeyLineError, parse_public_key
from servermanager.common.tls import parse_fingerprint

if TYPE_CHECKING:
    from servermanager.agent.processes import ProcessCollector

ENV_PREFIX = "SM_AGENT_"
# The enrollment token is a secret, so it is deliberately not a settings field: it can come only
# from this variable or --enroll-token, and never sits in a settings file next to the rest.
ENROLL_TOKEN_ENV = f"{ENV_PREFIX}ENROLL_TOKEN"

_SCHEMES = {"ws": "ws", "http": "ws", "wss": "wss", "https": "wss"}


def default_state_dir() -> str:
    import platformdirs  # only when no state dir is configured: it costs the agent RSS

    return os.path.join(platformdirs.user_state_dir("servermanager"), "agent")


def normalize_core_url(url: str) -> str:
    """ws://h:p, http://h:p, https://h/prefix or bare h:p -> the ws(s) URL of the agent socket."""
    raw = url.strip()
    if not raw:
        raise SettingsError("setting core: empty; expected a URL like ws://127.0.0.1:8760")
    if "://" not in raw:
        raw = f"ws://{raw}"  # a bare host:port is the common hand-typed form
    parts = urlsplit(raw)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise SettingsError(
            f"setting core: unsupported scheme {parts.scheme!r} in {url!r} (use ws, wss, http or https)"
        )
    if not parts.hostname:
        raise SettingsError(f"setting core: no host in {url!r}")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port only when it is read
    except ValueError:
        raise SettingsError(f"setting core: bad port in {url!r}") from None
    if parts.username or parts.password:
        # Logged on every reconnect, so a password in it would end up in the logs.
        raise SettingsError(f"setting core: {parts.hostname!r}: no user:password in the URL, please")
    if parts.query or parts.fragment:
        # Credentials never travel in a query string, and nothing else belongs there either.
        raise SettingsError(f"setting core: {url!r} must not have a query string or fragment")
    path = parts.path.rstrip("/")
    if not path.endswith(AGENT_WS_PATH):
        path = f"{path}{AGENT_WS_PATH}"  # keeps a reverse-proxy prefix such as https://host/sm
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class ExecSettings(msgspec.Struct, kw_only=True):
    """The [exec] table: remote commands and service control (env SM_AGENT_EXEC_<KEY>).

    Off by default, and even when enabled nothing runs until `allow` names it.
    """

    enabled: bool = False
    user: str = ""
    allow: list[str] = []
    deny: list[str] = []
    max_runtime: float = 3600.0
    max_output: int = 1 << 20
    max_concurrent: int = 8
    trusted_keys: list[str] = []
    trusted_keys_file: str = ""

    __doc_fields__ = {
        "enabled": "accept commands and service actions from the core at all (default off)",
        "user": "run commands as this user (needs the agent to run as root); empty: the agent's own user",
        "allow": "glob patterns a command line must match to run; empty allows nothing. Lines are the "
        "shell string, the argv joined with shell quoting, or 'service ACTION NAME' / 'service list'",
        "deny": "glob patterns that refuse a command even when allowed; deny wins over allow",
        "max_runtime": "longest a command may run; its own timeout is capped at this",
        "max_output": "bytes of output kept and sent per stream (stdout, stderr); the rest is only counted",
        "max_concurrent": "commands running at once; more are refused until one finishes",
        "trusted_keys": "operators' public keys ('ed25519:<base64> name' or 'ssh-ed25519 <base64> name'); "
        "with any trusted key, only requests signed by one of them run",
        "trusted_keys_file": "a file of such keys, one a line (# comments), re-read when it changes; "
        "setting it requires signatures even while it is empty",
    }

    @property
    def requires_signatures(self) -> bool:
        """Trusted keys are configured: every command and service request must be signed by one."""
        return bool(self.trusted_keys or self.trusted_keys_file)

    def validate(self) -> None:
        if self.max_runtime <= 0:
            raise SettingsError("setting exec.max_runtime must be above 0")
        if self.max_output < 0:
            raise SettingsError("setting exec.max_output must be 0 or more")
        if self.max_concurrent < 1:
            raise SettingsError("setting exec.max_concurrent must be at least 1")
        self.user = self.user.strip()
        for key in ("allow", "deny"):
            patterns = [p.strip() for p in getattr(self, key)]
            if any(not p for p in patterns):
                raise SettingsError(f"setting exec.{key}: empty pattern")
            try:
                compile_patterns(patterns)
            except ValueError as exc:
                raise SettingsError(f"setting exec.{key}: {exc}") from None
            setattr(self, key, patterns)
        self.trusted_keys = [k.strip() for k in self.trusted_keys if k.strip()]
        for line in self.trusted_keys:
            try:
                parse_public_key(line)
            except KeyLineError as exc:
                raise SettingsError(f"setting exec.trusted_keys: {exc}") from None
        self.trusted_keys_file = os.path.expanduser(self.trusted_keys_file.strip())


class IncidentSettings(msgspec.Struct, kw_only=True):
    """The [incident] table: snapshots for the core when an alert fires (env SM_AGENT_INCIDENT_<KEY>).

    Read-only: the top processes through psutil, and the journal only where `journal` allows it.
    """

    enabled: bool = True
    top: int = 5
    cmdline: bool = False
    journal: bool = False
    journal_lines: int = 50
    journal_since: float = 600.0

    __doc_fields__ = {
        "enabled": "answer the core's snapshot requests at all; false refuses each with a reason",
        "top": f"processes in each list (by CPU, by memory), 1 to {MAX_TOP}",
        "cmdline": "include command lines (truncated); off by default, since they can carry secrets",
        "journal": "include the last lines of the system journal (journalctl); off by default",
        "journal_lines": f"journal lines at most, 1 to {MAX_JOURNAL_LINES}",
        "journal_since": "how far back the journal is read, at most (the core asks for the alert's "
        "minutes before)",
    }

    def validate(self) -> None:
        if not 1 <= self.top <= MAX_TOP:
            raise SettingsError(f"setting incident.top must be 1 to {MAX_TOP} (got {self.top})")
        if not 1 <= self.journal_lines <= MAX_JOURNAL_LINES:
            raise SettingsError(
                f"setting incident.journal_lines must be 1 to {MAX_JOURNAL_LINES} (got {self.journal_lines})"
            )
        if not 60 <= self.journal_since <= 86400:
            raise SettingsError(
                f"setting incident.journal_since must be 1m to 24h (got {self.journal_since:g}s)"
            )


class ProcessesSettings(msgspec.Struct, kw_only=True):
    """The [processes] table: the top processes each sample carries (env SM_AGENT_PROCESSES_<KEY>).

    Read-only, through /proc (psutil elsewhere); no command runs for them.
    """

    enabled: bool = True
    top: int = 10
    # Off by default, as in [incident]: command lines can carry passwords and tokens, and they are
    # three quarters of a stored list (2,090 B against 494 B a snapshot).
    cmdline: bool = False
    # A list every 15 s, not every sample: a week of them is ~20 MB a node instead of ~60 MB at the
    # default 5 s sample interval (incident snapshots still give an alert's moment exactly).
    interval: float = 15.0

    __doc_fields__ = {
        "enabled": "send the top processes with the samples at all",
        "top": f"processes in each ranking (by CPU, by memory, by disk I/O), 1 to {MAX_PROCS_TOP_N}",
        "cmdline": "include command lines (cut to 200 characters); the core shows them to operators "
        "and admins only, since they can carry secrets",
        "interval": "seconds between two lists (0: every sample); samples in between carry none",
    }

    def validate(self) -> None:
        if not 1 <= self.top <= MAX_PROCS_TOP_N:
            raise SettingsError(f"setting processes.top must be 1 to {MAX_PROCS_TOP_N} (got {self.top})")
        if not 0 <= self.interval <= 3600:
            raise SettingsError(f"setting processes.interval must be 0 to 1h (got {self.interval:g}s)")

    def collector(self) -> ProcessCollector | None:
        # Imported here: the CLI reads settings without needing psutil.
        from servermanager.agent.processes import ProcessCollector

        return ProcessCollector(self.top, self.cmdline, every=self.interval) if self.enabled else None


class AgentSettings(msgspec.Struct, kw_only=True):
    """Settings of the agent daemon (TOML keys; env SM_AGENT_<KEY>)."""

    core: str = "ws://127.0.0.1:8760"
    core_fingerprint: str = ""
    ca_file: str = ""
    state_dir: str = msgspec.field(default_factory=default_state_dir)
    interval: float = 5.0
    batch_size: int = 500
    max_inflight_batches: int = 4
    spool_max_samples: int = 100_000
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    connect_timeout: float = 10.0
    log_level: str = "INFO"
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    host_root: str = ""
    exec: ExecSettings = msgspec.field(default_factory=ExecSettings)
    incident: IncidentSettings = msgspec.field(default_factory=IncidentSettings)
    logs: LogsSettings = msgspec.field(default_factory=LogsSettings)
    processes: ProcessesSettings = msgspec.field(default_factory=ProcessesSettings)
    containers: ContainersSettings = msgspec.field(default_factory=ContainersSettings)
    hardware: HardwareSettings = msgspec.field(default_factory=HardwareSettings)
    custom: list[CustomSettings] = []
    scrape: list[ScrapeSettings] = []
    check: list[CheckSettings] = []

    __doc_fields__ = {
        "core": "URL of the core (ws://, wss://, http:// or https://); /ws/agent is appended",
        "core_fingerprint": "pin of the core's TLS certificate (sha256:..., from `servermanager admin "
        "fingerprint`); kept with the credential at enrollment",
        "ca_file": "PEM file of the CA that signed the core's certificate, instead of the system's CAs",
        "state_dir": "where the credential and the sample spool live (mode 0700)",
        "interval": "seconds between samples until the core asks for another interval (min 1s)",
        "batch_size": "most samples in one batch sent to the core",
        "max_inflight_batches": "batches sent but not yet acknowledged, at most",
        "spool_max_samples": "samples kept on disk while the core is unreachable; oldest go first",
        "backoff_initial": "first reconnect delay ceiling; doubles per failed attempt (full jitter)",
        "backoff_max": "cap of the reconnect delay",
        "connect_timeout": "seconds allowed for the TCP/TLS/WebSocket opening and the welcome",
        "log_level": "DEBUG, INFO, WARNING or ERROR",
        "max_frame_bytes": "largest WebSocket frame sent or accepted (match the core's)",
        "host_root": "where the host's / is mounted read-only when the agent runs in a container "
        "(e.g. /hostfs): disk usage then covers the host's mounts; empty: the agent's own view",
        "exec": "remote commands and service control: the [exec] table (off by default)",
        "incident": "snapshots of the top processes (and journal) when an alert fires: the [incident] table",
        "logs": "read-only journal and allowlisted log files for the node view: the [logs] table",
        "processes": "the top processes sent with every sample: the [processes] table",
        "containers": "Docker or Podman containers through the engine's socket, read-only: the "
        "[containers] table",
        "hardware": "NVIDIA GPUs (NVML) and SMART disk health (smartctl): the [hardware] table",
        "custom": "commands whose output becomes named series: [[custom]] tables",
        "scrape": "local Prometheus endpoints (loopback only) read into named series: [[scrape]] tables",
        "check": "HTTP(S), TCP and ping checks run from this agent: [[check]] tables",
    }

    def validate(self) -> None:
        # Normalised here, once, so everything downstream sees the one URL actually dialled.
        self.core = normalize_core_url(self.core)
        self._validate_trust()
        if not self.state_dir.strip():
            raise SettingsError("setting state_dir must not be empty")
        self.state_dir = os.path.abspath(os.path.expanduser(self.state_dir))
        if self.interval < 1:
            raise SettingsError(
                f"setting interval must be at least 1 second (got {self.interval:g}s); "
                "sampling faster costs more than it shows"
            )
        if not 1 <= self.batch_size <= MAX_SAMPLES_PER_BATCH:
            raise SettingsError(
                f"setting batch_size must be from 1 to {MAX_SAMPLES_PER_BATCH} (the core's limit)"
            )
        if self.max_inflight_batches < 1:
            raise SettingsError("setting max_inflight_batches must be at least 1")
        if self.spool_max_samples < 1:
            raise SettingsError("setting spool_max_samples must be at least 1")
        if self.backoff_initial <= 0:
            raise SettingsError("setting backoff_initial must be above 0")
        if self.backoff_max < self.backoff_initial:
            raise SettingsError("setting backoff_max must be at least backoff_initial")
        if self.connect_timeout <= 0:
            raise SettingsError("setting connect_timeout must be above 0")
        if self.max_frame_bytes < 4096:
            raise SettingsError("setting max_frame_bytes must be at least 4096")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError(
                f"setting log_level: expected DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}"
            )
        self.log_level = self.log_level.upper()
        self.host_root = self.host_root.strip()
        if self.host_root:
            self.host_root = os.path.abspath(self.host_root)
            mounts = os.path.join(self.host_root, "proc", "1", "mounts")
            if not os.access(mounts, os.R_OK):
                raise SettingsError(
                    f"setting host_root: {mounts} is not readable; mount the host's / there (read-only)"
                )
        self.exec.validate()
        self.incident.validate()
        self.logs.validate()
        self.processes.validate()
        self.containers.validate()
        self.hardware.validate()
        validate_all(self.custom, self.scrape, self.check)

    def _validate_trust(self) -> None:
        if self.core_fingerprint.strip():
            try:
                self.core_fingerprint = parse_fingerprint(self.core_fingerprint)
            except ValueError as exc:
                raise SettingsError(f"setting core_fingerprint: {exc}") from None
        else:
            self.core_fingerprint = ""
        if self.ca_file.strip():
            self.ca_file = os.path.abspath(os.path.expanduser(self.ca_file.strip()))
            if not os.path.isfile(self.ca_file) or not os.access(self.ca_file, os.R_OK):
                raise SettingsError(f"setting ca_file: {self.ca_file} is not a readable file")
        else:
            self.ca_file = ""
        if (self.core_fingerprint or self.ca_file) and not self.core.startswith("wss://"):
            key = "core_fingerprint" if self.core_fingerprint else "ca_file"
            raise SettingsError(
                f"setting {key} is for a TLS core, but core is {self.core}: use a wss:// or https:// URL"
            )

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)


def load_agent_settings(
    *,
    config_file: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentSettings:
    """Defaults < TOML < SM_AGENT_* < overrides (the CLI flags: core, state_dir, interval)."""
    return load_settings(
        AgentSettings, env_prefix=ENV_PREFIX, config_file=config_file, overrides=overrides, environ=environ
    )


def enroll_token_from(flag: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """--enroll-token wins over SM_AGENT_ENROLL_TOKEN; blank means none."""
    env = os.environ if environ is None else environ
    token = flag if flag else env.get(ENROLL_TOKEN_ENV)
    return token.strip() or None if token else None
