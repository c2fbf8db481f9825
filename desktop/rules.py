"""Alert rules: the list of the core's rules, and the rule editor with its metric picker and "what would it have done" preview."""

from __future__ import annotations

import asyncio

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

from servermanager.common import protocol as p
from servermanager.common import rest as m
from servermanager.common.alerts import OFFLINE
from servermanager.common.itemmetrics import CONTAINER_PREFIX, GPU_PREFIX, ITEM_METRICS
from servermanager.common.metrics import FIELDS
from servermanager.common.series import SERIES_PREFIX, format_selector
from servermanager.common.settings import parse_duration
from servermanager.desktop.context import AppContext
from servermanager.desktop.format import fmt_duration, fmt_time, format_metric
from servermanager.desktop.listpanel import ListPanel
from servermanager.desktop.models.records import RecordsModel
from servermanager.desktop.net.errors import CoreError
from servermanager.desktop.net.rest import RestClient
from servermanager.desktop.widgets import FormDialog

Index = QModelIndex | QPersistentModelIndex
OPERATOR_HINT = "Creating and editing rules needs the operator role."
TARGET_KINDS = (("all", "Every node"), ("group", "A group"), ("tag", "A tag"), ("nodes", "Node ids"))
# The picker asks about at most this many nodes (a few calls each): a big fleet's first ones say
# what kinds of series there are; any other selector can be typed.
PICKER_NODES = 50
METRIC_HINT = (
    'The metric the rule watches. Pick one, or type a selector: series:NAME{label="value"} for an '
    'agent\'s custom metric or check, dev:, container: or gpu: NAME{label="value"} for a device, '
    "container or GPU; leave a label out to watch every one (the rule judges the worst)."
)


async def fleet_metrics(rest: RestClient) -> list[tuple[str, str]]:
    """What the fleet has to alert on beyond the metric table, as (metric, description): each node's
    named and device series (the REST listings), its containers' and GPUs' values; sorted."""
    nodes = sorted(await rest.nodes(), key=lambda n: n.id)[:PICKER_NODES]
    seen: dict[str, tuple[str, list[str]]] = {}  # metric -> its unit, the nodes that have it

    def add(metric: str, unit: str, node: str) -> None:
        seen.setdefault(metric, (unit, []))[1].append(node)

    async def one(node: p.NodeInfo) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        try:
            found += [(SERIES_PREFIX + s.selector, s.unit or "") for s in (await rest.series(node.id)).series]
            found += [(s.selector, s.unit or "") for s in (await rest.series(node.id, "device")).series]
            containers = (await rest.containers(node.id)).containers if node.containers is not None else []
        except CoreError as exc:
            if exc.status != 404:
                raise
            return []  # deleted since the list: nothing to offer of it
        for c in containers:
            found += [
                (format_selector(im.name, {"name": c.name}), im.unit)
                for im in ITEM_METRICS
                if im.name.startswith(CONTAINER_PREFIX)
            ]
        for g in node.hardware.gpus if node.hardware is not None else ():
            found += [
                (format_selector(im.name, {"index": str(g.index)}), im.unit)
                for im in ITEM_METRICS
                if im.name.startswith(GPU_PREFIX)
            ]
        return found

    for node, found in zip(nodes, await asyncio.gather(*(one(n) for n in nodes)), strict=True):
        for metric, unit in found:
            add(metric, unit, node.name)
    out = []
    for metric, (unit, names) in sorted(seen.items()):
        where = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
        out.append((metric, f"{metric}  ({unit + ', ' if unit else ''}on {where})"))
    return out


def targets_text(t: m.Targets) -> str:
    if t.all:
        return "every node"
    if t.group is not None:
        return f"group {t.group}"
    if t.tag is not None:
        return f"tag {t.tag}"
    return "nodes " + ", ".join(str(n) for n in t.nodes or [])


def condition_text(r: m.Rule) -> str:
    if r.metric == OFFLINE:
        return f"offline for {fmt_duration(r.for_)}"

    def fmt(v: float) -> str:
        return format_metric(r.metric, v)

    text = f"{r.metric} {r.op} {fmt(r.threshold)}"
    if r.critical_threshold is not None:
        text += f" (critical {r.op} {fmt(r.critical_threshold)})"
    return text + (f" for {fmt_duration(r.for_)}" if r.for_ else "")


