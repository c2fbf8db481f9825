"""The main window: fleet and node tabs, toolbar, link status bar, tray, and the dialogs' controller."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, QSize, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QTabWidget,
    QToolBar,
    QToolButton,
    QWidget,
)

from servermanager.common import rest as m
from servermanager.common.alerts import Alert
from servermanager.desktop.accountflow import AccountFlow
from servermanager.desktop.addserver import AddServerDialog, InstallRequest
from servermanager.desktop.alerting import AlertingView
from servermanager.desktop.audit import AuditPanel
from servermanager.desktop.batch import BatchActions, BatchView, describe
from servermanager.desktop.compare import CompareView
from servermanager.desktop.console import ConsolePanel
from servermanager.desktop.context import AppContext
from servermanager.desktop.corealerts import MergedAlertsPanel
from servermanager.desktop.cores import CoreSet, CoreSetNodes
from servermanager.desktop.corewindow import CoreMenu
from servermanager.desktop.dialogs import CertificateDialog, ConnectionDialog, SettingsDialog
from servermanager.desktop.fleetview import FleetPanel
from servermanager.desktop.format import fmt_duration
from servermanager.desktop.models.merged import split_key
from servermanager.desktop.net.errors import CertificateChanged, CertificateUntrusted, CoreError
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.net.rest import Session, normalize_url
from servermanager.desktop.nodeview import NodeView
from servermanager.desktop.palette import CommandPalette, PaletteEntry
from servermanager.desktop.secrets import Kept
from servermanager.desktop.settings import Profile
from servermanager.desktop.signing import SigningKeyDialog
from servermanager.desktop.themes import icon
from servermanager.desktop.tray import Tray, TrayState
from servermanager.desktop.users import AccountsView
from servermanager.desktop.widgets import tip_with_key

log = logging.getLogger(__name__)

LINK_TEXT = {
    LinkState.IDLE: "Not signed in",
    LinkState.CONNECTING: "Connecting…",
    LinkState.CONNECTED: "Live",
    LinkState.RECONNECTING: "Reconnecting…",
    LinkState.POLLING: "Polling",
    LinkState.OFFLINE: "Offline",
}


def fill_menu(menu: QMenu, *actions: QAction | None) -> None:
    """The actions in order, None for a separator."""
    for action in actions:
        if action is None:
            menu.addSeparator()
        else:
            menu.addAction(action)


class Tabs(QTabWidget):
    """The window's tabs; each close button is named after its tab, which a screen reader needs."""

    def tabInserted(self, index: int) -> None:
        super().tabInserted(index)
        bar = self.tabBar()
        button = bar.tabButton(index, bar.ButtonPosition.RightSide)
        if button is not None:
            button.setAccessibleName(f"Close {bar.tabText(index)}")


