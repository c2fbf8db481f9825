"""AppContext: the services every panel is handed (settings, tasks, REST and live link, fleet model, secrets, themes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from servermanager.desktop.aio import Aio
from servermanager.desktop.models.fleet import NodesModel
from servermanager.desktop.net.live import LiveLink
from servermanager.desktop.net.rest import RestClient, Session
from servermanager.desktop.net.signin import SignIn
from servermanager.desktop.secrets import TokenStore
from servermanager.desktop.settings import Profiles, Settings, WindowState
from servermanager.desktop.signing import OperatorKey
from servermanager.desktop.themes import ThemeManager


@dataclass
class AppContext:
    """Built once at start-up; panels take it, dumb widgets never see it."""

    settings: Settings
    profiles: Profiles
    window_state: WindowState
    aio: Aio
    rest: RestClient
    live: LiveLink
    secrets: TokenStore
    model: NodesModel
    signin: SignIn
    themes: ThemeManager
    signing: OperatorKey  # signs every command and service request (private key in the keyring)
    fleet_url: str | None = field(default=None, init=False)  # the core the model's rows came from

    @classmethod
    def create(
        cls,
        app: QApplication,
        store: QSettings,
        *,
        backoff: tuple[float, float] = (1.0, 30.0),
        ping_every: float = 10.0,
        request_timeout: float = 10.0,
    ) -> AppContext:
        """Wire the services together; the keywords tune the link's timings (tests use short ones)."""
        settings = Settings(store)
        aio = Aio()
        rest = RestClient(request_timeout=request_timeout)
        live = LiveLink(rest, aio, backoff=backoff, ping_every=ping_every, request_timeout=request_timeout)
        secrets = TokenStore()
        profiles = Profiles(store)
        model = NodesModel()
        ctx = cls(
            settings=settings,
            profiles=profiles,
            window_state=WindowState(store),
            aio=aio,
            rest=rest,
            live=live,
            secrets=secrets,
            model=model,
            signin=SignIn(rest, live, secrets, profiles, aio),
            themes=ThemeManager(app),
            signing=OperatorKey(secrets),
        )
        rest.signer = ctx.signing
        live.snapshot.connect(model.apply_snapshot)
        live.polled.connect(model.apply_snapshot)
        live.node_status.connect(model.apply_status)
        live.sample.connect(model.apply_sample)
        live.node_updated.connect(model.apply_node)
        live.node_removed.connect(model.remove_node)
        ctx.signin.signed_out.connect(model.clear)
        rest.session_changed.connect(ctx._session_changed)
        live.set_poll_interval(settings.get("refresh_interval"))
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
            self.live.set_poll_interval(value)

    async def close(self) -> None:
        """Stop the live link and every task, close the HTTP session; call before the loop ends."""
        await self.live.stop()
        await self.rest.close()
        await self.aio.close()
        self.store_sync()

    def store_sync(self) -> None:
        self.settings.store.sync()
