"""The cores one window shows at once: a context per core (its own session, live socket and rows), one merged fleet, their firing alerts."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from PySide6.QtCore import QObject, Signal

from servermanager.common import metrics as mt
from servermanager.common import protocol as p
from servermanager.common.alerts import Alert
from servermanager.common.rest import History
from servermanager.desktop.charts.ranges import HistoryRequest
from servermanager.desktop.compare import CompareNodes
from servermanager.desktop.context import AppContext
from servermanager.desktop.models.merged import MergedFleet, node_key, split_key
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.net.rest import Session
from servermanager.desktop.settings import Profile

log = logging.getLogger(__name__)

# A row's status while its core cannot say how the node is (the tooltip and the Core column say which).
UNREACHABLE = "Unreachable"
SIGNED_OUT = "Signed out"
# Link states in which a core's rows are what it last said, not what it says now.
_UNREACHABLE = {LinkState.RECONNECTING, LinkState.OFFLINE}


class CoreSet(QObject):
    """Slot 0 is the app's own context (the core it signs in to first, which "Sign out" leaves);
    each core connected beside it gets a sibling context (AppContext.sibling) in the next slot, so
    its credentials, live socket and polling are its own, and one core going down marks only its
    rows. Slots are never reused while the window lives: a node key names one machine.
    """

    added = Signal(int)  # slot
    removed = Signal(int, object)  # slot, its AppContext (closed right after)
    alert = Signal(object)  # a keyed Alert (see keyed) from a live event of any core
    alert_on = Signal(int, object)  # slot, the Alert as its core sent it
    firing_changed = Signal()  # the firing alerts of some core were listed anew
    link_changed = Signal()  # some core's link state changed
    sessions_changed = Signal()  # some core signed in or out (its role decides what may be done)
    certificate_changed = Signal(int, object)  # slot, CertificateChanged: an added core re-keyed
    node_transition = Signal(object, str, bool)  # node key, name (with its core when several), online

    def __init__(self, primary: AppContext, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.primary = primary
        self.contexts: dict[int, AppContext] = {}
        self.fleet = MergedFleet(self)
        self.firing: dict[int, list[Alert]] = {}  # slot -> its firing alerts, as the core has them
        self._next = 0
        self._links: dict[int, _CoreLink] = {}
        self._urls: dict[int, str] = {}  # an added core's address, known before it has signed in
        self._attach(primary)

    # ------------------------------------------------------------ which cores

    def name(self, slot: int) -> str:
        ctx = self.contexts.get(slot)
        if ctx is None:
            return f"core {slot}"
        if ctx.core_name:
            return ctx.core_name
        profile = ctx.signin.profile
        if profile is not None:
            return profile.name
        session = ctx.rest.session
        return session.url if session is not None else "this core"

    def extra_slots(self) -> list[int]:
        return [slot for slot in self.contexts if slot != 0]

    def context_of(self, key: int) -> tuple[AppContext, int] | None:
        """The context of a node key's core and the node's id there; None once that core is gone."""
        slot, node_id = split_key(key)
        ctx = self.contexts.get(slot)
        return None if ctx is None else (ctx, node_id)

    def on_one_core(self, keys: list[int]) -> tuple[AppContext | None, list[int]]:
        """The one core these node keys are on and their ids there; (None, []) when they span
        several cores (or a core that is gone). No keys: the first core, and no ids."""
        slots = {split_key(k)[0] for k in keys}
        if not slots:
            return self.primary, []
        ctx = self.contexts.get(slots.pop()) if len(slots) == 1 else None
        return (ctx, [split_key(k)[1] for k in keys]) if ctx is not None else (None, [])

    def slot_of(self, ctx: AppContext) -> int | None:
        return next((slot for slot, c in self.contexts.items() if c is ctx), None)

    def slot_for_url(self, url: str) -> int | None:
        for slot, ctx in self.contexts.items():
            session = ctx.rest.session
            profile = ctx.signin.profile
            if (session is not None and session.url == url) or (profile is not None and profile.url == url):
                return slot
            if self._urls.get(slot) == url:
                return slot
        return None

    # ------------------------------------------------------------ adding and removing

    def new_context(self, profile: Profile) -> AppContext:
        """A context for one more core, not yet in the window (attach() puts it there)."""
        return self.primary.sibling(profile.name)

    def attach(self, ctx: AppContext) -> int:
        """Show this core's rows beside the others and remember that it is open (its name only)."""
        slot = self._attach(ctx)
        self._remember()
        return slot

    def _attach(self, ctx: AppContext) -> int:
        slot = self._next
        self._next += 1
        self.contexts[slot] = ctx
        self.fleet.add_core(slot, self.name(slot), ctx.model)
        self._links[slot] = _CoreLink(self, slot, ctx)
        self._link(slot, ctx.live.state.value, "")
        self.added.emit(slot)
        return slot

    async def detach(self, slot: int, *, sign_out: bool = True) -> None:
        """Take a core out of the window; sign_out: and sign out of it (its kept token is deleted)."""
        ctx = self.contexts.get(slot)
        if ctx is None or slot == 0:
            return
        del self.contexts[slot]
        self._urls.pop(slot, None)
        link = self._links.pop(slot)
        link.disconnect_all()
        link.deleteLater()
        self.firing.pop(slot, None)
        self.fleet.remove_core(slot)
        self._remember()
        self.removed.emit(slot, ctx)
        self.sessions_changed.emit()
        self.firing_changed.emit()
        await self.close_context(ctx, sign_out=sign_out)

    async def close_context(self, ctx: AppContext, *, sign_out: bool = False) -> None:
        """End a sibling context's socket and HTTP session (the app's own tasks and keyring stay)."""
        if sign_out and ctx.rest.session is not None:
            try:
                await ctx.signin.sign_out()
            except CoreError as exc:  # revoking needs the core; the kept token is deleted anyway
                log.info("signing out of %s: %s", ctx.core_name, exc.message)
        ctx.keep_fleet()
        # The app's settings outlive this context: it no longer follows them.
        with contextlib.suppress(RuntimeError, TypeError):
            ctx.settings.changed.disconnect(ctx._setting_changed)
        await ctx.live.stop()
        await ctx.rest.close()

    async def close(self) -> None:
        """Close every extra core, keeping their sign-ins for the next start."""
        for slot in self.extra_slots():
            ctx = self.contexts.pop(slot)
            await self.close_context(ctx)

    def _remember(self) -> None:
        self.primary.profiles.also_open = [self.contexts[s].core_name for s in sorted(self.extra_slots())]

    def reopen(self, profile: Profile) -> AppContext | None:
        """At start-up: put a core that was open last time back in the window at once, on its kept
        rows (marked stale), and sign in to it in the background with its kept token (see resume).
        None when it is already there."""
        if self.slot_for_url(profile.url) is not None:
            return None
        ctx = self.new_context(profile)
        ctx.show_cached(profile.url)
        slot = self._attach(ctx)
        self._urls[slot] = profile.url
        ctx.aio.spawn(self.resume(slot, ctx, profile), f"resume-{profile.name}")
        return ctx

    async def resume(self, slot: int, ctx: AppContext, profile: Profile) -> None:
        """Sign in with the kept token, trying again while the core is unreachable; without a kept
        token (or one the core refuses) the core's rows say so."""
        while self.contexts.get(slot) is ctx and ctx.rest.session is None:
            try:
                session = await ctx.signin.resume(profile)
            except CoreError as exc:
                self.fleet.set_problem(slot, UNREACHABLE, exc.message)
                if exc.kind not in ("unreachable", "timeout"):
                    return
                await asyncio.sleep(ctx.live.backoff.next())
                continue
            if session is None:
                self.fleet.set_problem(slot, SIGNED_OUT, "sign in again with File → Connect another core…")
            return

    # ------------------------------------------------------------ alerts

    def keyed(self, slot: int, alert: Alert) -> Alert:
        """The alert as the window's tray and merged list hold it: its id a key of (core, alert id),
        so two cores' alert 1 stay apart, and its core named beside the node when there are several."""
        if slot == 0 and len(self.contexts) == 1:
            return alert
        node = f"{alert.node} · {self.name(slot)}" if len(self.contexts) > 1 else alert.node
        return msgspec.structs.replace(alert, id=node_key(slot, alert.id), node=node)

    def alert_event(self, slot: int, alert: Alert) -> None:
        """An alert as it is now (a live event, or the answer to an ack): the firing list follows."""
        if slot not in self.contexts:
            return
        kept = [a for a in self.firing.get(slot, []) if a.id != alert.id]
        self.firing[slot] = [*kept, alert] if alert.state == "firing" else kept
        self.alert.emit(self.keyed(slot, alert))
        self.alert_on.emit(slot, alert)

    def all_firing(self) -> list[Alert]:
        return [self.keyed(slot, a) for slot, alerts in self.firing.items() for a in alerts]

    def refresh_firing(self, slot: int) -> None:
        ctx = self.contexts.get(slot)
        if ctx is not None and ctx.rest.session is not None:
            ctx.aio.spawn(self._load_firing(slot, ctx), "firing-alerts")

    async def _load_firing(self, slot: int, ctx: AppContext) -> None:
        try:
            alerts = await ctx.rest.alerts(state="firing")
        except CoreError as exc:
            # A core without alerting, or a blip: the next snapshot or poll asks again.
            log.info("could not list firing alerts of %s: %s", self.name(slot), exc.message)
            return
        if self.contexts.get(slot) is not ctx:
            return
        ctx.model.set_alerts(alerts)
        self.firing[slot] = [a for a in alerts if a.state == "firing"]
        self.firing_changed.emit()

    # ------------------------------------------------------------ link states

    def _link(self, slot: int, state: str, detail: str) -> None:
        link = LinkState(state)
        ctx = self.contexts.get(slot)
        if ctx is None:
            return
        if link in _UNREACHABLE:
            self.fleet.set_problem(
                slot, UNREACHABLE, detail or "neither the live socket nor polling reach it"
            )
        elif link == LinkState.IDLE and slot != 0 and ctx.model.rowCount():
            self.fleet.set_problem(
                slot, SIGNED_OUT, detail or "sign in again with File → Connect another core…"
            )
        elif link != LinkState.IDLE:
            self.fleet.set_problem(slot, None)
        self.link_changed.emit()

    def _session(self, slot: int, session: Session | None) -> None:
        if session is None:
            self.firing.pop(slot, None)
            self.firing_changed.emit()
        self._renamed(slot)
        self.sessions_changed.emit()

    def can_edit(self) -> bool:
        """Whether any core's sign-in may edit nodes and run commands (each core still decides)."""
        return any(c.rest.session is not None and c.rest.session.can_edit for c in self.contexts.values())

    def _renamed(self, slot: int) -> None:
        self.fleet.rename_core(slot, self.name(slot))

    def states(self) -> dict[int, tuple[LinkState, str | None]]:
        """Each core's link state and the problem its rows show (None: current)."""
        return {slot: (ctx.live.state, self.fleet.problem(slot)) for slot, ctx in self.contexts.items()}

    def unreachable(self) -> list[str]:
        """The names of the cores whose rows are not current."""
        return [self.name(slot) for slot in self.contexts if self.fleet.problem(slot) is not None]