class RulesModel(RecordsModel[m.Rule]):
    columns = (
        ("Name", lambda r: r.name),
        ("Condition", condition_text),
        ("Severity", lambda r: r.severity if r.critical_threshold is None else "warning, critical"),
        ("Targets", lambda r: targets_text(r.targets)),
        ("Channels", lambda r: str(len(r.channels))),
        ("Enabled", lambda r: "yes" if r.enabled else "no"),
    )


class RuleDialog(FormDialog):
    """A dumb form for one rule: it emits what to save (m.RuleCreate) or preview, and shows what it is told."""

    preview_requested = Signal(object, str)  # m.RuleCreate, "24h" | "7d"

    def __init__(
        self, channels: list[m.Channel], rule: m.Rule | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(f"Edit rule {rule.name}" if rule is not None else "New alert rule", parent)
        self.rule_id = rule.id if rule is not None else None
        self.name = QLineEdit(rule.name if rule else "")
        # The picker fills the metric line; the line is what is saved, so a label matcher can be typed.
        self.metric_box = QComboBox()
        self.metric_box.setMaxVisibleItems(20)
        for f in FIELDS:
            self.metric_box.addItem(f"{f.label} ({f.name})", f.name)
        self.metric_box.addItem("Node offline (offline)", OFFLINE)
        self.metric_box.insertSeparator(self.metric_box.count())
        for im in ITEM_METRICS:
            self.metric_box.addItem(f"{im.name}: {im.help} (every {im.label}: the worst)", im.name)
        self.selector = QLineEdit()
        self.selector.setPlaceholderText('dev:disk_pct{mount="/"}')
        self.selector.setToolTip(METRIC_HINT)
        self.metric_box.setToolTip(METRIC_HINT)
        self.op = QComboBox()
        self.op.addItems([">", "<"])
        self.threshold = self._number()
        self.clear_threshold = QLineEdit()
        self.clear_threshold.setPlaceholderText("the threshold (no hysteresis)")
        self.critical_threshold = QLineEdit()
        self.critical_threshold.setPlaceholderText("none: one severity")
        self.for_ = QLineEdit("0s")
        self.keep_firing_for = QLineEdit("0s")
        self.severity = QComboBox()
        self.severity.addItems(["warning", "critical"])
        self.target_kind = QComboBox()
        for key, label in TARGET_KINDS:
            self.target_kind.addItem(label, key)
        self.target_value = QLineEdit()
        self.target_value.setPlaceholderText("group, tag, or node ids separated by commas")
        self.channels = QListWidget()
        self.channels.setMaximumHeight(90)
        for ch in channels:
            item = QListWidgetItem(f"{ch.name} ({ch.kind})")
            item.setData(Qt.ItemDataRole.UserRole, ch.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(
                Qt.CheckState.Checked if rule and ch.id in rule.channels else Qt.CheckState.Unchecked
            )
            self.channels.addItem(item)
        self.enabled = QCheckBox("Enabled")
        self.enabled.setChecked(rule.enabled if rule else True)
        self.selector.setText(str(self.metric_box.currentData()))
        self.fleet_listed = False  # the fleet's own metrics were asked for (added, or could not be)
        if rule is not None:
            self._load(rule)
        self.metric_box.currentIndexChanged.connect(lambda _i: self._metric_picked())
        self.selector.textChanged.connect(lambda _t: self._metric_changed())
        self._metric_changed()

        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Metric", self.metric_box)
        form.addRow("Selector", self.selector)
        row = QHBoxLayout()
        row.addWidget(self.op)
        row.addWidget(self.threshold, 1)
        form.addRow("Fires when", row)
        form.addRow("Clears past", self.clear_threshold)
        form.addRow("Critical past", self.critical_threshold)
        form.addRow("For at least", self.for_)
        form.addRow("Keep firing for", self.keep_firing_for)
        form.addRow("Severity", self.severity)
        targets = QHBoxLayout()
        targets.addWidget(self.target_kind)
        targets.addWidget(self.target_value, 1)
        form.addRow("Targets", targets)
        form.addRow("Notify", self.channels if channels else QLabel("No channels yet (an admin adds them)."))
        form.addRow("", self.enabled)

        self.preview_24h = QPushButton("Preview last 24 h")
        self.preview_7d = QPushButton("Preview last 7 d")
        self.preview_24h.clicked.connect(lambda: self._preview("24h"))
        self.preview_7d.clicked.connect(lambda: self._preview("7d"))
        preview_bar = QHBoxLayout()
        preview_bar.addWidget(self.preview_24h)
        preview_bar.addWidget(self.preview_7d)
        preview_bar.addStretch(1)
        self.preview = QPlainTextEdit()
        self.preview.setReadOnly(True)
        self.preview.setMaximumHeight(120)
        self.preview.setPlaceholderText("How often this rule would have fired over the stored history.")
        self.lay_out(preview_bar, self.preview, form)

    @staticmethod
    def _number() -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(-1e15, 1e15)
        box.setDecimals(2)
        return box

    def _load(self, r: m.Rule) -> None:
        self.metric_box.setCurrentIndex(self.metric_box.findData(r.metric))
        self.selector.setText(r.metric)
        self.op.setCurrentText(r.op)
        self.threshold.setValue(r.threshold)
        self.clear_threshold.setText("" if r.clear_threshold is None else f"{r.clear_threshold:g}")
        self.critical_threshold.setText("" if r.critical_threshold is None else f"{r.critical_threshold:g}")
        self.for_.setText(f"{r.for_:g}s")
        self.keep_firing_for.setText(f"{r.keep_firing_for:g}s")
        self.severity.setCurrentText(r.severity)
        t = r.targets
        kind, value = (
            ("all", "")
            if t.all
            else ("group", t.group or "")
            if t.group is not None
            else ("tag", t.tag or "")
            if t.tag is not None
            else ("nodes", ", ".join(str(n) for n in t.nodes or []))
        )
        self.target_kind.setCurrentIndex(self.target_kind.findData(kind))
        self.target_value.setText(value)

    def add_metrics(self, entries: list[tuple[str, str]]) -> None:
        """Offer the fleet's own metrics (fleet_metrics) after the fixed ones; the typed selector stays."""
        self.metric_box.blockSignals(True)
        try:
            if entries:
                self.metric_box.insertSeparator(self.metric_box.count())
            for metric, text in entries:
                if self.metric_box.findData(metric) < 0:
                    self.metric_box.addItem(text, metric)
            self.metric_box.setCurrentIndex(self.metric_box.findData(self.selector.text().strip()))
        finally:
            self.metric_box.blockSignals(False)
        self.fleet_listed = True

    def _metric_picked(self) -> None:
        picked = self.metric_box.currentData()
        if picked is not None:
            self.selector.setText(str(picked))

    def _metric_changed(self) -> None:
        offline = self.selector.text().strip() == OFFLINE
        for w in (self.op, self.threshold, self.clear_threshold, self.critical_threshold):
            w.setEnabled(not offline)

    def body(self) -> m.RuleCreate:
        """The form as a rule; ValueError names the field that is wrong."""

        def optional_number(edit: QLineEdit, what: str) -> float | None:
            text = edit.text().strip()
            if not text:
                return None
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{what}: not a number: {text!r}") from None

        def duration(edit: QLineEdit, what: str) -> float:
            try:
                return parse_duration(edit.text().strip() or "0")
            except ValueError as exc:
                raise ValueError(f"{what}: {exc}") from None

        name = self.name.text().strip()
        if not name:
            raise ValueError("A rule needs a name.")
        metric = self.selector.text().strip()
        if not metric:
            raise ValueError("Pick a metric, or type a selector.")
        kind, value = self.target_kind.currentData(), self.target_value.text().strip()
        if kind == "all":
            targets = m.Targets(all=True)
        elif not value:
            raise ValueError("Say which group, tag or nodes the rule is for.")
        elif kind == "group":
            targets = m.Targets(group=value)
        elif kind == "tag":
            targets = m.Targets(tag=value)
        else:
            try:
                targets = m.Targets(nodes=[int(v) for v in value.replace(" ", "").split(",") if v])
            except ValueError:
                raise ValueError("Node ids are numbers separated by commas.") from None
        channels = [
            int(self.channels.item(i).data(Qt.ItemDataRole.UserRole))
            for i in range(self.channels.count())
            if self.channels.item(i).checkState() == Qt.CheckState.Checked
        ]
        return m.RuleCreate(
            name=name,
            metric=metric,
            op=">" if self.op.currentText() == ">" else "<",
            threshold=self.threshold.value(),
            clear_threshold=optional_number(self.clear_threshold, "Clears past"),
            critical_threshold=optional_number(self.critical_threshold, "Critical past"),
            for_=duration(self.for_, "For at least"),
            keep_firing_for=duration(self.keep_firing_for, "Keep firing for"),
            severity="critical" if self.severity.currentText() == "critical" else "warning",
            targets=targets,
            channels=channels,
            enabled=self.enabled.isChecked(),
        )

    def _preview(self, span: str) -> None:
        try:
            rule = self.body()
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.show_error("")
        self.preview.setPlainText("Replaying the stored history…")
        self.preview_requested.emit(rule, span)

    def show_preview(self, result: m.RulePreview, nodes: dict[int, str] | None = None) -> None:
        span = fmt_duration(result.to - result.from_)
        if not result.fired:
            self.preview.setPlainText(f"Over the last {span} this rule would not have fired.")
            return
        lines = [f"Over the last {span} this rule would have fired {result.fired} time(s):"]
        for a in result.alerts:
            end = f" until {fmt_time(a.resolved_at)}" if a.resolved_at else ", still firing"
            lines.append(f"  {a.node}: from {fmt_time(a.fired_at)}{end}")
        self.preview.setPlainText("\n".join(lines))


class RulesPanel(ListPanel[m.Rule]):
    """The Rules tab: every role sees the rules; operators and admins create, edit and delete them."""

    noun = "rule"
    denied_hint = OPERATOR_HINT

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, RulesModel(), parent)
        self.model.setParent(self)
        self.dialog: RuleDialog | None = None
        self.channels: list[m.Channel] = []
        self.add_button("New rule…", lambda: self.open_editor(None), needs_selection=False)
        self.edit_button = self.add_button("Edit…", lambda: self.open_editor(self.selected()))
        self.delete_button = self.add_button("Delete", self.delete_selected)
        self.table.doubleClicked.connect(lambda _i: self.open_editor(self.selected()))
        self.finish_bar()

    async def fetch(self) -> list[m.Rule]:
        rules = await self.ctx.rest.rules()
        self.channels = await self.ctx.rest.channels()  # what the editor offers to notify
        return rules

    def open_editor(self, rule: m.Rule | None) -> RuleDialog | None:
        if not self.can_edit:
            return None
        dialog = RuleDialog(self.channels, rule, self)
        self.ctx.aio.spawn(self._offer_metrics(dialog), "rule-metrics")
        dialog.submitted.connect(lambda body: self.ctx.aio.spawn(self._save(dialog, body), "rule-save"))
        dialog.preview_requested.connect(
            lambda body, span: self.ctx.aio.spawn(self._preview(dialog, body, span), "rule-preview")
        )
        self.dialog = dialog
        dialog.show()
        return dialog

    async def _offer_metrics(self, dialog: RuleDialog) -> None:
        try:
            entries = await fleet_metrics(self.ctx.rest)
        except CoreError as exc:
            # The fixed entries and a typed selector still work; say why the fleet's are missing.
            dialog.metric_box.setToolTip(
                f"{METRIC_HINT}\n\nThe fleet's series could not be listed: {exc.message}"
            )
            return
        dialog.add_metrics(entries)

    async def _save(self, dialog: RuleDialog, body: m.RuleCreate) -> None:
        try:
            if dialog.rule_id is None:
                await self.ctx.rest.create_rule(body)
            else:
                await self.ctx.rest.update_rule(dialog.rule_id, body)
        except CoreError as exc:
            dialog.show_error(exc.message)
            return
        dialog.accept()
        await self._load()

    async def _preview(self, dialog: RuleDialog, body: m.RuleCreate, span: str) -> None:
        try:
            result = await self.ctx.rest.preview_rule(body, span)
        except CoreError as exc:
            dialog.preview.setPlainText(f"Could not preview: {exc.message}")
            return
        dialog.show_preview(result)

    def delete_selected(self) -> None:
        rule = self.selected()
        if rule is not None and self.can_edit:
            self.act("delete the rule", lambda: self.ctx.rest.delete_rule(rule.id))

    def shutdown(self) -> None:
        super().shutdown()
        if self.dialog is not None:
            self.dialog.close()
