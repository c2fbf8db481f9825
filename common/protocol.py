"""The one wire contract shared by core, agent and desktop: version, message types, frames."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import msgspec

from servermanager.common.alerts import Alert
from servermanager.common.incidents import IncidentSnapshot
from servermanager.common.metrics import Hardware, HostFacts, Sample

PROTOCOL_VERSION = 1
AGENT_WS_PATH = "/ws/agent"
CLIENT_WS_PATH = "/ws/client"
DEFAULT_MAX_FRAME_BYTES = 1 << 20
# Most samples one `samples` frame may carry; a bigger batch is an invalid frame.
MAX_SAMPLES_PER_BATCH = 2000


class MsgType(enum.StrEnum):
    """Every frame type on either WebSocket; anything else is refused."""

    # agent <-> core
    HELLO = "hello"
    WELCOME = "welcome"
    SAMPLES = "samples"
    ACK = "ack"
    PING = "ping"
    PONG = "pong"
    COMMAND = "command"
    COMMAND_CANCEL = "command_cancel"
    COMMAND_OUTPUT = "command_output"  # also relayed to clients
    COMMAND_RESULT = "command_result"  # also relayed to clients
    INCIDENT_REQUEST = "incident_request"  # core -> agent: a snapshot, please (an alert fired)
    INCIDENT = "incident"  # agent -> core: the snapshot, or why there is none
    LOGS_REQUEST = "logs_request"  # core -> agent: read (or follow) one log source
    LOGS_CHUNK = "logs_chunk"  # agent -> core -> the one client that asked: entries, or why not
    LOGS_CANCEL = "logs_cancel"  # core -> agent: stop following
    # client <-> core
    AUTH = "auth"
    AUTH_OK = "auth_ok"
    SUBSCRIBE = "subscribe"
    SNAPSHOT = "snapshot"
    NODE_STATUS = "node_status"
    NODE_UPDATED = "node_updated"
    NODE_REMOVED = "node_removed"
    SAMPLE = "sample"
    BATCH = "batch"  # several queued events in one frame, each as it would travel alone
    ALERT = "alert"  # an alert changed state, severity, acknowledgement or silence
    LOGS_FOLLOW = "logs_follow"  # client -> core: follow a node's log source over this socket
    LOGS_STOP = "logs_stop"  # client -> core: stop one follow
    # both directions
    ERROR = "error"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the core uses; 4xxx mirror the matching HTTP status."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # the core is shedding load: reconnect after a backoff
    BAD_REQUEST = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    TIMEOUT = 4408
    REPLACED = 4409
    UNSUPPORTED_PROTOCOL = 4426


# ---------------------------------------------------------------- frames


class Frame(msgspec.Struct, tag_field="type", forbid_unknown_fields=False, gc=False):
    """Base of every frame; the tag is the MsgType value."""


class ExecReport(msgspec.Struct, frozen=True, gc=False):
    """What an agent's [exec] lets run, as it says in its hello: the core replays it for a command
    preview (common.exec_policy), so operators learn who would refuse before anything runs. The agent
    still decides each request itself."""

    enabled: bool
    allow: list[str] = []
    deny: list[str] = []
    signed_only: bool = False  # trusted operator keys are set: unsigned requests are refused
    services: bool = True  # the platform has a service manager the agent drives
    windows: bool = False  # shell lines go to cmd.exe (another set of metacharacters)


EnrollId = Annotated[str, msgspec.Meta(min_length=16, max_length=64, pattern=r"^[0-9a-f]+$")]


class Hello(Frame, tag=MsgType.HELLO.value):
    protocol: int
    host: HostFacts
    credential: str | None = None
    enroll_token: str | None = None
    spool_dropped: int = 0  # samples the agent's spool had to evict, ever
    interval: float = 5.0  # the agent's own sample interval, used unless the core imposes one
    log_sources: LogSources | None = None  # what its [logs] config lets be read; None: an older agent
    exec_policy: ExecReport | None = None  # what its [exec] config lets run; None: an older agent
    # With enroll_token: a random id the agent keeps across its attempts to enroll. An agent that
    # comes back with the same token and id before any hello used the credential (its welcome was
    # lost to a timeout) gets the same node with a new credential, not a second node.
    enroll_id: EnrollId | None = None


class Welcome(Frame, tag=MsgType.WELCOME.value):
    protocol: int
    node_id: int
    interval: float | None = None  # set when the core imposes a sample interval, seconds
    heartbeat_timeout: float | None = None
    credential: str | None = None  # set only at enrollment: the agent must store it
    last_seq: int | None = None  # highest seq the core holds for this node


class Samples(Frame, tag=MsgType.SAMPLES.value):
    samples: Annotated[list[Sample], msgspec.Meta(max_length=MAX_SAMPLES_PER_BATCH)]


class Ack(Frame, tag=MsgType.ACK.value):
    """Samples from_seq..upto_seq of one batch are committed (or rejected, listed)."""

    upto_seq: int
    from_seq: int = 0
    rejected: list[int] = []


class Ping(Frame, tag=MsgType.PING.value):
    ts: float


class Pong(Frame, tag=MsgType.PONG.value):
    ts: float


class Error(Frame, tag=MsgType.ERROR.value):
    code: str
    message: str


class Auth(Frame, tag=MsgType.AUTH.value):
    token: str


class AuthOk(Frame, tag=MsgType.AUTH_OK.value):
    protocol: int
    user: str
    role: str


class Subscribe(Frame, tag=MsgType.SUBSCRIBE.value):
    nodes: list[int] | None = None
    all: bool = False


class NodeInfo(msgspec.Struct, gc=False):
    """A node as REST and the client socket present it."""

    id: int
    name: str
    group: str
    tags: list[str]
    online: bool
    last_seen: float | None
    created_at: float
    host: HostFacts | None = None
    interval: float | None = None
    spool_dropped: int = 0
    latest: Sample | None = None
    containers: int | None = None  # running containers in the agent's last list; None: no engine seen
    hardware: Hardware | None = None  # GPUs and SMART as the agent last reported them
    # Why the core considers the node offline ("heartbeat timeout ...", "agent stopped", ...); None
    # while online, or from an older core.
    offline_reason: str | None = None


class Snapshot(Frame, tag=MsgType.SNAPSHOT.value):
    nodes: list[NodeInfo]


class NodeStatus(Frame, tag=MsgType.NODE_STATUS.value):
    node_id: int
    online: bool
    last_seen: float | None
    reason: str | None = None  # why it went offline (NodeInfo.offline_reason)


class NodeUpdated(Frame, tag=MsgType.NODE_UPDATED.value):
    node: NodeInfo


class NodeRemoved(Frame, tag=MsgType.NODE_REMOVED.value):
    node_id: int


class SampleEvent(Frame, tag=MsgType.SAMPLE.value):
    node_id: int
    sample: Sample


class Batch(Frame, tag=MsgType.BATCH.value):
    """Events that queued up for one client, sent as one frame: a frame per event costs the core a
    send each, which at fleet scale is most of its time. Order within `frames` is delivery order."""

    frames: list[msgspec.Raw]


class AlertEvent(Frame, tag=MsgType.ALERT.value):
    """An alert as it is now, after any change; sent to clients allowed to read alerts."""

    alert: Alert


def batch_bytes(frames: list[bytes]) -> bytes:
    """A Batch of already-encoded frames, without decoding them again."""
    return b'{"type":"batch","frames":[' + b",".join(frames) + b"]}"


# ---------------------------------------------------------------- remote operations

ServiceAction = Literal["list", "status", "start", "stop", "restart", "enable", "disable"]
CommandStatus = Literal["ok", "failed", "timeout", "cancelled", "refused", "error"]


class ServiceRequest(msgspec.Struct, frozen=True, gc=False):
    action: ServiceAction
    name: str | None = None  # required for every action but list


class ServiceInfo(msgspec.Struct, frozen=True, gc=False):
    name: str
    active: str  # active, inactive, failed, activating, unknown ...
    enabled: str | None = None  # enabled, disabled, static ...; None where the platform has no such notion
    description: str = ""


class CommandSignature(msgspec.Struct, frozen=True, gc=False):
    """An operator's Ed25519 signature of one command for one node (common.signing says over what).

    The core relays it untouched: it holds no private key, so it can neither make one nor change a
    signed command without the agent noticing. Field formats are checked by common.signing.
    """

    key_id: str  # "sha256:" + 16 hex digits of the public key's SHA-256
    node_id: int  # the node it was signed for
    nonce: str  # single use: an agent refuses a nonce it has seen
    expires_at: int  # seconds since the epoch; refused after this (plus a little clock skew)
    sig: str  # base64 of the 64-byte signature


class Command(Frame, tag=MsgType.COMMAND.value):
    """Run one thing on the agent: exactly one of argv (no shell), shell, or service."""

    command_id: str
    timeout: float
    argv: list[str] | None = None
    shell: str | None = None
    env: dict[str, str] = {}
    cwd: str | None = None
    service: ServiceRequest | None = None
    signature: CommandSignature | None = None  # required by an agent with trusted operator keys


class CommandCancel(Frame, tag=MsgType.COMMAND_CANCEL.value):
    command_id: str


class CommandOutput(Frame, tag=MsgType.COMMAND_OUTPUT.value):
    """A chunk of output; node_id is 0 from the agent and filled in by the core for clients."""

    command_id: str
    stream: Literal["stdout", "stderr"]
    data: str
    node_id: int = 0


class CommandResult(Frame, tag=MsgType.COMMAND_RESULT.value):
    """How a command ended on one node. status ok means exit code 0."""

    command_id: str
    status: CommandStatus
    exit_code: int | None = None
    signal: int | None = None  # the signal that ended it, where one did
    duration: float = 0.0
    stdout_bytes: int = 0  # everything produced, including what was cut off
    stderr_bytes: int = 0
    truncated: bool = False  # output beyond the agent's max_output was counted, not kept
    message: str | None = None  # why it was refused or failed to start
    services: list[ServiceInfo] | None = None  # for service list/status
    node_id: int = 0


# ---------------------------------------------------------------- incident snapshots


class IncidentRequest(Frame, tag=MsgType.INCIDENT_REQUEST.value):
    """An alert of this node fired: what is the node doing? Answered once, with an `incident`.

    `lookback` is how many seconds of the journal the core would like (from a little before the
    alert started); the agent reads no further back than its own config allows, and no journal at
    all unless its config allows that.
    """

    request_id: str
    lookback: float | None = None


class Incident(Frame, tag=MsgType.INCIDENT.value):
    """The answer to one `incident_request`: a snapshot, or `error` saying why there is none
    (snapshots off in the agent's config, asked too often, the measurement failed)."""

    request_id: str
    snapshot: IncidentSnapshot | None = None
    error: str | None = None


# ---------------------------------------------------------------- logs (read-only, allowlisted by the agent)

JOURNAL = "journal"  # the source name of the system journal; any other source is an absolute file path
CONTAINER_PREFIX = "container:"  # a source "container:<name>" is that container's output (stdout, stderr)
EVENTLOG_PREFIX = "eventlog:"  # a source "eventlog:<channel>" is that Windows Event Log (System, Application)
MAX_EVENTLOGS = 16  # Windows Event Log channels one agent offers
MAX_LOG_LINES = 10_000  # most entries one request may ask for
MAX_LOG_MESSAGE = 8192  # characters of one entry kept; the rest is cut
MAX_LOG_ENTRIES_PER_CHUNK = 2000
MAX_LOG_FILES = 256  # allowlisted files one agent reports
LogErrorCode = Literal["refused", "invalid", "not_found", "busy", "failed", "timeout", "offline", "forbidden"]
RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
LogSource = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
LogUnit = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class LogQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """What to read: the journal (unit, priority and time filters) or one allowlisted file.

    `priority` keeps entries at that syslog level or more urgent (0 emerg .. 7 debug); `since` and
    `until` are seconds since the epoch; `lines` is how many of the newest entries to send first.
    `match` keeps only entries whose message contains it (case-sensitive), for either kind.
    """

    source: LogSource = JOURNAL
    unit: LogUnit | None = None
    priority: Annotated[int, msgspec.Meta(ge=0, le=7)] | None = None
    since: Annotated[float, msgspec.Meta(ge=0, le=1e11)] | None = None
    until: Annotated[float, msgspec.Meta(ge=0, le=1e11)] | None = None
    lines: Annotated[int, msgspec.Meta(ge=0, le=MAX_LOG_LINES)] = 100
    match: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class LogEntry(msgspec.Struct, array_like=True, gc=False):
    """One line: [ts, priority, unit, message]. ts is None where the source has no time of its own
    (a file line read in one go); priority and unit are the journal's, None for a file."""

    ts: float | None
    priority: int | None
    unit: str | None
    message: str


class LogSources(msgspec.Struct, gc=False):
    """What an agent's [logs] config offers: the journal (if on and journalctl is there) and the
    allowlisted files as they matched when it connected, plus the patterns themselves."""

    journal: bool = False
    files: Annotated[list[str], msgspec.Meta(max_length=MAX_LOG_FILES)] = []
    patterns: Annotated[list[str], msgspec.Meta(max_length=MAX_LOG_FILES)] = []
    note: str | None = None  # why the journal is off, for the node view
    # Container logs ("container:<name>" sources) are allowed by [logs] containers and an engine
    # is configured; the names come from the node's container list.
    containers: bool = False
    # The Windows Event Log channels that may be read ("eventlog:<channel>" sources): [logs]
    # eventlogs, where the agent runs on Windows with pywin32; empty elsewhere.
    eventlogs: Annotated[list[str], msgspec.Meta(max_length=MAX_EVENTLOGS)] = []


class LogsRequest(Frame, tag=MsgType.LOGS_REQUEST.value):
    """Read `query` once (follow false: chunks, the last with eof) or keep following it until a
    `logs_cancel`, the agent's follow timeout, or the socket ends."""

    request_id: RequestId
    query: LogQuery
    follow: bool = False


class LogsCancel(Frame, tag=MsgType.LOGS_CANCEL.value):
    request_id: RequestId


class LogsChunk(Frame, tag=MsgType.LOGS_CHUNK.value):
    """Entries of one request, oldest first. `truncated`: some were left out (a limit of the
    agent's config, or a rate cut), `note` says which. `eof`: the last chunk of the request; with
    `error` (and `code`) it says why the request was refused or ended early. node_id is 0 from the
    agent and filled in by the core for clients."""

    request_id: RequestId
    entries: Annotated[list[LogEntry], msgspec.Meta(max_length=MAX_LOG_ENTRIES_PER_CHUNK)] = []
    truncated: bool = False
    eof: bool = False
    error: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    code: LogErrorCode | None = None
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    node_id: int = 0


class LogsFollow(Frame, tag=MsgType.LOGS_FOLLOW.value):
    """Client -> core: stream this node's `query` to this socket, as `logs_chunk` frames carrying
    the client's own request_id. Needs the operator role, as GET /nodes/{id}/logs does."""

    request_id: RequestId
    node_id: int
    query: LogQuery


class LogsStop(Frame, tag=MsgType.LOGS_STOP.value):
    request_id: RequestId


AgentToCore = Hello | Samples | Ping | Pong | Error | CommandOutput | CommandResult | Incident | LogsChunk
CoreToAgent = (
    Welcome | Ack | Ping | Pong | Error | Command | CommandCancel | IncidentRequest | LogsRequest | LogsCancel
)
ClientToCore = Auth | Subscribe | Ping | Pong | LogsFollow | LogsStop
CoreToClient = (
    AuthOk
    | Snapshot
    | NodeStatus
    | NodeUpdated
    | NodeRemoved
    | SampleEvent
    | Batch
    | CommandOutput
    | CommandResult
    | AlertEvent
    | LogsChunk
    | Ping
    | Pong
    | Error
)

_encoder = msgspec.json.Encoder()


def encode(frame: Frame) -> bytes:
    return _encoder.encode(frame)


def encode_str(frame: Frame) -> str:
    return _encoder.encode(frame).decode()


class FrameError(ValueError):
    """A frame that is not valid JSON, has an unknown type or wrong field types."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def decoder(union: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(union)


def decode_all(dec: msgspec.json.Decoder[Any], data: bytes | str) -> list[Any]:
    """The frames one message carries: itself, or a batch's frames in order (never nested)."""
    frame = decode(dec, data)
    if not isinstance(frame, Batch):
        return [frame]
    inner = [decode(dec, raw) for raw in frame.frames]
    if any(isinstance(f, Batch) for f in inner):
        raise FrameError("invalid_frame", "a batch may not contain a batch")
    return inner


def decode(dec: msgspec.json.Decoder[Any], data: bytes | str | msgspec.Raw) -> Any:
    """Decode one frame, turning every failure into a FrameError with a precise message."""
    try:
        return dec.decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        code = (
            "unknown_type"
            if text.endswith("`$.type`") or "missing required field `type`" in text
            else "invalid_frame"
        )
        raise FrameError(code, text) from None
    except msgspec.DecodeError as exc:
        raise FrameError("malformed_json", str(exc)) from None
    except RecursionError:
        # msgspec stops at its depth limit with a RecursionError (an unknown field's value is
        # skipped recursively): a hostile frame, not an internal error.
        raise FrameError("malformed_json", "JSON nested too deeply") from None
