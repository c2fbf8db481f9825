"""The window's controls for several cores: Connect another core…, Disconnect core, and their links in the status bar and tray."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel, QMenu

from servermanager.desktop.accountflow import AccountFlow
from servermanager.desktop.context import AppContext
from servermanager.desktop.corealerts import MergedAlertsPanel
from servermanager.desktop.cores import CoreSet
from servermanager.desktop.dialogs import ConnectionDialog
from servermanager.desktop.net.errors import CertificateChanged, CertificateUntrusted, CoreError
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.net.rest import normalize_url
from servermanager.desktop.settings import Profile
from servermanager.desktop.widgets import tip_with_key

if TYPE_CHECKING:
    from servermanager.desktop.window import MainWindow


log = logging.getLogger(__name__)

_SHORT = {
    LinkState.IDLE: "signed out",
    LinkState.CONNECTING: "connecting",
    LinkState.CONNECTED: "live",
    LinkState.RECONNECTING: "unreachable",
    LinkState.POLLING: "polling",
    LinkState.OFFLINE: "unreachable",
}


class CoreMenu(QObject):
    """File → Connect another core… signs in to one more profile in this window (with its own
    session, socket and kept token); File → Disconnect core signs out of one of them again."""

    def __init__(self, window: MainWindow) -> None:

        super().__init__(window)
        self.window = window
        self.cores: CoreSet = window.cores
        self.dialog: ConnectionDialog | None = None
        self.flows: dict[int, AccountFlow] = {}  # the added cores' step-up prompts, by slot
        self.connect_action = QAction("Connect another core…", window)
        self.connect_action.setShortcut(QKeySequence("Ctrl+Shift+C"))
        self.connect_action.setToolTip("Sign in to one more core and see its nodes in the same fleet table")
        self.connect_action.triggered.connect(lambda: self.open_dialog())
        self.disconnect_menu = QMenu("Disconnect core", window)
        self.disconnect_menu.setToolTip("Sign out of a core connected beside the first one")
        file_menu = window.menus[0]
        file_menu.insertAction(window.signout_action, self.connect_action)
        file_menu.insertMenu(window.signout_action, self.disconnect_menu)
        window.addAction(self.connect_action)
        # The firing alerts of every core in one list, each with its core.
        self.alerts_panel: MergedAlertsPanel | None = None
        self.alerts_action = QAction("Alerts of every core", window)
        self.alerts_action.setShortcut(QKeySequence("Ctrl+Shift+E"))
        self.alerts_action.setToolTip("The firing alerts of every connected core, in one list")
        self.alerts_action.triggered.connect(lambda: self.open_alerts())
        view_menu = window.menus[1]
        view_menu.insertAction(window.console_action, self.alerts_action)
        window.addAction(self.alerts_action)
        for action in (self.connect_action, self.alerts_action):
            tip_with_key(action, action.toolTip())
        self.label = QLabel()  # the other cores' links, in the status bar
        self.label.setObjectName("coresStatus")
        self.label.hide()
        window.statusBar().insertPermanentWidget(0, self.label)
        self.cores.added.connect(self._added)
        self.cores.removed.connect(self._removed)
        self.cores.link_changed.connect(self._update)
        self.cores.certificate_changed.connect(self._certificate_changed)
        self._update()

    def open_alerts(self) -> MergedAlertsPanel:
        """The "All alerts" tab: every core's firing alerts, each with its core."""
        if self.alerts_panel is None:
            self.alerts_panel = MergedAlertsPanel(self.cores)
            self.window.tabs.addTab(self.alerts_panel, "All alerts")
        self.window.tabs.setCurrentWidget(self.alerts_panel)
        return self.alerts_panel

    # ------------------------------------------------------------ start-up

    def resume_others(self) -> None:
        """Open the cores that were open beside the first one when the app last ran."""
        first = self.window.ctx.profiles.last
        for name in self.window.ctx.profiles.also_open:
            profile = self.window.ctx.profiles.get(name)
            if profile is not None and name != first:
                self.cores.reopen(profile)

    # ------------------------------------------------------------ connect and disconnect

    def open_dialog(self, message: str = "") -> ConnectionDialog:
        if self.dialog is not None:
            self.dialog.show_error(message)
            self.dialog.raise_()
            return self.dialog
        open_urls = {
            p.url for p in self.window.ctx.profiles.all() if self.cores.slot_for_url(p.url) is not None
        }
        others = [p for p in self.window.ctx.profiles.all() if p.url not in open_urls]
        secrets = self.window.ctx.secrets
        dialog = ConnectionDialog(
            others,
            selected=others[0].name if others else None,
            keyring_ok=secrets.persistent,
            keyring_reason=secrets.unavailable_reason(),
            message=message,
            parent=self.window if self.window.isVisible() else None,
        )
        dialog.setWindowTitle("Connect another core")
        dialog.submitted.connect(
            lambda prof, secret, remember, session_only, code: self.window.ctx.aio.spawn(
                self.connect_core(dialog, prof, secret, remember, session_only, code), "connect-core"
            )
        )
        dialog.profile_deleted.connect(self.window._delete_profile)
        dialog.finished.connect(self._closed)
        self.dialog = dialog
        dialog.open()
        return dialog

    def _closed(self) -> None:
        if self.dialog is not None:
            self.dialog.deleteLater()
        self.dialog = None

    async def connect_core(
        self,
        dialog: ConnectionDialog,
        profile: Profile,
        secret: str,
        remember: bool = True,
        session_only: bool = False,
        code: str = "",
    ) -> AppContext | None:
        """Sign in to the profile's core beside the others; its rows join the fleet table."""
        url = normalize_url(profile.url)
        slot = self.cores.slot_for_url(url)
        if slot is not None:
            dialog.show_error(f"{self.cores.name(slot)} ({url}) is already in this window.")
            return None
        ctx = self.cores.new_context(profile)
        try:
            await ctx.signin.sign_in(
                profile, secret, remember=remember, session_only=session_only, otp=code or None
            )
        except (CertificateUntrusted, CertificateChanged) as exc:
            await self.cores.close_context(ctx)
            dialog.show_error(exc.message)
            self.window.ask_trust(
                exc,
                profile,
                lambda: self.window.ctx.aio.spawn(
                    self.connect_core(dialog, profile, secret, remember, session_only, code), "connect-core"
                ),
                dialog,
            )
            return None
        except CoreError as exc:
            await self.cores.close_context(ctx)
            if exc.kind == "otp_required":
                dialog.ask_code(exc.message)
            else:
                dialog.show_error(exc.message)
            return None
        slot = self.cores.attach(ctx)
        log.info("connected core %s (%s) beside the others, slot %d", profile.name, profile.url, slot)
        dialog.accept()
        self.window.statusBar().showMessage(
            f"Connected to {profile.name}: its nodes are in the fleet table.", 8000
        )
        return ctx

    def _certificate_changed(self, slot: int, problem: CertificateChanged) -> None:
        """An added core now presents another certificate: its link is held off by the pin (its rows
        say so); as for the first core, say what it means once per certificate and let the user decide."""
        ctx = self.cores.contexts.get(slot)
        profile = ctx.signin.profile if ctx is not None else None
        if ctx is None or profile is None:
            return
        self.window.statusBar().showMessage(f"{profile.name}: {problem.message}", 30000)
        if self.window.certificate_dialog is not None or problem.presented in self.window._declined:
            return

        def trusted() -> None:
            # The window pinned it in the saved profile (this object); this core's session takes it too.
            ctx.rest.set_pin(profile.fingerprint)
            ctx.live.reconnect_now()

        self.window.ask_trust(problem, profile, trusted)

    def disconnect_core(self, slot: int) -> None:
        name = self.cores.name(slot)
        log.info("disconnecting core %s, slot %d", name, slot)
        self.window.ctx.aio.spawn(self.cores.detach(slot), "disconnect-core")
        self.window.statusBar().showMessage(f"Signed out of {name}; its nodes left the fleet table.", 8000)

    # ------------------------------------------------------------ the cores' state

    def _added(self, slot: int) -> None:
        ctx = self.cores.contexts[slot]
        if slot != 0:
            # "Confirm it's you" before this core runs a command or a service action, as for the first.
            flow = AccountFlow(ctx, self.window)
            flow.message.connect(lambda text: self.window.statusBar().showMessage(text, 10000))
            self.flows[slot] = flow
        self._update()

    def _removed(self, slot: int, ctx: AppContext) -> None:
        self.window.close_core_views(ctx, slot)
        flow = self.flows.pop(slot, None)
        if flow is not None:
            ctx.rest.confirm_identity = None
            flow.deleteLater()
        self._update()

    def _update(self) -> None:
        extras = self.cores.extra_slots()
        self.disconnect_menu.clear()
        for slot in extras:
            action = self.disconnect_menu.addAction(self.cores.name(slot))
            action.triggered.connect(lambda _=False, s=slot: self.disconnect_core(s))
        self.disconnect_menu.setEnabled(bool(extras))
        self.label.setVisible(bool(extras))
        parts, tips = [], []
        for slot, (state, problem) in self.cores.states().items():
            ctx = self.cores.contexts[slot]
            word = "unreachable" if problem is not None and state != LinkState.IDLE else _SHORT[state]
            parts.append(f"{self.cores.name(slot)}: {word}")
            session = ctx.rest.session
            tips.append(f"{self.cores.name(slot)} ({session.url if session else 'not signed in'}): {word}")
        self.label.setText(" · ".join(parts))
        self.label.setToolTip("\n".join(tips))
        self.label.setAccessibleName("Cores: " + ", ".join(parts))
        down = [self.cores.name(s) for s in extras if self.cores.fleet.problem(s) is not None]
        self.window.tray_state.set_cores_down(down)
        live = (LinkState.CONNECTED, LinkState.POLLING)
        self.window.tray_state.set_cores_live(
            sum(1 for s in extras if self.cores.contexts[s].live.state in live)
        )
