"""Declarative settings: a typed schema, loaded from TOML, then SM_ variables, then flags."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


class SettingsError(ValueError):
    """A setting that is missing, unknown or of the wrong type; the message names it."""


def parse_duration(value: str | float | int) -> float:
    """'48h', '30d', '500ms', '5' (seconds) or a number -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 5s, 10m, 48h, 30d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def field_doc(cls: type[msgspec.Struct], name: str) -> str:
    """The description of a field, kept in the schema class's `__doc_fields__`."""
    docs: Mapping[str, str] = getattr(cls, "__doc_fields__", {})
    return docs.get(name, "")


def _nested(tp: Any) -> type[msgspec.Struct] | None:
    return tp if isinstance(tp, type) and issubclass(tp, msgspec.Struct) else None


def _coerce(cls: type[msgspec.Struct], raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Turn duration strings and env-var strings into the schema's types, naming bad keys."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: f for f in info.fields}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        f = fields.get(key)
        if f is None:
            raise SettingsError(f"unknown setting {where}{key!r}")
        t = f.type
        try:
            if isinstance(t, msgspec.inspect.StructType):
                if not isinstance(value, dict):
                    raise SettingsError(f"setting {where}{key} must be a table")
                out[key] = _coerce(t.cls, value, f"{where}{key}.")
                continue
            if isinstance(t, msgspec.inspect.FloatType) and isinstance(value, str):
                value = parse_duration(value)
            elif isinstance(t, msgspec.inspect.IntType) and isinstance(value, str):
                value = int(value)
            elif isinstance(t, msgspec.inspect.BoolType) and isinstance(value, str):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(f"not a boolean: {value!r}")
                value = low in ("1", "true", "yes", "on")
            elif isinstance(t, msgspec.inspect.ListType) and isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
        except ValueError as exc:
            raise SettingsError(f"setting {where}{key}: {exc}") from None
        out[key] = value
    return out


def _env_layer(cls: type[msgspec.Struct], prefix: str, environ: Mapping[str, str]) -> dict[str, Any]:
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    out: dict[str, Any] = {}
    for f in info.fields:
        name = f"{prefix}{f.name.upper()}"
        if isinstance(f.type, msgspec.inspect.StructType):
            sub = _env_layer(f.type.cls, f"{name}_", environ)
            if sub:
                out[f.name] = sub
        elif name in environ:
            out[f.name] = environ[name]
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def load_settings(
    cls: type[S],
    *,
    env_prefix: str,
    config_file: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> S:
    """Defaults < TOML file < SM_* environment < explicit overrides (command-line flags)."""
    layers: list[dict[str, Any]] = []
    env = os.environ if environ is None else environ
    if config_file is None and f"{env_prefix}CONFIG" in env:
        config_file = env[f"{env_prefix}CONFIG"]
    if config_file is not None:
        path = Path(config_file)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise SettingsError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path}: {exc}") from None
        layers.append(_coerce(cls, data, ""))
    layers.append(_coerce(cls, _env_layer(cls, env_prefix, env), ""))
    if overrides:
        layers.append(_coerce(cls, {k: v for k, v in overrides.items() if v is not None}, ""))
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, layer)
    try:
        settings = msgspec.convert(merged, cls)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid setting: {exc}") from None
    validate = getattr(settings, "validate", None)
    if validate is not None:
        validate()
    return settings


class CoreSettings(msgspec.Struct, kw_only=True):
    """Settings of the core daemon (TOML keys; env SM_CORE_<KEY>)."""

    listen: str = "127.0.0.1:8760"
    data_dir: str = ""
    log_level: str = "INFO"
    max_frame_bytes: int = 1 << 20
    hello_timeout: float = 10.0
    agent_interval: float = 0.0
    heartbeat_misses: int = 3
    sample_max_future: float = 300.0
    sample_max_age: float = 86400.0
    retention_raw: float = 48 * 3600.0
    retention_1m: float = 30 * 86400.0
    retention_1h: float = 2 * 365 * 86400.0
    rollup_every: float = 10.0
    prune_every: float = 300.0
    flush_every: float = 0.05
    history_cache_mb: float = 64.0
    access_token_ttl: float = 900.0
    refresh_token_ttl: float = 30 * 86400.0
    login_max_failures: int = 5
    login_window: float = 300.0
    metrics_auth: bool = True
    commands_per_minute: int = 30
    uvloop: bool = True

    __doc_fields__ = {
        "listen": "HOST:PORT the HTTP and WebSocket server binds",
        "data_dir": "where the SQLite database lives (default: the platform's user data dir)",
        "log_level": "DEBUG, INFO, WARNING or ERROR",
        "max_frame_bytes": "largest WebSocket frame accepted; bigger ones close with 1009",
        "hello_timeout": "seconds a new socket may stay silent before its first frame",
        "agent_interval": "sample interval imposed on every agent; 0 lets each agent use its own",
        "heartbeat_misses": "missed intervals after which a silent node is marked offline",
        "sample_max_future": "samples stamped further ahead of the core's clock are rejected",
        "sample_max_age": "samples older than this are rejected (keep below retention_raw)",
        "retention_raw": "how long raw samples are kept",
        "retention_1m": "how long 1-minute rollups are kept",
        "retention_1h": "how long 1-hour rollups are kept",
        "rollup_every": "how often the rollup job runs",
        "prune_every": "how often the retention job runs",
        "flush_every": "longest time a received sample waits before its batch is committed",
        "history_cache_mb": "memory for past days of 1-minute history kept as ready JSON; 0 turns it off",
        "access_token_ttl": "lifetime of an access token from login",
        "refresh_token_ttl": "lifetime of a refresh token",
        "login_max_failures": "failed logins per user and address before refusing more",
        "login_window": "window for counting failed logins",
        "metrics_auth": "require a bearer token on GET /metrics",
        "commands_per_minute": "commands and service actions one user may start per minute",
        "uvloop": "run on uvloop's event loop where it is installed (Linux, macOS); false: plain asyncio",
    }

    def validate(self) -> None:
        _, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit():
            raise SettingsError(f"setting listen: expected HOST:PORT, got {self.listen!r}")
        if self.heartbeat_misses < 1:
            raise SettingsError("setting heartbeat_misses must be at least 1")
        if self.agent_interval and self.agent_interval < 1:
            raise SettingsError("setting agent_interval must be 0 (agent decides) or at least 1 second")
        if self.history_cache_mb < 0:
            raise SettingsError("setting history_cache_mb must be 0 (off) or more")
        if self.sample_max_age >= self.retention_raw:
            raise SettingsError("setting sample_max_age must be below retention_raw")

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]") or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])
