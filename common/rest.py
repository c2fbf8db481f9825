"""Typed REST request and response bodies: the core validates with them, OpenAPI is built from them, the desktop decodes them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from servermanager.common.alerts import Alert, AlertState, AlertTransition, Delivery, Op, Severity
from servermanager.common.incidents import IncidentSnapshot
from servermanager.common.protocol import (
    JOURNAL,
    MAX_LOG_LINES,
    CommandSignature,
    LogEntry,
    LogSource,
    LogSources,
    LogUnit,
    NodeInfo,
    ServiceInfo,
    ServiceRequest,
)
from servermanager.common.series import PluginStatus

Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]
Group = Annotated[str, Meta(max_length=64)]
Tag = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.:/-]+$")]
# What a client may send as an id or a time: in range for storage (SQLite integers are 64-bit), so an
# absurd value is a precise 400, never an overflow deeper down.
Id = Annotated[int, Meta(ge=1, le=2**63 - 1)]
Timestamp = Annotated[float, Meta(ge=0, le=1e11, description="seconds since the Unix epoch")]
RoleName = Literal["viewer", "operator", "admin"]
Resolution = Literal["auto", "raw", "1m", "1h"]


class Targets(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Which nodes a command (or, later, an alert rule) is for: listed ids, a group, a tag or all."""

    nodes: Annotated[list[Id], Meta(max_length=10_000)] | None = None
    group: str | None = None
    tag: str | None = None
    all: bool = False


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


class Health(msgspec.Struct):
    status: Literal["ok", "degraded"]  # degraded: serving, but something needs the operator (problems)
    version: str
    protocol: int
    problems: list[str] = []


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, Meta(min_length=1, max_length=64)]
    password: Annotated[str, Meta(min_length=1, max_length=1024)]
    # The device token an earlier login on this device got: its failed logins are counted apart,
    # so failures from anyone else cannot lock it out.
    device_token: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    # The authenticator app's 6 digits (or a recovery code) when the user has two-factor sign-in.
    otp: Annotated[str, Meta(min_length=6, max_length=32)] | None = None


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, Meta(min_length=1, max_length=256)]


class TokenPair(msgspec.Struct):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"
    role: str = ""
    device_token: str | None = None  # login only: keep it (a secret) and send it with the next login
    must_change_password: bool = False  # the password was generated or reset: ask for a new one
    totp_setup_required: bool = False  # this role must sign in with two factors: set them up first


class Me(msgspec.Struct):
    id: int
    name: str
    role: str
    must_change_password: bool = False
    totp: bool = False  # two-factor sign-in is on for this user
    totp_setup_required: bool = False


class NodeList(msgspec.Struct):
    nodes: list[NodeInfo]


class NodePatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: Name | None = None
    group: Group | None = None
    tags: Annotated[list[Tag], Meta(max_length=32)] | None = None


class HistoryQuery(msgspec.Struct, forbid_unknown_fields=True):
    from_: Timestamp | None = msgspec.field(default=None, name="from")
    to: Timestamp | None = None
    resolution: Resolution = "auto"
    fields: str | None = None
    # At most this many points per series; adjacent rows are merged (see SampleStore.history).
    points: Annotated[int, Meta(ge=10, le=100_000)] | None = None


class History(msgspec.Struct):
    node_id: int
    resolution: Literal["raw", "1m", "1h"]
    from_: float = msgspec.field(name="from")
    to: float
    fields: list[str]
    ts: list[float]
    avg: dict[str, list[float | None]]
    step: float | None = None  # seconds per merged point, when `points` merged rows
    min: dict[str, list[float | None]] | None = None
    max: dict[str, list[float | None]] | None = None


class ProcessesQuery(msgspec.Struct, forbid_unknown_fields=True):
    at: Timestamp | None = None  # the snapshot at or just before this moment; default: the latest


class Process(msgspec.Struct, omit_defaults=True):
    """One process of a node's top list (the wire's ProcInfo, with its keys)."""

    pid: int
    name: str
    cpu_pct: float | None = None  # percent of the whole machine; None on the process's first sight
    rss: int = 0  # bytes
    user: str | None = None
    read_bps: float | None = None  # disk I/O, bytes/s; None where the OS does not tell
    write_bps: float | None = None
    cmd: str | None = None  # operators and admins only (command lines can carry secrets)


