"""AppContext: the services every panel is handed (settings, tasks, REST and live link, fleet model, secrets, themes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from servermanager.desktop.aio import Aio
from servermanager.desktop.fleetcache import FleetCache
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
    # The last known fleet per core, for an instant start; None keeps nothing (tests, self-test).
    fleet_cache: FleetCache | None = None
    # The profile name this context is signed in to when the window holds several cores ("" alone).
    core_name: str = ""

    @classmethod
    def create(
        cls,
        app: QApplication,
        store: QSettings,
        *,
        backoff: tuple[float, float] = (1.0, 30.0),
        ping_every: float = 10.0,
        request_timeout: float = 10.0,
        fleet_cache: FleetCache | None = None,
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
            fleet_cache=fleet_cache,
        )
        ctx._wire()
        ctx.themes.apply(settings.get("theme"))
        return ctx

    def sibling(self, core_name: str) -> AppContext:
        """A context for one more core in the same window: the app's settings, tasks, keyring, key and
        themes, with its own REST session, live socket (and polling), fleet rows and sign-in."""
        rest = RestClient(request_timeout=self.rest.request_timeout)
        live = LiveLink(
            rest,
            self.aio,
            backoff=(self.live.backoff.initial, self.live.backoff.cap),
            ping_every=self.live.ping_every,
            request_timeout=self.live.request_timeout,
        )
        signin = SignIn(rest, live, self.secrets, self.profiles, self.aio)
        signin.remember_last = False  # the window's first core stays the one it opens on next time
        ctx = AppContext(
            settings=self.settings,
            profiles=self.profiles,
            window_state=self.window_state,
            aio=self.aio,
            rest=rest,
            live=live,
            secrets=self.secrets,
            model=NodesModel(),
            signin=signin,
            themes=self.themes,
            signing=self.signing,
            fleet_cache=self.fleet_cache,
            core_name=core_name,
        )
        ctx._wire()
        return ctx

    def _wire(self) -> None:
        """Connect this context's REST client and live link to its fleet rows."""
        rest, live, model, settings, ctx = self.rest, self.live, self.model, self.settings, self
        rest.signer = ctx.signing
        live.snapshot.connect(model.apply_snapshot)
        live.polled.connect(model.apply_snapshot)
        live.node_status.connect(model.apply_status)
        live.sample.connect(model.apply_sample)
        live.node_updated.connect(model.apply_node)
        live.node_removed.connect(model.remove_node)
        ctx.signin.signed_out.connect(model.clear)
        rest.session_changed.connect(ctx._session_changed)
        # After the model has applied them (connected first): a full list is worth keeping.
        live.snapshot.connect(ctx.keep_fleet)
        live.polled.connect(ctx.keep_fleet)
        live.set_poll_interval(settings.get("refresh_interval"))
        settings.changed.connect(ctx._setting_changed)

    def _session_changed(self, session: Session | None) -> None:
        # Node ids are per core: rows of another core must not be diffed against this one's.
        if session is not None and session.url != self.fleet_url:
            self.model.clear()
            self.fleet_url = session.url

    def show_cached(self, url: str) -> bool:
        """Fill the fleet with what was last known of this core, marked stale; False when nothing."""
        if self.fleet_cache is None or self.rest.session is not None:
            return False
        cached = self.fleet_cache.load(url)
        if cached is None:
            return False
        self.fleet_url = url  # the live list of the same core then replaces these rows in place
        self.model.show_cached(cached.nodes, cached.saved_at)
        return True

    def keep_fleet(self, _nodes: object = None) -> None:
        """Save the fleet as the core last listed it, for the next start."""
        session = self.rest.session
        if self.fleet_cache is None or session is None or self.model.stale_since is not None:
            return
        if session.url == self.fleet_url:
            self.fleet_cache.save(session.url, self.model.nodes())

    def _setting_changed(self, key: str, value: Any) -> None:
        if key == "theme":
            if not self.core_name:  # once for the app, not once per core
                self.themes.apply(value)
        elif key == "refresh_interval":
            self.live.set_poll_interval(value)

    async def close(self) -> None:
        """Stop the live link and every task, close the HTTP session; call before the loop ends."""
        self.keep_fleet()  # the latest values, not only those of the last snapshot
        await self.live.stop()
        await self.rest.close()
        await self.aio.close()
        self.store_sync()

    def store_sync(self) -> None:
        self.settings.store.sync()