class _CoreLink(QObject):
    """Relays one core's live link, REST session and sign-in to the CoreSet, tagged with its slot.

    A QObject owned by the CoreSet, so that its connections to the core's context (the first
    core's outlives the window) are dropped with it.
    """

    def __init__(self, cores: CoreSet, slot: int, ctx: AppContext) -> None:
        super().__init__(cores)
        self.cores = cores
        self.slot = slot
        self.connections = [
            ctx.live.state_changed.connect(self._state),
            ctx.live.alert.connect(ctx.model.alert_changed),
            ctx.live.alert.connect(self._alert),
            ctx.live.snapshot.connect(self._listed),
            ctx.live.polled.connect(self._listed),
            ctx.rest.session_changed.connect(self._session),
            ctx.signin.signed_in.connect(self._signed_in),
            ctx.model.online_changed.connect(self._online),
        ]
        if slot != 0:  # the first core's is the window's own (MainWindow._certificate_changed)
            self.connections.append(ctx.rest.certificate_changed.connect(self._certificate))

    def disconnect_all(self) -> None:
        for connection in self.connections:
            QObject.disconnect(connection)
        self.connections = []

    def _state(self, state: str, detail: str) -> None:
        self.cores._link(self.slot, state, detail)

    def _alert(self, alert: Alert) -> None:
        self.cores.alert_event(self.slot, alert)

    def _listed(self, _nodes: object) -> None:
        self.cores.refresh_firing(self.slot)

    def _session(self, session: Session | None) -> None:
        self.cores._session(self.slot, session)

    def _signed_in(self, _session: object) -> None:
        self.cores._renamed(self.slot)

    def _online(self, node_id: int, name: str, online: bool) -> None:
        cores = self.cores
        label = f"{name} · {cores.name(self.slot)}" if len(cores.contexts) > 1 else name
        cores.node_transition.emit(node_key(self.slot, node_id), label, online)

    def _certificate(self, problem: object) -> None:
        self.cores.certificate_changed.emit(self.slot, problem)