class Processes(msgspec.Struct):
    """The top processes (by CPU, memory and disk I/O) of the snapshot at or before the asked moment.

    `ts` is the snapshot's own time, None when the node has none stored (then `processes` is
    empty); `cmdline_hidden` says command lines were left out for the caller's role.
    """

    node_id: int
    ts: float | None
    processes: list[Process]
    cmdline_hidden: bool = False


class ContainersQuery(msgspec.Struct, forbid_unknown_fields=True):
    at: Timestamp | None = None  # the list at or just before this moment; default: the latest


class Container(msgspec.Struct, omit_defaults=True):
    """One container of a node's list (the wire's ContainerInfo, with its keys)."""

    name: str
    image: str = ""
    state: str = ""
    health: str | None = None
    cpu_pct: float | None = None  # percent of one CPU, as `docker stats` shows it
    mem_used: int | None = None  # bytes
    mem_limit: int | None = None
    net_rx_bps: float | None = None  # bytes/s
    net_tx_bps: float | None = None
    blk_read_bps: float | None = None
    blk_write_bps: float | None = None


class Containers(msgspec.Struct):
    """The node's containers in the list at or before the asked moment; `ts` is the list's own
    time, None when the node has none stored (no engine, or [containers] off on its agent)."""

    node_id: int
    ts: float | None
    containers: list[Container]


ContainerName = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class ContainerHistoryQuery(msgspec.Struct, forbid_unknown_fields=True):
    name: ContainerName
    from_: Timestamp | None = msgspec.field(default=None, name="from")  # default: an hour before `to`
    to: Timestamp | None = None  # default: now
    points: Annotated[int, Meta(ge=10, le=10_000)] = 1000  # at most about this many lists are read


class ContainerHistory(msgspec.Struct):
    """One container's series, a value per stored list that had it; None where it had no value
    (not running, or the first sight of it)."""

    node_id: int
    name: str
    from_: float = msgspec.field(name="from")
    to: float
    ts: list[float]
    cpu_pct: list[float | None]
    mem_used: list[int | None]
    mem_limit: list[int | None]
    net_rx_bps: list[float | None]
    net_tx_bps: list[float | None]
    blk_read_bps: list[float | None]
    blk_write_bps: list[float | None]


class SeriesInfo(msgspec.Struct, omit_defaults=True):
    """One named series of a node, with its last stored point."""

    name: str
    labels: dict[str, str]
    selector: str  # name{label="value",...}: what history's `series` and an alert rule's metric take
    unit: str | None = None
    last_ts: float | None = None
    last_value: float | None = None


class SeriesList(msgspec.Struct):
    """A node's named series (custom metrics, scrapes, checks) and how each agent entry last ran.

    `plugins` is what the node's latest sample said (empty while it has sent none since the core started).
    """

    node_id: int
    series: list[SeriesInfo]
    plugins: list[PluginStatus]


class SeriesListQuery(msgspec.Struct, forbid_unknown_fields=True):
    """Which of a node's series: its agent's own ("custom": custom metrics, scrapes, checks) or
    the per-device ones the core derives from its samples ("device": `dev:disk_pct{mount="/"}`...)."""

    kind: Literal["custom", "device"] = "custom"


class SeriesHistoryQuery(msgspec.Struct, forbid_unknown_fields=True):
    """One series by `series` (a selector: `check_up{check="web"}`), or by `name` and `labels`
    (a JSON object: `{"check": "web"}`)."""

    series: Annotated[str, Meta(min_length=1, max_length=512)] | None = None
    name: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    labels: Annotated[str, Meta(max_length=2048)] | None = None
    from_: Timestamp | None = msgspec.field(default=None, name="from")
    to: Timestamp | None = None
    resolution: Resolution = "auto"


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    password: Annotated[str, Meta(min_length=8, max_length=1024)]
    role: RoleName


