"""Settings loading for every daemon: a typed schema, filled from defaults < TOML < SM_ env < flags."""

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
            if (
                isinstance(t, msgspec.inspect.UnionType)
                and any(isinstance(x, msgspec.inspect.FloatType) for x in t.types)
                and isinstance(value, str)
            ):
                value = parse_duration(value)  # an optional duration (`timeout` of [[check]])
            elif isinstance(t, msgspec.inspect.FloatType) and isinstance(value, str):
                value = parse_duration(value)
            elif isinstance(t, msgspec.inspect.IntType) and isinstance(value, str):
                value = int(value)
            elif isinstance(t, msgspec.inspect.BoolType) and isinstance(value, str):
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(f"not a boolean: {value!r}")
                value = low in ("1", "true", "yes", "on")
            elif (
                isinstance(t, msgspec.inspect.ListType)
                and isinstance(t.item_type, msgspec.inspect.StructType)
                and isinstance(value, list)
            ):
                # An array of tables ([[check]]): each table coerced like a nested one, named by index.
                value = [
                    _coerce(t.item_type.cls, v, f"{where}{key}[{i}].") if isinstance(v, dict) else v
                    for i, v in enumerate(value)
                ]
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
