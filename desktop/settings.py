"""Desktop settings: one declarative schema, persisted through QSettings, plus profiles and window state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QByteArray, QObject, QSettings, Signal

from servermanager.desktop.charts.ranges import PRESET_RANGES


@dataclass(frozen=True)
class Setting:
    """One user setting: the schema the settings dialog is generated from."""

    key: str
    type: type
    default: Any
    description: str
    # (value, label) pairs when only some values make sense; the dialog shows a combo box.
    choices: tuple[tuple[Any, str], ...] = ()

    def coerce(self, raw: Any) -> Any:
        """QSettings hands back strings from INI files; turn them into this setting's type."""
        if raw is None:
            return self.default
        try:
            if self.type is bool:
                value: Any = (
                    raw if isinstance(raw, bool) else str(raw).strip().lower() in ("1", "true", "yes")
                )
            else:
                value = self.type(raw)
        except (TypeError, ValueError):
            return self.default
        if self.choices and value not in {v for v, _ in self.choices}:
            return self.default
        return value


# The default chart range is one of the chart panel's presets.
CHART_RANGES: tuple[tuple[str, str], ...] = tuple((r.key, r.title) for r in PRESET_RANGES)

SCHEMA: tuple[Setting, ...] = (
    Setting(
        "theme",
        str,
        "system",
        "Colour theme",
        (("system", "Follow the system"), ("dark", "Dark"), ("light", "Light")),
    ),
    Setting(
        "refresh_interval",
        int,
        10,
        "While live updates are unavailable, poll the core every",
        ((0, "Off"), (5, "5 seconds"), (10, "10 seconds"), (15, "15 seconds"), (30, "30 seconds")),
    ),
    Setting("notifications", bool, True, "Notify when a node goes offline or comes back"),
    Setting(
        "core_unreachable_after",
        int,
        60,
        "Warn when the core is unreachable for",
        (
            (0, "Never"),
            (15, "15 seconds"),
            (30, "30 seconds"),
            (60, "1 minute"),
            (120, "2 minutes"),
            (300, "5 minutes"),
            (900, "15 minutes"),
        ),
    ),
    Setting("start_minimized", bool, False, "Start minimized to the system tray"),
    Setting("chart_range", str, "1h", "Default range of history charts", CHART_RANGES),
)

_BY_KEY = {s.key: s for s in SCHEMA}