class User(msgspec.Struct):
    id: int
    name: str
    role: str
    created_at: float
    disabled: bool = False
    must_change_password: bool = False
    totp: bool = False


class UserPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Change a user: role, disabled (signs them out everywhere at once), or `totp: false` to reset
    a lost authenticator."""

    role: RoleName | None = None
    disabled: bool | None = None
    totp: Literal[False] | None = None


Password = Annotated[str, Meta(min_length=8, max_length=1024)]


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Annotated[str, Meta(min_length=1, max_length=1024)]
    new_password: Password


class PasswordReset(msgspec.Struct, forbid_unknown_fields=True):
    """An admin sets a new password; the user must change it at the next sign-in."""

    new_password: Password


class TokenInfo(msgspec.Struct):
    """A token, never its secret: `id` is a short, public handle to revoke it by."""

    id: str
    user: str
    kind: str  # access, refresh, api
    name: str | None
    created_at: float
    expires_at: float | None
    session: str | None  # tokens of one sign-in share it
    current: bool = False  # the token of this very request


class TokenList(msgspec.Struct):
    tokens: list[TokenInfo]


class TokenQuery(msgspec.Struct, forbid_unknown_fields=True):
    user: Name | None = None  # admins: another user's (default: your own); "*" is not a name


class EnrollTokenInfo(msgspec.Struct):
    id: str
    created_at: float
    expires_at: float
    uses_left: int


class EnrollTokenList(msgspec.Struct):
    tokens: list[EnrollTokenInfo]


class TotpSetup(msgspec.Struct):
    """Put `secret` (or the otpauth:// `uri`, as a QR code) in an authenticator app, then confirm a code."""

    secret: str
    uri: str


class TotpCode(msgspec.Struct, forbid_unknown_fields=True):
    code: Annotated[str, Meta(min_length=6, max_length=32)]


class RecoveryCodes(msgspec.Struct):
    """Shown once: each signs in once in place of the authenticator's code."""

    codes: list[str]


class StepUp(msgspec.Struct, forbid_unknown_fields=True):
    """Confirm it is you before a command: the password, or the authenticator's code."""

    password: Annotated[str, Meta(min_length=1, max_length=1024)] | None = None
    code: Annotated[str, Meta(min_length=6, max_length=32)] | None = None


class UserList(msgspec.Struct):
    users: list[User]


class ApiTokenCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name


class ApiToken(msgspec.Struct):
    name: str
    token: str
    role: str


class EnrollTokenCreate(msgspec.Struct, forbid_unknown_fields=True):
    ttl: Annotated[float, Meta(gt=0, le=30 * 86400)] = 3600.0
    uses: Annotated[int, Meta(ge=1, le=100_000)] = 1


class EnrollToken(msgspec.Struct):
    token: str
    expires_at: float
    uses: int


class InstallCommandCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new enrollment token and the lines that install an agent with it."""

    ttl: Annotated[float, Meta(gt=0, le=30 * 86400)] = 3600.0
    uses: Annotated[int, Meta(ge=1, le=100_000)] = 1
    # The core's address as the new server reaches it (https://HOST:PORT); default: the address
    # this request came to, unless that is loopback.
    core_url: Annotated[str, Meta(min_length=1, max_length=300)] | None = None


class InstallCommand(msgspec.Struct, kw_only=True):
    """Paste `linux` (a shell of a user who may sudo) or `windows` (an elevated Windows PowerShell) on
    the new server; `agent` is for one that already has servermanager. All carry the token."""

    token: str
    token_id: str  # revoke it by this id (DELETE /api/v1/enroll-tokens/{id}) if it was shared too widely
    expires_at: float
    uses: int
    core_url: str
    linux: str
    windows: str
    agent: str
    fingerprint: str | None = None  # sha256:<hex> of the core's certificate, with TLS
    public_key_pin: str | None = None  # sha256//<base64> of its public key, what curl --pinnedpubkey takes


class AgentPackageInfo(msgspec.Struct, kw_only=True):
    """The agent wheel GET /api/v1/agent/package serves, and its SHA-256 to check it by."""

    filename: str
    version: str
    sha256: str
    size: int


class AuditQuery(msgspec.Struct, forbid_unknown_fields=True):
    user: str | None = None
    action: str | None = None
    target: str | None = None
    node: Id | None = None
    from_: Timestamp | None = msgspec.field(default=None, name="from")
    to: Timestamp | None = None
    limit: Annotated[int, Meta(ge=1, le=5000)] = 200


class AuditEntry(msgspec.Struct):
    id: int
    ts: float
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any] | None
    result: str


class AuditList(msgspec.Struct):
    entries: list[AuditEntry]


ArgvItem = Annotated[str, Meta(min_length=1, max_length=65536)]
CommandId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


class CommandCreate(msgspec.Struct, forbid_unknown_fields=True):
    targets: Targets
    # A string runs through the agent's shell; a list is an argv run with no shell at all.
    command: (
        Annotated[str, Meta(min_length=1, max_length=65536)]
        | Annotated[list[ArgvItem], Meta(min_length=1, max_length=1024)]
    )
    timeout: Annotated[float, Meta(gt=0, le=86400)] = 60.0
    env: Annotated[
        dict[Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str], Meta(max_length=256)
    ] = {}
    cwd: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None
    queue_offline: bool = False
    expires_in: Annotated[float, Meta(gt=0, le=7 * 86400)] = 3600.0
    # Signed commands (common.signing): the client picks the id, since the signatures cover it, and
    # signs once per target node (resolve the targets with GET /nodes first); the core passes each
    # node its own signature untouched. An agent with trusted keys runs nothing unsigned.
    id: CommandId | None = None
    signatures: Annotated[dict[Id, CommandSignature], Meta(max_length=10_000)] | None = None


class ServiceBatch(msgspec.Struct, forbid_unknown_fields=True):
    """One service action on many nodes (POST /services, and its preview): a command whose body is
    a service request, fanned out like POST /commands."""

    targets: Targets
    action: Literal["list", "status", "start", "stop", "restart", "enable", "disable"]
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9@_.:][A-Za-z0-9@_.:+-]{0,255}$")] | None = None
    timeout: Annotated[float, Meta(gt=0, le=300)] = 30.0
    queue_offline: bool = False
    expires_in: Annotated[float, Meta(gt=0, le=7 * 86400)] = 3600.0
    id: CommandId | None = None
    signatures: Annotated[dict[Id, CommandSignature], Meta(max_length=10_000)] | None = None


Verdict = Literal["run", "queue", "refused", "unknown"]


class PreviewRun(msgspec.Struct):
    """What one target node would do with the request: run it, queue it until it is back, refuse it
    (with why), or unknown (its agent has not said what its [exec] allows)."""

    node_id: int
    name: str
    verdict: Verdict
    reason: str | None = None


class CommandPreview(msgspec.Struct):
    """A dry run: nothing was sent. `line` is what each agent's [exec] patterns are matched against."""

    line: str
    runs: list[PreviewRun]
    run: int  # nodes that would run it now
    queue: int
    refused: int
    unknown: int


class CommandRunInfo(msgspec.Struct):
    node_id: int
    status: str
    exit_code: int | None
    signal: int | None
    duration: float | None
    stdout: str
    stderr: str
    stdout_bytes: int
    stderr_bytes: int
    truncated: bool
    message: str | None
    services: list[ServiceInfo] | None
    finished_at: float | None
    signed_by: str | None = None  # the key id of the signature this node got, if any


class CommandInfo(msgspec.Struct):
    id: str
    user: str
    created_at: float
    kind: str
    command: str | list[str] | None
    service: ServiceRequest | None
    timeout: float
    targets: Targets
    expires_at: float | None
    status: str
    runs: list[CommandRunInfo]


class CommandListQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, Meta(ge=1, le=500)] = 50


