"""AppContext: the services every panel is handed (settings, tasks, client, fleet model, secrets, themes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from servermanager.desktop.aio import Aio
from servermanager.desktop.client import CoreClient, Session
from servermanager.desktop.fleet import NodesModel
from servermanager.desktop.secrets import TokenStore
from servermanager.desktop.session import SignIn
from servermanager.desktop.settings import Profiles, Settings, WindowState
from servermanager.desktop.themes import ThemeManager


@dataclass
class AppContext:
    """Built once at start-up; panels take it, dumb widgets never see it."""

    settings: Settings
    profiles: Profiles
    window_state: WindowState
    aio: Aio
    client: CoreClient
    secrets: TokenStore
    model: NodesModel
    signin: SignIn
    themes: ThemeManager
    fleet_url: str | None = field(default=None, init=False)  # the core the model's rows came from

    @classmethod
    def create(cls, app: QApplication, store: QSettings, **client_options: Any) -> AppContext:
        """Wire the services together; client_options tune timings (tests use short ones)."""
        settings = Settings(store)
        aio = Aio()
        client = CoreClient(aio, **client_options)
        secrets = TokenStore()
        profiles = Profiles(store)
        model = NodesModel()
        ctx = cls(
            settings=settings,
            profiles=profiles,
            window_state=WindowState(store),
            aio=aio,
            client=client,
            secrets=secrets,
            model=model,
            signin=SignIn(client, secrets, profiles, aio),
            themes=ThemeManager(app),
        )
        client.snapshot.connect(model.apply_snapshot)
        client.polled.connect(model.apply_snapshot)
        client.node_status.connect(model.apply_status)
        client.sample.connect(model.apply_sample)
        client.node_updated.connect(model.apply_node)
        client.node_removed.connect(model.remove_node)
        ctx.signin.signed_out.connect(model.clear)
        client.session_changed.connect(ctx._session_changed)
        client.set_poll_interval(settings.get("refresh_interval"))
        settings.changed.connect(ctx._setting_changed)
        ctx.themes.apply(settings.get("theme"))
        return ctx

    def _session_changed(self, session: Session | None) -> None:
        # Node ids are per core: rows of another core must not be diffed against this one's.
        if session is not None and session.url != self.fleet_url:
            self.model.clear()
            self.fleet_url = session.url

    def _setting_changed(self, key: str, value: Any) -> None:
        if key == "theme":
            self.themes.apply(value)
        elif key == "refresh_interval":
            self.client.set_poll_interval(value)

    async def close(self) -> None:
        """Stop the live link and every task, close the HTTP session; call before the loop ends."""
        await self.client.close()
        await self.aio.close()
        self.store_sync()

    def store_sync(self) -> None:
        self.settings.store.sync()
