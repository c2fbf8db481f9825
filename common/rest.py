"""Typed REST request and response bodies: the core validates with them, OpenAPI is built from them, the desktop decodes them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from servermanager.common.protocol import NodeInfo, ServiceInfo, ServiceRequest

Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]
Group = Annotated[str, Meta(max_length=64)]
Tag = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.:/-]+$")]
RoleName = Literal["viewer", "operator", "admin"]
Resolution = Literal["auto", "raw", "1m", "1h"]


class Targets(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Which nodes a command (or, later, an alert rule) is for: listed ids, a group, a tag or all."""

    nodes: list[int] | None = None
    group: str | None = None
    tag: str | None = None
    all: bool = False


class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


class Health(msgspec.Struct):
    status: str
    version: str
    protocol: int


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, Meta(min_length=1, max_length=64)]
    password: Annotated[str, Meta(min_length=1, max_length=1024)]


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, Meta(min_length=1, max_length=256)]


class TokenPair(msgspec.Struct):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"
    role: str = ""


class Me(msgspec.Struct):
    id: int
    name: str
    role: str


class NodeList(msgspec.Struct):
    nodes: list[NodeInfo]


class NodePatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: Name | None = None
    group: Group | None = None
    tags: Annotated[list[Tag], Meta(max_length=32)] | None = None


class HistoryQuery(msgspec.Struct, forbid_unknown_fields=True):
    from_: float | None = msgspec.field(default=None, name="from")
    to: float | None = None
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


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    password: Annotated[str, Meta(min_length=8, max_length=1024)]
    role: RoleName


class User(msgspec.Struct):
    id: int
    name: str
    role: str
    created_at: float


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


class AuditQuery(msgspec.Struct, forbid_unknown_fields=True):
    user: str | None = None
    action: str | None = None
    target: str | None = None
    node: int | None = None
    from_: float | None = msgspec.field(default=None, name="from")
    to: float | None = None
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
    timeout: Annotated[float, Meta(gt=0, le=300)] = 30.0


class ServiceList(msgspec.Struct):
    node_id: int
    services: list[ServiceInfo]