class CommandList(msgspec.Struct):
    commands: list[CommandInfo]


class ServiceActionQuery(msgspec.Struct, forbid_unknown_fields=True):
    """A service request; signed, it carries the command id and the signature block's fields
    (all or none of them) for the one node it is for."""

    timeout: Annotated[float, Meta(gt=0, le=300)] = 30.0
    id: CommandId | None = None
    key_id: Annotated[str, Meta(max_length=80)] | None = None
    nonce: Annotated[str, Meta(max_length=64)] | None = None
    expires_at: Annotated[int, Meta(ge=0, le=10**11)] | None = None
    sig: Annotated[str, Meta(max_length=100)] | None = None


class ServiceList(msgspec.Struct):
    node_id: int
    services: list[ServiceInfo]


# ---------------------------------------------------------------- logs


class LogsQuery(msgspec.Struct, forbid_unknown_fields=True):
    """GET /nodes/{id}/logs: the journal (unit, priority 0-7 and since/until filters) or one file the
    agent's [logs] config allowlists (lines and match only)."""

    source: LogSource = JOURNAL
    unit: LogUnit | None = None
    priority: Annotated[int, Meta(ge=0, le=7)] | None = None
    since: Timestamp | None = None
    until: Timestamp | None = None
    lines: Annotated[int, Meta(ge=0, le=MAX_LOG_LINES)] = 100
    match: Annotated[str, Meta(max_length=256)] | None = None