class MainWindow(QMainWindow):
    """Owns the panels and opens dialogs; all network work goes through the context's services."""

    quit_requested = Signal()

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self._quitting = False
        self._told_about_tray = False
        self.connection_dialog: ConnectionDialog | None = None
        self.certificate_dialog: CertificateDialog | None = None
        self._declined: set[str] = set()  # changed certificates the user would not trust, this run
        self.settings_dialog: SettingsDialog | None = None
        self.signing_dialog: SigningKeyDialog | None = None
        self.add_server_dialog: AddServerDialog | None = None
        self.node_views: dict[int, NodeView] = {}
        self.console: ConsolePanel | None = None
        self.audit: AuditPanel | None = None
        self.alerting: AlertingView | None = None
        self.accounts: AccountsView | None = None
        self.compare: CompareView | None = None
        # Change password, two-factor, "Confirm it's you" before commands, what sign-in asks.
        self.account = AccountFlow(ctx, self)
        self.account.message.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.setWindowTitle("Server Manager")
        self.setWindowIcon(icon("app"))
        self.resize(1280, 760)

        # Every core this window shows: ctx's (slot 0) and those connected beside it.
        self.cores = CoreSet(ctx, self)
        self.fleet = FleetPanel(ctx, cores=self.cores)
        self.fleet.open_node.connect(self.open_node)
        self.fleet.run_command.connect(self.open_console)
        self.fleet.compare.connect(self.open_compare)
        self.fleet.message.connect(lambda text: self.statusBar().showMessage(text, 6000))
        # Batch command, service action and group/tags edit on the fleet's selection (desktop.batch).
        self.batch = BatchActions(
            ctx, self.fleet.selected_node_ids, self, lambda keys: self._one_core(keys, "A batch action")
        )
        self.batch.view_opened.connect(self._add_batch_view)
        self.fleet.selection_actions = list(self.batch.actions)
        self.batch_views: list[BatchView] = []
        self.tabs = Tabs()
        self.tabs.setDocumentMode(True)
        self.tabs.setTabsClosable(True)
        self.tabs.addTab(self.fleet, "Fleet")
        self.tabs.tabBar().setTabButton(0, self.tabs.tabBar().ButtonPosition.RightSide, None)
        self.tabs.tabCloseRequested.connect(self._close_tab)
        self.setCentralWidget(self.tabs)

        toolbar = QToolBar("Main")
        toolbar.setObjectName("mainToolbar")
        toolbar.setMovable(False)
        toolbar.setIconSize(QSize(18, 18))
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.connect_action = QAction(icon("connect"), "Connect…", self)
        self.connect_action.triggered.connect(lambda: self.open_connection())
        self.settings_action = QAction(icon("settings"), "Settings…", self)
        self.settings_action.triggered.connect(self.open_settings)
        self.signout_action = QAction(icon("logout"), "Sign out", self)
        self.signout_action.triggered.connect(self.sign_out)
        self.signout_action.setEnabled(False)
        self.console_action = QAction("Console", self)
        self.console_action.setToolTip("Run a command on the nodes selected in the fleet table")
        self.console_action.triggered.connect(lambda: self.open_console())
        self.audit_action = QAction("Audit log", self)
        self.audit_action.triggered.connect(lambda: self.open_audit())
        self.alerts_action = QAction("Alerts", self)
        self.alerts_action.setToolTip("Alerts, rules, silences and notification channels")
        self.alerts_action.triggered.connect(lambda: self.open_alerting())
        self.alerts_action.setEnabled(False)
        self.users_action = QAction("Users", self)
        self.users_action.setToolTip("Users, their sign-ins and tokens, enrollment tokens (admins)")
        self.users_action.triggered.connect(lambda: self.open_accounts())
        self.users_action.setVisible(False)
        self.add_server_action = QAction("Add server…", self)
        self.add_server_action.setToolTip(
            "The one line that installs and enrolls an agent on a new server (admins)"
        )
        self.add_server_action.triggered.connect(lambda: self.open_add_server())
        self.add_server_action.setVisible(False)
        self.password_action = QAction("Change password…", self)
        self.password_action.triggered.connect(lambda: self.account.change_password())
        self.two_factor_action = QAction("Two-factor sign-in…", self)
        self.two_factor_action.triggered.connect(lambda: self.account.two_factor())
        self.sessions_action = QAction("Sessions and tokens…", self)
        self.sessions_action.triggered.connect(lambda: self.open_accounts("sessions"))
        # In the menu bar only: a toolbar button with the same menu showed "Account" twice.
        self.account_menu = QMenu("Account", self)
        self.account_menu.setToolTip("Your password, two-factor sign-in, sessions and tokens")
        for action in (self.password_action, self.two_factor_action, self.sessions_action):
            self.account_menu.addAction(action)
        self.quit_action = QAction("Quit", self)
        self.quit_action.setShortcut("Ctrl+Q")
        self.quit_action.triggered.connect(self.request_quit)
        self.addAction(self.quit_action)
        for action in (self.connect_action, self.settings_action, self.signout_action):
            toolbar.addAction(action)
        toolbar.addSeparator()
        toolbar.addAction(self.fleet.refresh_action)
        self.addAction(self.fleet.refresh_action)  # F5 from any tab
        toolbar.addAction(self.alerts_action)
        toolbar.addAction(self.console_action)
        toolbar.addAction(self.audit_action)
        # The operator's own key, which signs every command: shown for agents to trust.
        self.signing_action = QAction("Signing key…", self)
        self.signing_action.setToolTip("The key your commands are signed with, and how an agent trusts it")
        self.signing_action.triggered.connect(
            lambda: self.ctx.aio.spawn(self.open_signing_key(), "signing-key")
        )
        toolbar.addAction(self.signing_action)
        toolbar.addAction(self.users_action)
        toolbar.addAction(self.add_server_action)
        self.addToolBar(toolbar)
        self._keyboard()

        self.link_icon = QLabel()
        self.link_label = QLabel()
        self.link_label.setObjectName("linkStatus")
        self.retry_button = QToolButton()
        self.retry_button.setText("Retry now")
        self.retry_button.setAutoRaise(True)
        self.retry_button.setToolTip("Try the live connection again without waiting")
        self.retry_button.clicked.connect(ctx.live.reconnect_now)
        self.retry_button.hide()
        self.counts_label = QLabel()
        self.user_label = QLabel()
        bar = self.statusBar()
        bar.addPermanentWidget(self.counts_label)
        bar.addPermanentWidget(self.user_label)
        bar.addPermanentWidget(self.retry_button)
        bar.addPermanentWidget(self.link_icon)
        bar.addPermanentWidget(self.link_label)

        self.tray_state = TrayState(parent=self)
        self.tray_state.set_enabled(ctx.settings.get("notifications"))
        self.tray_state.set_unreachable_after(ctx.settings.get("core_unreachable_after"))
        self.tray = Tray(self.tray_state, self)
        self.tray.show_requested.connect(self.show_normal)
        self.tray.quit_requested.connect(self.request_quit)
        self.tray.ack_requested.connect(self.acknowledge_alert)
        self.tray.snooze_requested.connect(self.snooze_alert)

        ctx.live.state_changed.connect(self._link_changed)
        # Bound methods, not lambdas: Qt drops those connections when the window is deleted, while
        # the context (and its live link) may outlive it.
        ctx.live.latency_changed.connect(self._latency_changed)
        ctx.rest.session_changed.connect(self._session_changed)
        ctx.rest.certificate_changed.connect(self._certificate_changed)
        self.cores.fleet.counts_changed.connect(self._counts_changed)
        self.cores.node_transition.connect(self.tray_state.node_transition)  # every core's nodes
        # Alerts colour the tray: each core's firing ones are listed whenever its fleet is (a
        # snapshot on every live connect, each poll while polling; see CoreSet), and alert events
        # keep them current between.
        self.cores.alert.connect(self.tray_state.alert_changed)
        self.cores.firing_changed.connect(self._firing_changed)
        # "Connect another core…", "Disconnect core", and the other cores' link states.
        self.core_menu = CoreMenu(self)
        ctx.settings.changed.connect(self._setting_changed)
        ctx.signin.needs_login.connect(self._needs_login)
        ctx.signin.signed_out.connect(self._signed_out)
        ctx.signin.warning.connect(self._warning)
        self._link_changed(ctx.live.state.value, "")
        self._session_changed(ctx.rest.session)
        self._counts_changed(*self.cores.fleet.counts())
        self.restore_state()

    # ------------------------------------------------------------ keyboard

    def _keyboard(self) -> None:
        """Shortcuts on every action, a menu bar that shows them, tab keys and the command palette."""
        keys: list[tuple[QAction, QKeySequence | str]] = [
            (self.connect_action, "Ctrl+O"),
            (self.settings_action, "Ctrl+,"),
            (self.signout_action, "Ctrl+Shift+O"),
            (self.alerts_action, "Ctrl+Shift+A"),
            (self.console_action, "Ctrl+Shift+X"),
            (self.audit_action, "Ctrl+Shift+L"),
            (self.users_action, "Ctrl+Shift+U"),
            (self.add_server_action, "Ctrl+Shift+N"),
            (self.signing_action, "Ctrl+Shift+K"),
            (self.sessions_action, "Ctrl+Shift+S"),
        ]
        for action, key in keys:
            action.setShortcut(QKeySequence(key))
        self.fleet_action = QAction("Fleet", self)
        self.fleet_action.setShortcut("Ctrl+1")
        self.fleet_action.triggered.connect(lambda: self.tabs.setCurrentWidget(self.fleet))
        self.find_action = QAction("Find nodes", self)
        self.find_action.setShortcut(QKeySequence(QKeySequence.StandardKey.Find))
        self.find_action.triggered.connect(self._find)
        self.palette_action = QAction("Command palette…", self)
        self.palette_action.setShortcut("Ctrl+K")
        self.palette_action.triggered.connect(lambda: self.open_palette())
        self.next_tab_action = QAction("Next tab", self)
        self.next_tab_action.setShortcuts([QKeySequence("Ctrl+Tab"), QKeySequence("Ctrl+PgDown")])
        self.next_tab_action.triggered.connect(lambda: self._step_tab(1))
        self.previous_tab_action = QAction("Previous tab", self)
        self.previous_tab_action.setShortcuts([QKeySequence("Ctrl+Shift+Tab"), QKeySequence("Ctrl+PgUp")])
        self.previous_tab_action.triggered.connect(lambda: self._step_tab(-1))
        self.close_tab_action = QAction("Close tab", self)
        self.close_tab_action.setShortcut(QKeySequence("Ctrl+W"))
        self.close_tab_action.triggered.connect(lambda: self._close_tab(self.tabs.currentIndex()))
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        fill_menu(
            file_menu,
            self.connect_action,
            self.signout_action,
            None,
            self.add_server_action,
            None,
            self.settings_action,
            self.signing_action,
            None,
            self.quit_action,
        )
        view_menu = bar.addMenu("&View")
        fill_menu(
            view_menu,
            self.palette_action,
            self.find_action,
            self.fleet.refresh_action,
            self.fleet.columns_menu.menuAction(),
            None,
            self.fleet_action,
            self.alerts_action,
            self.console_action,
            self.audit_action,
            self.users_action,
            None,
            self.next_tab_action,
            self.previous_tab_action,
            self.close_tab_action,
        )
        nodes_menu = bar.addMenu("&Nodes")
        fill_menu(nodes_menu, *self.batch.actions)
        self.account_menu.setTitle("&Account")
        bar.addMenu(self.account_menu)
        self.menus = [file_menu, view_menu, nodes_menu, self.account_menu]
        for action in (
            self.fleet_action,
            self.find_action,
            self.palette_action,
            *self.batch.actions,
            *self._tab_actions(),
        ):
            self.addAction(action)  # work with the menu bar closed, from any tab
        for action in [a for menu in self.menus for a in menu.actions() if not a.isSeparator()]:
            tip_with_key(action, action.toolTip())
        self.palette_popup: CommandPalette | None = None
        self.tabs.setAccessibleName("Open views")
        for name, button in (
            ("qt_toolbar_ext_button", "More toolbar actions"),
            ("qt_menubar_ext_button", "More menus"),
        ):
            for found in self.findChildren(QToolButton, name):
                found.setAccessibleName(button)
        # Ctrl+K is "delete to the end of the line" in a line edit, which would swallow it there.
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)

    def _tab_actions(self) -> tuple[QAction, ...]:
        return (self.next_tab_action, self.previous_tab_action, self.close_tab_action)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and isinstance(event, QKeyEvent)
            and isinstance(watched, QLineEdit)
            and watched.window() is self
            and QKeySequence(event.keyCombination()) == self.palette_action.shortcut()
        ):
            return True  # not accepted by the line edit: the window's shortcut runs
        return super().eventFilter(watched, event)

    def _find(self) -> None:
        self.tabs.setCurrentWidget(self.fleet)
        self.fleet.search.setFocus()
        self.fleet.search.selectAll()

    def _step_tab(self, step: int) -> None:
        count = self.tabs.count()
        if count > 1:
            self.tabs.setCurrentIndex((self.tabs.currentIndex() + step) % count)

    def palette_entries(self) -> list[PaletteEntry]:
        """What the palette lists: the nodes, then the views and actions this user can use now."""

        def key(action: QAction) -> str:
            return action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)

        entries: list[PaletteEntry] = []
        fleet = self.cores.fleet
        for node_key, _node in sorted(fleet.keyed_nodes(), key=lambda kn: kn[1].name.lower()):
            entries.append(
                PaletteEntry(f"node:{node_key}", "Node", f"Open node {fleet.display_name(node_key)}")
            )
        for name, action in self._palette_actions().items():
            if action.isEnabled() and action.isVisible():
                kind = "View" if name.startswith("view:") else "Action"
                entries.append(PaletteEntry(name, kind, action.text().replace("&", ""), key(action)))
        for slot in self.cores.extra_slots():  # File → Disconnect core's items
            entries.append(
                PaletteEntry(f"disconnect:{slot}", "Action", f"Disconnect core {self.cores.name(slot)}")
            )
        return entries

    def _palette_actions(self) -> dict[str, QAction]:
        return {
            "view:fleet": self.fleet_action,
            "view:alerts": self.alerts_action,
            "view:all-alerts": self.core_menu.alerts_action,
            "view:console": self.console_action,
            "view:audit": self.audit_action,
            "view:users": self.users_action,
            "view:sessions": self.sessions_action,
            "action:refresh": self.fleet.refresh_action,
            "action:find": self.find_action,
            "action:add-server": self.add_server_action,
            "action:connect": self.connect_action,
            "action:connect-core": self.core_menu.connect_action,
            "action:settings": self.settings_action,
            "action:signing-key": self.signing_action,
            "action:batch-command": self.batch.command_action,
            "action:batch-service": self.batch.service_action,
            "action:bulk-edit": self.batch.edit_action,
            "action:password": self.password_action,
            "action:two-factor": self.two_factor_action,
            "action:sign-out": self.signout_action,
            "action:close-tab": self.close_tab_action,
            "action:quit": self.quit_action,
        }

    def open_palette(self) -> CommandPalette:
        """The Ctrl+K popup, filled afresh: a node or role change since the last one shows."""
        if self.palette_popup is not None:
            self.palette_popup.close()
        palette = CommandPalette(self.palette_entries(), self)
        palette.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        palette.chosen.connect(self.run_palette_entry)
        palette.finished.connect(lambda _r: setattr(self, "palette_popup", None))
        self.palette_popup = palette
        palette.open()
        palette.filter.setFocus()
        return palette

    def run_palette_entry(self, key: str) -> None:
        kind, _, value = key.partition(":")
        if kind == "node":
            if self.cores.fleet.node(int(value)) is not None:
                self.open_node(int(value))
            return
        if kind == "disconnect":
            if int(value) in self.cores.extra_slots():
                self.core_menu.disconnect_core(int(value))
            return
        action = self._palette_actions().get(key)
        if action is not None and action.isEnabled() and action.isVisible():
            action.trigger()

    # ------------------------------------------------------------ start-up

    def start(self, core_url: str | None = None, demo_password: str | None = None) -> None:
        """Show the window (or only the tray) and sign in: demo, kept token, or ask."""
        if self.ctx.settings.get("start_minimized") and self.tray.available:
            self.statusBar().showMessage("Started minimized to the tray")
        else:
            self.show()
        if demo_password is None:
            # The last known fleet at once, marked stale, while the core is asked (which may take long).
            profiles = self.ctx.profiles
            name = profiles.last if not core_url else None
            profile = profiles.for_url(normalize_url(core_url)) if core_url else profiles.get(name or "")
            if profile is not None:
                self.ctx.show_cached(profile.url)
            self.core_menu.resume_others()  # the cores open beside it last time, each on its own
        self.ctx.aio.spawn(self._startup(core_url, demo_password), "startup")

    async def _startup(self, core_url: str | None, demo_password: str | None) -> None:
        profiles = self.ctx.profiles
        if demo_password is not None and core_url:
            demo = Profile("Demo", normalize_url(core_url), "password", "admin", remember=False)
            try:
                await self.ctx.signin.sign_in(demo, demo_password, remember=False, session_only=True)
            except CoreError as exc:
                self.open_connection(exc.message, demo.name)
            return
        if core_url:
            profile = profiles.for_url(normalize_url(core_url))
        else:
            profile = profiles.get(profiles.last) if profiles.last else None
        if profile is None:
            self.open_connection(selected=core_url)
            return
        await self._resume(profile)

    async def _resume(self, profile: Profile) -> None:
        """Sign in with the profile's kept token; ask when there is none or the core is not trusted."""
        try:
            session = await self.ctx.signin.resume(profile)
        except (CertificateUntrusted, CertificateChanged) as exc:
            dialog = self.open_connection(exc.message, profile.name)
            self.ask_trust(exc, profile, lambda: self.ctx.aio.spawn(self._resume(profile), "resume"), dialog)
            return
        except CoreError as exc:
            if exc.kind in ("unreachable", "timeout") and self.ctx.model.stale_since is not None:
                # The cached fleet is on screen: keep trying in the background rather than ask.
                self.fleet.set_stale_detail(f"{exc.message} Trying again…")
                self.ctx.aio.spawn(self._resume_later(profile), "resume-retry")
                return
            self.open_connection(exc.message, profile.name)
            return
        if session is None:
            self.open_connection(selected=profile.name)
            return
        if self.connection_dialog is not None:
            self.connection_dialog.accept()
        if not session.is_api_token:
            await self.account.check()  # a password to change, two-factor to set up

    async def _resume_later(self, profile: Profile) -> None:
        """Resume again after the live link's back-off, while the cached fleet is still what is shown."""
        await asyncio.sleep(self.ctx.live.backoff.next())
        if self.ctx.rest.session is None and self.ctx.model.stale_since is not None:
            await self._resume(profile)
        else:
            self.ctx.live.backoff.reset()

    # ------------------------------------------------------------ dialogs

    def open_connection(self, message: str = "", selected: str | None = None) -> ConnectionDialog:
        if self.connection_dialog is not None:
            self.connection_dialog.show_error(message)
            self.connection_dialog.raise_()
            return self.connection_dialog
        current = self.ctx.signin.profile
        secrets = self.ctx.secrets
        dialog = ConnectionDialog(
            self.ctx.profiles.all(),
            selected=selected or (current.name if current else None) or self.ctx.profiles.last,
            keyring_ok=secrets.persistent,
            keyring_reason=secrets.unavailable_reason(),
            message=message,
            parent=self if self.isVisible() else None,
        )
        dialog.submitted.connect(
            lambda prof, secret, remember, session_only, code: self.ctx.aio.spawn(
                self._connect(dialog, prof, secret, remember, session_only, code), "sign-in"
            )
        )
        dialog.profile_deleted.connect(self._delete_profile)
        dialog.finished.connect(self._connection_closed)
        self.connection_dialog = dialog
        dialog.open()
        return dialog

    def _connection_closed(self) -> None:
        if self.connection_dialog is not None:
            self.connection_dialog.deleteLater()
        self.connection_dialog = None

    async def _connect(
        self,
        dialog: ConnectionDialog,
        profile: Profile,
        secret: str,
        remember: bool,
        session_only: bool,
        code: str = "",
    ) -> None:
        slot = self.cores.slot_for_url(normalize_url(profile.url))
        if slot is not None and slot != 0:
            # Two sessions to one core would show each of its nodes twice.
            dialog.show_error(
                f"{self.cores.name(slot)} is already in this window: File → Disconnect core first."
            )
            return
        try:
            session = await self.ctx.signin.sign_in(
                profile, secret, remember=remember, session_only=session_only, otp=code or None
            )
        except (CertificateUntrusted, CertificateChanged) as exc:
            # Nothing was sent to this core yet: trusting its certificate tries again with it pinned.
            dialog.show_error(exc.message)
            self.ask_trust(
                exc,
                profile,
                lambda: self.ctx.aio.spawn(
                    self._connect(dialog, profile, secret, remember, session_only, code), "sign-in"
                ),
                dialog,
            )
            return
        except CoreError as exc:
            if exc.kind == "otp_required":
                dialog.ask_code(exc.message)  # the password was right: now the second factor
            else:
                dialog.show_error(exc.message)
            return
        if self.ctx.signin.kept == Kept.SESSION:
            self.statusBar().showMessage("Signed in; your sign-in is kept until you quit.", 10000)
        dialog.accept()
        self.account.after_sign_in(
            must_change_password=session.must_change_password,
            totp_setup_required=session.totp_setup_required,
        )

    def ask_trust(
        self,
        problem: CertificateUntrusted | CertificateChanged,
        profile: Profile | None,
        then: Callable[[], object] | None = None,
        parent: QWidget | None = None,
    ) -> CertificateDialog:
        """Show a core's certificate (first use, or changed) and pin it for the profile if trusted."""
        if self.certificate_dialog is not None:
            self.certificate_dialog.reject()
        if isinstance(problem, CertificateChanged):
            dialog = CertificateDialog(
                problem.url, problem.presented, expected=problem.expected, parent=parent or self._parent()
            )
        else:
            dialog = CertificateDialog(
                problem.url, problem.fingerprint, reason=problem.reason, parent=parent or self._parent()
            )

        def trusted(fingerprint: str) -> None:
            self._declined.discard(fingerprint)
            if profile is not None:
                self.ctx.signin.trust(profile, fingerprint)
            if then is not None:
                then()

        def finished() -> None:
            if self.certificate_dialog is dialog:
                self.certificate_dialog = None
            if not dialog.result() and dialog.changed:
                self._declined.add(dialog.presented)
            dialog.deleteLater()

        dialog.trusted.connect(trusted)
        dialog.finished.connect(finished)
        self.certificate_dialog = dialog
        dialog.open()
        return dialog

    def _certificate_changed(self, problem: CertificateChanged) -> None:
        """The signed-in core now presents another certificate: the live link and polling are held
        off by the pin; say what it means, once per certificate, and let the user decide."""
        self.statusBar().showMessage(problem.message, 30000)
        if self.certificate_dialog is not None or problem.presented in self._declined:
            return
        self.ask_trust(problem, self.ctx.signin.profile, self.ctx.live.reconnect_now)

    def _parent(self) -> QWidget | None:
        if self.connection_dialog is not None:
            return self.connection_dialog
        return self if self.isVisible() else None

    def _delete_profile(self, name: str) -> None:
        profile = self.ctx.profiles.get(name)
        self.ctx.profiles.remove(name)
        if profile is not None:
            # A deleted profile leaves nothing behind: its sign-in nor this device's token.
            for key in (profile.secret_key, profile.device_key):
                self.ctx.aio.spawn(self.ctx.secrets.delete(key), "forget-profile-token")

    def open_settings(self) -> SettingsDialog:
        if self.settings_dialog is None:
            self.settings_dialog = SettingsDialog(self.ctx.settings, self)
        self.settings_dialog.show()
        self.settings_dialog.raise_()
        return self.settings_dialog

    async def open_signing_key(self) -> SigningKeyDialog:
        """The public key line to copy into agents' configs (the key is made on first use)."""
        key = self.ctx.signing
        await key.key()
        if self.signing_dialog is None:
            self.signing_dialog = SigningKeyDialog(key.public_line(), key.key_id(), key.kept, self)
        self.signing_dialog.show()
        self.signing_dialog.raise_()
        return self.signing_dialog

    def open_add_server(self) -> AddServerDialog | None:
        """The Add server dialog (admins): each request makes a new enrollment token and its lines."""
        session = self.ctx.rest.session
        if session is None or session.role != "admin":
            return None
        if self.add_server_dialog is None:
            dialog = AddServerDialog(self)
            dialog.requested.connect(
                lambda req: self.ctx.aio.spawn(self._install_command(dialog, req), "install-command")
            )
            self.add_server_dialog = dialog
        self.add_server_dialog.show()
        self.add_server_dialog.raise_()
        return self.add_server_dialog

    async def _install_command(self, dialog: AddServerDialog, req: InstallRequest) -> None:
        try:
            cmd = await self.ctx.rest.install_command(req.ttl, req.uses, req.core_url)
        except CoreError as exc:
            dialog.show_error(exc.message)
            return
        dialog.show_command(cmd)

    def sign_out(self) -> None:
        self.ctx.aio.spawn(self._sign_out(), "sign-out")

    async def _sign_out(self) -> None:
        await self.ctx.signin.sign_out()
        self.open_connection()

    # ------------------------------------------------------------ node views

    def open_node(self, key: int) -> NodeView:
        """The node's tab; key is a node key (models/merged.py): its core's id when alone."""
        view = self.node_views.get(key)
        if view is None:
            found = self.cores.context_of(key)
            ctx, node_id = found if found is not None else (self.ctx, key)
            view = NodeView(ctx, node_id)
            self.node_views[key] = view
            self.tabs.addTab(view, self.cores.fleet.display_name(key))
        self.tabs.setCurrentWidget(view)
        return view

    def _one_core(self, keys: list[int], what: str) -> tuple[AppContext, list[int]] | None:
        """The core of these node keys and their ids there; None (and a note why) when they span
        several cores, since a console or a comparison talks to one core's session."""
        ctx, ids = self.cores.on_one_core(keys)
        if ctx is None:
            self.statusBar().showMessage(
                f"{what} works on one core at a time: select nodes of one core.", 10000
            )
            return None
        return ctx, ids

    def open_compare(self, node_ids: list[int] | None = None) -> CompareView | None:
        """The Compare tab with node_ids (node keys, of any of the window's cores; default: the fleet
        table's selection) overlaid; each line's history is asked of its own core."""
        if not any(c.rest.session is not None for c in self.cores.contexts.values()):
            return None
        if node_ids is None:
            node_ids = self.fleet.selected_node_ids()
        if self.compare is None:
            self.compare = CompareView(self.ctx, node_ids, nodes=CoreSetNodes(self.cores))
            self.tabs.addTab(self.compare, "Compare")
        elif node_ids:
            self.compare.set_nodes(node_ids)
        self.tabs.setCurrentWidget(self.compare)
        return self.compare

    def open_console(self, node_ids: list[int] | None = None) -> ConsolePanel | None:
        """The console tab, targeting node_ids (node keys; default: the fleet table's selection)."""
        found = self._one_core(
            self.fleet.selected_node_ids() if node_ids is None else node_ids, "The console"
        )
        if found is None:
            return None
        ctx, node_ids = found
        session = ctx.rest.session
        if session is None or not session.can_edit:
            return None
        if self.console is not None and self.console.ctx is not ctx and node_ids:
            self._close_tab(self.tabs.indexOf(self.console))  # it ran on another core
        if self.console is None:
            self.console = ConsolePanel(ctx)
            self.console.message.connect(lambda text: self.statusBar().showMessage(text, 6000))
            self.tabs.addTab(self.console, "Console")
        if node_ids or not self.console.targets:
            self.console.set_targets(node_ids)
        self.tabs.setCurrentWidget(self.console)
        self.console.command.setFocus()
        return self.console

    def open_audit(self) -> AuditPanel | None:
        session = self.ctx.rest.session
        if session is None or not session.can_edit:
            return None
        if self.audit is None:
            self.audit = AuditPanel(self.ctx)
            self.tabs.addTab(self.audit, "Audit log")
        self.tabs.setCurrentWidget(self.audit)
        self.audit.refresh()
        return self.audit

    def open_alerting(self, page: str = "alerts") -> AlertingView | None:
        """The Alerting tab on one of its pages: alerts, rules, silences or channels."""
        if self.ctx.rest.session is None:
            return None
        if self.alerting is None:
            self.alerting = AlertingView(self.ctx)
            self.tabs.addTab(self.alerting, "Alerting")
        self.tabs.setCurrentWidget(self.alerting)
        self.alerting.show_page(page)
        return self.alerting

    def open_accounts(self, page: str = "users") -> AccountsView | None:
        """The Users tab on one of its pages: users, sessions (sessions and tokens) or enroll; those
        other than sessions are for admins."""
        session = self.ctx.rest.session
        if session is None:
            return None
        if self.accounts is None:
            self.accounts = AccountsView(self.ctx)
            self.tabs.addTab(self.accounts, "Users" if session.role == "admin" else "Sessions and tokens")
        self.tabs.setCurrentWidget(self.accounts)
        self.accounts.show_page(page)
        return self.accounts

    def _add_batch_view(self, view: BatchView) -> None:
        view.message.connect(lambda text: self.statusBar().showMessage(text, 6000))
        self.batch_views.append(view)
        what = describe(view.request)
        self.tabs.addTab(view, f"Batch: {what[:24]}…" if len(what) > 25 else f"Batch: {what}")
        self.tabs.setCurrentWidget(view)
        view.table.setFocus()

    def close_node(self, node_id: int) -> None:
        view = self.node_views.get(node_id)
        if view is not None:
            self._close_tab(self.tabs.indexOf(view))

    def _close_tab(self, index: int) -> None:
        view = self.tabs.widget(index)
        if isinstance(view, NodeView):
            self.tabs.removeTab(index)
            for key in [k for k, v in self.node_views.items() if v is view]:
                del self.node_views[key]
            view.shutdown()
            view.deleteLater()
        elif isinstance(view, BatchView):
            self.tabs.removeTab(index)
            self.batch_views.remove(view)
            view.shutdown()
            view.deleteLater()
        elif isinstance(
            view, ConsolePanel | AuditPanel | AlertingView | AccountsView | CompareView | MergedAlertsPanel
        ):
            self.tabs.removeTab(index)
            if view is self.console:
                self.console = None
            if view is self.audit:
                self.audit = None
            if view is self.alerting:
                self.alerting = None
            if view is self.accounts:
                self.accounts = None
            if view is self.compare:
                self.compare = None
            if view is self.core_menu.alerts_panel:
                self.core_menu.alerts_panel = None
            view.shutdown()
            view.deleteLater()

    # ------------------------------------------------------------ status

    def _link_changed(self, state: str, detail: str) -> None:
        link = LinkState(state)
        text = LINK_TEXT[link]
        live = self.ctx.live
        if link == LinkState.CONNECTED and live.latency_ms is not None:
            ms = live.latency_ms
            text += f" · {ms:.0f} ms" if ms >= 1 else " · <1 ms"
        elif link == LinkState.POLLING:
            text = f"Polling every {live.poll_interval:g} s"
        self.link_label.setText(text)
        self.link_icon.setPixmap(
            icon(f"link-{'idle' if link == LinkState.CONNECTING else link.value}").pixmap(14, 14)
        )
        if detail:
            self.link_label.setToolTip(detail)
            self.link_icon.setToolTip(detail)
        self.retry_button.setVisible(link in (LinkState.RECONNECTING, LinkState.POLLING, LinkState.OFFLINE))
        session = self.ctx.rest.session
        self.tray_state.set_link(state, detail, session.url if session is not None else "")

    def acknowledge_alert(self, alert_id: int) -> None:
        self.ctx.aio.spawn(self._acknowledge(alert_id), "alert-ack")

    async def _acknowledge(self, alert_id: int) -> None:
        found = self.cores.context_of(alert_id)  # the tray's alert ids are keys of (core, id)
        if found is None:
            return
        ctx, raw_id = found
        try:
            alert = await ctx.rest.ack_alert(raw_id)
        except CoreError as exc:
            self.statusBar().showMessage(f"Could not acknowledge the alert: {exc.message}", 10000)
            return
        ctx.model.alert_changed(alert)
        self.cores.alert_event(self.cores.slot_of(ctx) or 0, alert)  # the tray and the merged list
        self.statusBar().showMessage(f"Acknowledged: {alert.rule} on {alert.node}", 6000)

    def snooze_alert(self, alert: Alert, seconds: float) -> None:
        """Silence this alert's rule on this node for a while (the tray's Snooze)."""
        self.ctx.aio.spawn(self._snooze(alert, seconds), "alert-snooze")

    async def _snooze(self, alert: Alert, seconds: float) -> None:
        found = self.cores.context_of(alert.id)  # the tray's alert ids are keys of (core, id)
        if found is None:
            return
        ctx = found[0]
        body = m.SilenceCreate(
            rule=alert.rule_id,
            node=alert.node_id,
            duration=seconds,
            comment=f"Snoozed for {fmt_duration(seconds)} from the tray",
        )
        try:
            await ctx.rest.create_silence(body)
        except CoreError as exc:
            self.statusBar().showMessage(f"Could not snooze the alert: {exc.message}", 10000)
            return
        self.statusBar().showMessage(
            f"Snoozed for {fmt_duration(seconds)}: {alert.rule} on {alert.node}", 6000
        )

    def _latency_changed(self, _ms: object) -> None:
        self._link_changed(self.ctx.live.state.value, "")

    def _needs_login(self, message: str) -> None:
        self.open_connection(message)

    def _warning(self, text: str) -> None:
        self.statusBar().showMessage(text, 15000)

    def _firing_changed(self) -> None:
        self.tray_state.set_alerts(self.cores.all_firing())

    def _counts_changed(self, up: int, down: int) -> None:
        self.counts_label.setText(f"{up} online · {down} offline" if up + down else "")
        self.tray_state.set_counts(up, down)

    def _session_changed(self, session: Session | None) -> None:
        self.signout_action.setEnabled(session is not None)
        self.alerts_action.setEnabled(session is not None)
        operator = session is not None and session.can_edit
        hint = "" if operator or session is None else " (needs the operator role)"
        self.console_action.setEnabled(operator)
        tip_with_key(self.console_action, "Run a command on the nodes selected in the fleet table" + hint)
        self.audit_action.setEnabled(operator)
        tip_with_key(self.audit_action, "Who did what, when" + hint)
        admin = session is not None and session.role == "admin"
        self.users_action.setVisible(admin)
        self.users_action.setEnabled(admin)
        self.add_server_action.setVisible(admin)
        self.add_server_action.setEnabled(admin)
        if not admin and self.add_server_dialog is not None:
            self.add_server_dialog.close()  # it may show a token: not for the next one at this desk
        self.account_menu.setEnabled(session is not None)
        self.batch.set_can_edit(operator)
        if self.accounts is not None and session is None:
            self._close_tab(self.tabs.indexOf(self.accounts))
        if session is None:
            self.ctx.model.set_alerts([])
            self.user_label.setText("")
            self.setWindowTitle("Server Manager")
            return
        urls = [v.core_url for v in self._own_views()]
        if self.compare is not None and self.compare.ctx is self.ctx:
            urls.append(self.compare.core_url)
        if any(url != session.url for url in urls):
            self._signed_out()  # node ids are per core: another core's node 3 is another machine
        profile = self.ctx.signin.profile
        where = profile.name if profile else session.url
        self.user_label.setText(f"{session.user} ({session.role})")
        self.setWindowTitle(f"Server Manager — {where}")

    def _own_views(self) -> list[NodeView]:
        """The node views of the window's first core (the one Sign out and Connect… change)."""
        return [v for v in self.node_views.values() if v.ctx is self.ctx]

    def close_core_views(self, ctx: AppContext, slot: int | None = None) -> None:
        """Close every tab that shows one core's nodes (its node views, its console) and take its
        nodes (at `slot`) out of the comparison."""
        for view in [v for v in self.node_views.values() if v.ctx is ctx]:
            self._close_tab(self.tabs.indexOf(view))
        if self.console is not None and self.console.ctx is ctx:
            self._close_tab(self.tabs.indexOf(self.console))
        if self.compare is not None and slot is not None:
            # The comparison goes on with the other cores' nodes.
            for key in [k for k in self.compare.node_ids if split_key(k)[0] == slot]:
                self.compare.remove_node(key)

    def _signed_out(self) -> None:
        for view in self._own_views():
            self._close_tab(self.tabs.indexOf(view))
        if self.compare is not None and self.compare.ctx is self.ctx:
            self._close_tab(self.tabs.indexOf(self.compare))

    def _setting_changed(self, key: str, value: object) -> None:
        if key == "notifications":
            self.tray_state.set_enabled(bool(value))
        elif key == "core_unreachable_after" and isinstance(value, int):
            self.tray_state.set_unreachable_after(value)

    # ------------------------------------------------------------ window life

    def show_normal(self) -> None:
        self.show()
        self.setWindowState(self.windowState() & ~Qt.WindowState.WindowMinimized)
        self.raise_()
        self.activateWindow()

    def restore_state(self) -> None:
        geometry, state = self.ctx.window_state.load()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    def save_state(self) -> None:
        self.ctx.window_state.save(self.saveGeometry(), self.saveState())

    def request_quit(self) -> None:
        self._quitting = True
        self.save_state()
        self.tray.hide()
        self.quit_requested.emit()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_state()
        if not self._quitting and self.tray.available:
            # With a tray, closing hides: the app keeps watching the fleet.
            event.ignore()
            self.hide()
            if not self._told_about_tray:
                self._told_about_tray = True
                self.tray.show_message("Server Manager is still running", "It keeps watching from the tray.")
            return
        event.accept()
        if not self._quitting:
            self.request_quit()