class Settings(QObject):
    """Typed access to the schema's values; `changed(key, value)` fires on every real change."""

    changed = Signal(str, object)

    def __init__(self, store: QSettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store

    @staticmethod
    def schema() -> tuple[Setting, ...]:
        return SCHEMA

    def get(self, key: str) -> Any:
        spec = _BY_KEY[key]
        return spec.coerce(self.store.value(f"settings/{key}", spec.default))

    def is_set(self, key: str) -> bool:
        """Whether the user chose a value (it may equal the default), rather than never touching it."""
        return bool(self.store.contains(f"settings/{_BY_KEY[key].key}"))

    def set(self, key: str, value: Any) -> None:
        spec = _BY_KEY[key]
        value = spec.coerce(value)
        if value == self.get(key):
            if not self.is_set(key):  # chosen now, even if it is the default: remember the choice
                self.store.setValue(f"settings/{key}", value)
            return
        self.store.setValue(f"settings/{key}", value)
        self.changed.emit(key, value)

    def reset(self) -> None:
        for spec in SCHEMA:
            self.set(spec.key, spec.default)
            self.store.remove(f"settings/{spec.key}")  # back to "never chosen"


@dataclass
class Profile:
    """A core the user connects to. Secrets never live here: tokens go to the OS keyring."""

    name: str
    url: str
    auth: str = "password"  # "password" or "token"
    username: str = ""
    remember: bool = True
    # The core's certificate fingerprint (sha256:<hex>) trusted on first use; empty: none pinned, so
    # the system's CAs decide. Not a secret: it is what the core shows everyone.
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def secret_key(self) -> str:
        """The keyring account name this profile's token is stored under."""
        who = self.username if self.auth == "password" else "api-token"
        return f"{who}@{self.url}"

    @property
    def device_key(self) -> str:
        """The keyring account of this device's token for the user: its failed logins count apart,
        so nobody else's failures lock it out. It opens nothing by itself."""
        return f"device:{self.username}@{self.url}"


class Profiles:
    """The saved connection profiles and which one was used last."""

    def __init__(self, store: QSettings) -> None:
        self.store = store

    def all(self) -> list[Profile]:
        out = []
        n = self.store.beginReadArray("profiles")
        for i in range(n):
            self.store.setArrayIndex(i)
            out.append(
                Profile(
                    name=str(self.store.value("name", "")),
                    url=str(self.store.value("url", "")),
                    auth=str(self.store.value("auth", "password")),
                    username=str(self.store.value("username", "")),
                    remember=str(self.store.value("remember", "true")).lower() in ("true", "1"),
                    fingerprint=str(self.store.value("fingerprint", "") or ""),
                )
            )
        self.store.endArray()
        return [p for p in out if p.name and p.url]

    def save_all(self, profiles: list[Profile]) -> None:
        self.store.remove("profiles")
        self.store.beginWriteArray("profiles", len(profiles))
        for i, prof in enumerate(profiles):
            self.store.setArrayIndex(i)
            self.store.setValue("name", prof.name)
            self.store.setValue("url", prof.url)
            self.store.setValue("auth", prof.auth)
            self.store.setValue("username", prof.username)
            self.store.setValue("remember", prof.remember)
            self.store.setValue("fingerprint", prof.fingerprint)
        self.store.endArray()

    def get(self, name: str) -> Profile | None:
        return next((p for p in self.all() if p.name == name), None)

    def upsert(self, profile: Profile) -> None:
        profiles = [p for p in self.all() if p.name != profile.name]
        profiles.append(profile)
        self.save_all(sorted(profiles, key=lambda p: p.name.lower()))

    def remove(self, name: str) -> None:
        self.save_all([p for p in self.all() if p.name != name])
        if self.last == name:
            self.store.remove("profiles_last")

    def for_url(self, url: str) -> Profile | None:
        return next((p for p in self.all() if p.url.rstrip("/") == url.rstrip("/")), None)

    @property
    def last(self) -> str | None:
        value = self.store.value("profiles_last")
        return str(value) if value else None

    @last.setter
    def last(self, name: str) -> None:
        self.store.setValue("profiles_last", name)

    @property
    def also_open(self) -> list[str]:
        """The profiles connected beside the last one when the app last ran (names only: their
        tokens are in the keyring), in the order they were added."""
        value = self.store.value("profiles_also_open")
        names = [value] if isinstance(value, str) else list(value or [])
        return [str(n) for n in names if n]

    @also_open.setter
    def also_open(self, names: list[str]) -> None:
        if names:
            self.store.setValue("profiles_also_open", list(names))
        else:
            self.store.remove("profiles_also_open")


class WindowState:
    """Window geometry and dock/toolbar state: kept apart from the user's settings."""

    def __init__(self, store: QSettings) -> None:
        self.store = store

    def load(self) -> tuple[QByteArray | None, QByteArray | None]:
        geometry = self.store.value("window/geometry")
        state = self.store.value("window/state")
        return (
            geometry if isinstance(geometry, QByteArray) else None,
            state if isinstance(state, QByteArray) else None,
        )

    def save(self, geometry: QByteArray, state: QByteArray) -> None:
        self.store.setValue("window/geometry", geometry)
        self.store.setValue("window/state", state)

    def hidden_columns(self) -> set[str] | None:
        """The fleet table's columns the user hid; None: they never chose, so the width decides."""
        if not self.store.contains("window/fleet_hidden_columns"):
            return None
        raw = self.store.value("window/fleet_hidden_columns", "")
        return {key for key in str(raw or "").split(",") if key}

    def set_hidden_columns(self, keys: set[str] | None) -> None:
        if keys is None:
            self.store.remove("window/fleet_hidden_columns")
        else:
            # One string, not a list: an INI file gives back a one-item list as a plain string.
            self.store.setValue("window/fleet_hidden_columns", ",".join(sorted(keys)))
