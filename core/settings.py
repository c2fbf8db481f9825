"""The core daemon's settings schema (TOML keys; env SM_CORE_<KEY>)."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, unquote, urlsplit

import msgspec

from servermanager.common.history import RETENTION_1H, RETENTION_1M, RETENTION_RAW
from servermanager.common.settings import SettingsError

# What logging knows by name; anything else ("VERBOSE") is refused rather than read as INFO.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


BUS_SCHEMES = ("redis", "rediss", "unix")


def check_bus_url(bus: str) -> None:
    """SettingsError (naming the URL without its password) unless `bus` is local or a usable Redis URL."""
    if bus == "local":
        return
    try:
        parts = urlsplit(bus)
        port = parts.port  # raises on a port that is not a number
    except ValueError as exc:
        raise SettingsError(f"setting bus: {exc} in {redact_url(bus)}") from None
    if parts.scheme not in BUS_SCHEMES:
        raise SettingsError(
            f"setting bus: expected local or a redis://, rediss:// or unix:// URL, got {redact_url(bus)!r}"
        )
    if parts.scheme == "unix" and not parts.path:
        raise SettingsError("setting bus: a unix:// URL needs the socket's path")
    if parts.scheme != "unix" and not parts.hostname:
        raise SettingsError(f"setting bus: no host in {redact_url(bus)!r}")
    db = parts.path.strip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise SettingsError(f"setting bus: the path must be a database number, got {db!r}")
    del port


class CoreSettings(msgspec.Struct, kw_only=True):
    """Settings of the core daemon (TOML keys; env SM_CORE_<KEY>)."""

    listen: str = "127.0.0.1:8760"
    tls: str = "auto"
    tls_cert: str = ""
    tls_key: str = ""
    data_dir: str = ""
    database: str = "sqlite"
    log_level: str = "INFO"
    max_frame_bytes: int = 1 << 20
    hello_timeout: float = 10.0
    max_unauthenticated: int = 256
    ingest_bytes_per_second: float = 2 * (1 << 20)
    ingest_frames_per_second: float = 50.0
    ingest_batches_in_flight: int = 4
    agent_interval: float = 0.0
    heartbeat_misses: int = 3
    sample_max_future: float = 300.0
    sample_max_age: float = 86400.0
    retention_raw: float = RETENTION_RAW
    retention_1m: float = RETENTION_1M
    retention_1h: float = RETENTION_1H
    retention_processes: float = 7 * 86400.0
    retention_containers: float = 7 * 86400.0
    rollup_every: float = 10.0
    prune_every: float = 300.0
    flush_every: float = 0.05
    push_gather: float = 0.01
    history_cache_mb: float = 64.0
    access_token_ttl: float = 900.0
    refresh_token_ttl: float = 30 * 86400.0
    login_max_failures: int = 5
    login_window: float = 300.0
    step_up_window: float = 300.0
    totp_required_role: str = ""
    metrics_auth: bool = True
    commands_per_minute: int = 30
    uvloop: bool = True
    alert_group_wait: float = 10.0
    alert_repeat_interval: float = 4 * 3600.0
    alert_repeat_max: float = 86400.0
    alert_retention: float = 90 * 86400.0
    alert_flap_window: float = 600.0
    alert_flap_max: int = 4
    alert_delivery_timeout: float = 10.0
    alert_retry_initial: float = 10.0
    alert_retry_max: float = 600.0
    alert_delivery_max_age: float = 86400.0
    agent_package: str = ""
    bus: str = "local"
    bus_prefix: str = "sm"
    bus_ttl: float = 5.0
    core_id: str = ""

    __doc_fields__ = {
        "listen": "HOST:PORT the HTTP and WebSocket server binds",
        "tls": "auto (HTTPS/WSS unless listening on loopback only), on, or off (plain HTTP behind a "
        "TLS-terminating proxy)",
        "tls_cert": "PEM certificate (chain) to serve; empty: one generated into the data dir on first start",
        "tls_key": "PEM private key of tls_cert",
        "data_dir": "where the SQLite database lives (default: the platform's user data dir)",
        "database": "sqlite (the file in the data dir) or a PostgreSQL URL, postgresql://USER@HOST:PORT/DBNAME; "
        "the password is best given by PGPASSWORD or ~/.pgpass rather than in the URL",
        "log_level": "DEBUG, INFO, WARNING or ERROR",
        "max_frame_bytes": "largest WebSocket frame accepted; bigger ones close with 1009",
        "hello_timeout": "seconds a new socket may stay silent before its first frame",
        "max_unauthenticated": "WebSockets that have not yet sent hello or auth; more are closed with 1013",
        "ingest_bytes_per_second": "bytes one agent may send per second; faster, its socket is read slower",
        "ingest_frames_per_second": "frames one agent may send per second; faster, its socket is read slower",
        "ingest_batches_in_flight": "sample batches of one agent waiting for their commit before its socket is read again",
        "agent_interval": "sample interval imposed on every agent; 0 lets each agent use its own",
        "heartbeat_misses": "missed intervals after which a silent node is marked offline",
        "sample_max_future": "samples stamped further ahead of the core's clock are rejected",
        "sample_max_age": "samples older than this are rejected (keep below retention_raw)",
        "retention_raw": "how long raw samples are kept",
        "retention_1m": "how long 1-minute rollups are kept",
        "retention_1h": "how long 1-hour rollups are kept",
        "retention_processes": "how long the top processes of each sample are kept",
        "retention_containers": "how long the container lists the agents send are kept",
        "rollup_every": "how often the rollup job runs",
        "prune_every": "how often the retention job runs",
        "flush_every": "longest time a received sample waits before its batch is committed",
        "push_gather": "how long a client's live events gather before they go out as one frame; 0: each at once",
        "history_cache_mb": "memory for past days of 1-minute history kept as ready JSON; 0 turns it off",
        "access_token_ttl": "lifetime of an access token from login",
        "refresh_token_ttl": "lifetime of a refresh token",
        "login_max_failures": "failed logins per user and address before refusing more",
        "login_window": "window for counting failed logins",
        "step_up_window": "a signed-in user runs commands only this long after entering a password or code; 0: off",
        "totp_required_role": "operator or admin: users of that role or above must set up two-factor sign-in; empty: optional",
        "metrics_auth": "require a bearer token on GET /metrics",
        "commands_per_minute": "commands and service actions one user may start per minute",
        "uvloop": "run on uvloop's event loop where it is installed (Linux, macOS); false: plain asyncio",
        "alert_group_wait": "how long a channel's first notification waits; those that come meanwhile join it",
        "alert_repeat_interval": "a firing, unacknowledged alert is notified again after this, doubling each time",
        "alert_repeat_max": "the longest wait between repeated notifications of one alert",
        "alert_retention": "how long resolved alerts are kept, with their transitions and deliveries",
        "alert_flap_window": "window in which an alert's firing/resolved flips are counted",
        "alert_flap_max": "more flips than this within alert_flap_window hold its notifications back",
        "alert_delivery_timeout": "how long one notification may take (webhook POST, SMTP session, Apprise call)",
        "alert_retry_initial": "first wait before a failed notification is tried again; doubles per attempt",
        "alert_retry_max": "longest wait between two attempts of a failed notification",
        "alert_delivery_max_age": "a notification still failing this long after it was queued is marked failed",
        "agent_package": "the agent wheel (.whl) new servers install from this core (GET /api/v1/agent/package); "
        "empty: the wheel of this version in <venv>/share/servermanager, else built from this core's source tree "
        "on first request and kept in the data dir",
        "bus": "where live events, command routing and node ownership go: local (this process only) or a "
        "redis:// (rediss://, unix://) URL that several cores share to serve one fleet",
        "bus_prefix": "the prefix of every Redis key and channel: cores with the same bus and prefix form one cluster",
        "bus_ttl": "how long a dead core's node ownership and leadership last in Redis before another core takes over",
        "core_id": "this core's name in the cluster (unique per process); empty: host name, port and a random suffix",
    }

    def validate(self) -> None:
        self.database = self.database.strip()
        if self.database.lower() == "sqlite":
            self.database = "sqlite"
        else:
            parse_database_url(self.database)
        if self.log_level.upper() not in LOG_LEVELS:
            raise SettingsError(
                f"setting log_level: expected DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}"
            )
        self.log_level = self.log_level.upper()
        _, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit():
            raise SettingsError(f"setting listen: expected HOST:PORT, got {self.listen!r}")
        if self.totp_required_role not in ("", "viewer", "operator", "admin"):
            raise SettingsError("setting totp_required_role must be empty, viewer, operator or admin")
        if self.step_up_window < 0:
            raise SettingsError("setting step_up_window must be 0 (off) or more")
        self.tls = self.tls.strip().lower()
        if self.tls not in ("auto", "on", "off"):
            raise SettingsError(f"setting tls: expected auto, on or off, got {self.tls!r}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("settings tls_cert and tls_key go together: set both or neither")
        if self.tls_cert and self.tls == "off":
            raise SettingsError(
                "settings tls_cert and tls_key are set but tls is off: remove one or the other"
            )
        if self.max_unauthenticated < 1:
            raise SettingsError("setting max_unauthenticated must be at least 1")
        if self.ingest_bytes_per_second < self.max_frame_bytes / 10 or self.ingest_frames_per_second < 1:
            raise SettingsError(
                "settings ingest_bytes_per_second must be at least max_frame_bytes / 10 "
                "and ingest_frames_per_second at least 1"
            )
        if self.ingest_batches_in_flight < 1:
            raise SettingsError("setting ingest_batches_in_flight must be at least 1")
        if self.heartbeat_misses < 1:
            raise SettingsError("setting heartbeat_misses must be at least 1")
        if self.agent_interval and self.agent_interval < 1:
            raise SettingsError("setting agent_interval must be 0 (agent decides) or at least 1 second")
        if self.retention_processes <= 0:
            raise SettingsError("setting retention_processes must be above 0")
        if self.retention_containers <= 0:
            raise SettingsError("setting retention_containers must be above 0")
        if not 0 <= self.push_gather <= 1:
            raise SettingsError("setting push_gather must be between 0 (each event at once) and 1 second")
        if self.history_cache_mb < 0:
            raise SettingsError("setting history_cache_mb must be 0 (off) or more")
        if self.alert_repeat_interval <= 0 or self.alert_repeat_max < self.alert_repeat_interval:
            raise SettingsError("setting alert_repeat_interval must be above 0 and at most alert_repeat_max")
        if self.alert_group_wait < 0 or self.alert_flap_max < 1 or self.alert_flap_window < 0:
            raise SettingsError(
                "settings alert_group_wait and alert_flap_window must be 0 or more, alert_flap_max 1 or more"
            )
        if self.alert_delivery_timeout <= 0 or self.alert_retry_initial <= 0:
            raise SettingsError("settings alert_delivery_timeout and alert_retry_initial must be above 0")
        if self.alert_retry_max < self.alert_retry_initial:
            raise SettingsError("setting alert_retry_max must be at least alert_retry_initial")
        if self.sample_max_age >= self.retention_raw:
            raise SettingsError("setting sample_max_age must be below retention_raw")
        self.bus = self.bus.strip()
        check_bus_url(self.bus)
        if not self.bus_prefix or any(c.isspace() for c in self.bus_prefix):
            raise SettingsError("setting bus_prefix must be non-empty and without spaces")
        if "\0" in self.core_id:
            raise SettingsError("setting core_id must not contain NUL")
        if self.bus_ttl < 1:
            raise SettingsError("setting bus_ttl must be at least 1 second")

    @property
    def clustered(self) -> bool:
        """Several cores share a Redis bus (else this process is the whole cluster)."""
        return self.bus != "local"

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _split(url: str) -> SplitResult | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return None
    return parts


def redact_url(url: str) -> str:
    """`url` with its password, if any, as `***`: what every log line and error shows of a database URL."""
    parts = _split(url)
    if parts is None:
        # Unparseable: whatever sits between "//" and "@" may be a password.
        return re.sub(r"//[^@/]*@", "//***@", url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def parse_database_url(url: str) -> SplitResult:
    """A `postgresql://` URL checked for what a connection needs; SettingsError names the fault
    (with the password redacted) otherwise."""
    parts = _split(url)
    shown = redact_url(url)
    if parts is None or parts.scheme not in ("postgresql", "postgres"):
        raise SettingsError(
            f"setting database: expected sqlite or a postgresql://USER@HOST:PORT/DBNAME URL, got {shown!r}"
        )
    if not parts.hostname:
        raise SettingsError(f"setting database: no host in {shown!r}")
    if not unquote(parts.path.lstrip("/")):
        raise SettingsError(f"setting database: no database name in {shown!r} (postgresql://HOST/DBNAME)")
    return parts