class CoreSetNodes(CompareNodes):
    """Every core's nodes for the Compare tab, by node key: web-1 of one site beside web-1 of another,
    each line's history asked of its own core with that core's sign-in."""

    def __init__(self, cores: CoreSet, parent: QObject | None = None) -> None:
        super().__init__(cores.primary, parent, listen=False)
        self.cores = cores
        self._relays: dict[int, _NodeRelay] = {}
        for slot in cores.contexts:
            self._added(slot)
        cores.added.connect(self._added)
        cores.removed.connect(self._removed)

    def _added(self, slot: int) -> None:
        self._relays[slot] = _NodeRelay(self, slot, self.cores.contexts[slot])

    def _removed(self, slot: int, _ctx: object) -> None:
        relay = self._relays.pop(slot, None)
        if relay is not None:
            relay.disconnect_all()
            relay.deleteLater()

    def name(self, key: int) -> str:
        return self.cores.fleet.display_name(key)

    def nodes(self) -> list[tuple[int, p.NodeInfo]]:
        return self.cores.fleet.keyed_nodes()

    def node(self, key: int) -> p.NodeInfo | None:
        return self.cores.fleet.node(key)

    def signed_in(self) -> bool:
        return any(c.rest.session is not None for c in self.cores.contexts.values())

    async def history(self, key: int, r: HistoryRequest, fields: list[str]) -> History:
        found = self.cores.context_of(key)
        if found is None:
            raise CoreError("gone", "its core is no longer in this window")
        ctx, node_id = found
        return await ctx.rest.history(node_id, r.start, r.end, r.resolution, fields, points=r.points)


class _NodeRelay(QObject):
    """One core's samples and node changes for CoreSetNodes, as node keys."""

    def __init__(self, nodes: CoreSetNodes, slot: int, ctx: AppContext) -> None:
        super().__init__(nodes)
        self.nodes = nodes
        self.slot = slot
        self.connections = [
            ctx.model.sample_received.connect(self._sample),
            ctx.model.node_changed.connect(self._changed),
        ]

    def disconnect_all(self) -> None:
        for connection in self.connections:
            QObject.disconnect(connection)
        self.connections = []

    def _sample(self, node_id: int, sample: mt.Sample) -> None:
        self.nodes.sample_received.emit(node_key(self.slot, node_id), sample)

    def _changed(self, node_id: int) -> None:
        self.nodes.node_changed.emit(node_key(self.slot, node_id))