class LogsResponse(msgspec.Struct):
    """Entries oldest first, each [ts, priority, unit, message]; `truncated` if a limit cut them."""

    node_id: int
    source: str
    entries: list[LogEntry]
    truncated: bool = False
    note: str | None = None


class LogSourcesResponse(msgspec.Struct):
    """What the node's agent offers (as it said when it connected); sources None: an agent too old to say."""

    node_id: int
    online: bool
    sources: LogSources | None = None


# ---------------------------------------------------------------- alerting
# Durations are seconds, or a string such as "500ms", "30s", "5m", "1h", "7d" (common.settings).
Duration = float | Annotated[str, Meta(min_length=1, max_length=32)]
ChannelIds = Annotated[list[Id], Meta(max_length=32)]


class RuleCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An alert rule. `metric` is a scalar field of the metric table or "offline" (then `for` is the
    grace period and the thresholds are unused), a named series (`series:check_up{check="web"}`), or
    a device's, container's or GPU's value (`dev:disk_pct{mount="/"}`, `container:running{name="web"}`,
    `gpu:util_pct{index="0"}`; without the label, the worst of them). With `critical_threshold` the
    rule has both severities: warning past `threshold`, critical past `critical_threshold`."""

    name: Name
    # A scalar field, "offline", "series:NAME{label=\"v\",...}" for a named series (exact labels), or
    # "dev:", "container:" or "gpu:" NAME{item-label="v"} (common/itemmetrics.py; no label: every item).
    metric: Annotated[str, Meta(min_length=1, max_length=512)]
    op: Op = ">"
    threshold: float = 0.0
    clear_threshold: float | None = None  # hysteresis: clears only past this (default: threshold)
    critical_threshold: float | None = None
    for_: Duration = msgspec.field(default=0.0, name="for")
    keep_firing_for: Duration = 0.0
    severity: Severity = "warning"
    targets: Targets
    channels: ChannelIds = []
    enabled: bool = True


class RulePatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    name: Name | None = None
    metric: Annotated[str, Meta(min_length=1, max_length=512)] | None = None
    op: Op | None = None
    threshold: float | None = None
    clear_threshold: float | msgspec.UnsetType | None = msgspec.UNSET  # left out: kept; null: none
    critical_threshold: float | msgspec.UnsetType | None = msgspec.UNSET  # left out: kept; null: none
    for_: Duration | None = msgspec.field(default=None, name="for")
    keep_firing_for: Duration | None = None
    severity: Severity | None = None
    targets: Targets | None = None
    channels: ChannelIds | None = None
    enabled: bool | None = None


class Rule(msgspec.Struct, kw_only=True):
    id: int
    name: str
    metric: str
    op: Op
    threshold: float
    clear_threshold: float | None
    critical_threshold: float | None
    for_: float = msgspec.field(name="for")  # seconds
    keep_firing_for: float  # seconds
    severity: Severity
    targets: Targets
    channels: list[int]
    enabled: bool
    created_at: float
    created_by: str


class RuleList(msgspec.Struct):
    rules: list[Rule]


class RulePreviewQuery(msgspec.Struct, forbid_unknown_fields=True):
    range: Literal["24h", "7d"] = "24h"


class PreviewAlert(msgspec.Struct):
    node_id: int
    node: str
    started_at: float
    fired_at: float
    resolved_at: float | None
    peak: float | None


class RulePreview(msgspec.Struct):
    """What a rule would have done over the stored history of its targets."""

    from_: float = msgspec.field(name="from")
    to: float
    fired: int
    alerts: list[PreviewAlert]


class AlertQuery(msgspec.Struct, forbid_unknown_fields=True):
    state: AlertState | None = None
    node: Id | None = None
    rule: Id | None = None
    from_: Timestamp | None = msgspec.field(default=None, name="from")
    to: Timestamp | None = None
    limit: Annotated[int, Meta(ge=1, le=5000)] = 200


class AlertList(msgspec.Struct):
    alerts: list[Alert]


class AlertDetail(msgspec.Struct):
    """An alert's story: its transitions, its delivery log, and the incident snapshot its node's
    agent took when it fired (or, in `snapshot_note`, why there is none, or that it is awaited)."""

    alert: Alert
    transitions: list[AlertTransition]
    deliveries: list[Delivery]
    snapshot: IncidentSnapshot | None = None
    snapshot_note: str | None = None


class SilenceCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Silence alerts matching every matcher given (at least one) until `ends_at` or for `duration`."""

    rule: Id | None = None
    node: Id | None = None
    group: Group | None = None
    tag: Tag | None = None
    ends_at: Timestamp | None = None
    duration: Duration | None = None
    comment: Annotated[str, Meta(min_length=1, max_length=1024)]


