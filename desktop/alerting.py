"""The Alerting tab: alerts, rules, silences and channels, one page each."""

from __future__ import annotations

from PySide6.QtWidgets import QTabWidget, QWidget

from servermanager.desktop.alerts import AlertsPanel
from servermanager.desktop.channels import ChannelsPanel
from servermanager.desktop.context import AppContext
from servermanager.desktop.rules import RulesPanel
from servermanager.desktop.silences import SilencesPanel


class AlertingView(QTabWidget):
    """Each page loads when first shown and again on its own Refresh."""

    PAGES = ("alerts", "rules", "silences", "channels")

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.alerts = AlertsPanel(ctx)
        self.rules = RulesPanel(ctx)
        self.silences = SilencesPanel(ctx)
        self.channels = ChannelsPanel(ctx)
        self.addTab(self.alerts, "Alerts")
        self.addTab(self.rules, "Rules")
        self.addTab(self.silences, "Silences")
        self.addTab(self.channels, "Channels")
        self._loaded: set[int] = set()
        self.currentChanged.connect(self._shown)

    def show_page(self, page: str) -> None:
        index = self.PAGES.index(page)
        if self.currentIndex() == index:
            self._shown(index)
        else:
            self.setCurrentIndex(index)

    def _shown(self, index: int) -> None:
        if index not in self._loaded:
            self._loaded.add(index)
            panel = self.widget(index)
            refresh = getattr(panel, "refresh", None)
            if refresh is not None:
                refresh()

    def shutdown(self) -> None:
        for panel in (self.alerts, self.rules, self.silences, self.channels):
            panel.shutdown()