class Silence(msgspec.Struct, kw_only=True):
    id: int
    rule: int | None
    node: int | None
    group: str | None
    tag: str | None
    starts_at: float
    ends_at: float
    comment: str
    created_by: str


class SilenceList(msgspec.Struct):
    silences: list[Silence]


class SilenceQuery(msgspec.Struct, forbid_unknown_fields=True):
    state: Literal["active", "expired", "all"] = "active"
    limit: Annotated[int, Meta(ge=1, le=5000)] = 500


ChannelKind = Literal["webhook", "email", "apprise"]
QuietHours = Annotated[str, Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")]


class ChannelCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A way to notify: a webhook URL (optionally HMAC-signed with `secret`), an SMTP mailbox
    (`url` = smtp[s]://user:password@host:port, `to`, `from_addr`, `starttls`), or an Apprise URL."""

    name: Name
    kind: ChannelKind
    url: Annotated[str, Meta(min_length=1, max_length=2048)]
    secret: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    to: Annotated[list[Annotated[str, Meta(min_length=3, max_length=254)]], Meta(max_length=32)] = []
    from_addr: Annotated[str, Meta(min_length=3, max_length=254)] | None = None
    starttls: bool = True
    quiet_hours: QuietHours | None = None  # local time of the core, e.g. "22:00-07:00"
    enabled: bool = True


class ChannelPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    name: Name | None = None
    url: Annotated[str, Meta(min_length=1, max_length=2048)] | None = None
    secret: Annotated[str, Meta(min_length=1, max_length=256)] | None = None  # left out or null: kept
    to: Annotated[list[Annotated[str, Meta(min_length=3, max_length=254)]], Meta(max_length=32)] | None = None
    from_addr: Annotated[str, Meta(min_length=3, max_length=254)] | None = None
    starttls: bool | None = None
    quiet_hours: QuietHours | msgspec.UnsetType | None = msgspec.UNSET  # left out: kept; null: none
    enabled: bool | None = None


class Channel(msgspec.Struct, kw_only=True):
    """A channel as the API shows it: secrets redacted (the URL's password and token parts, `secret`)."""

    id: int
    name: str
    kind: ChannelKind
    url: str  # redacted
    has_secret: bool
    to: list[str]
    from_addr: str | None
    starttls: bool
    quiet_hours: str | None
    enabled: bool
    created_at: float


class ChannelList(msgspec.Struct):
    channels: list[Channel]


class ChannelTestResult(msgspec.Struct):
    ok: bool
    message: str
