"""Several cores in one window, against two real in-process cores: one merged fleet, node keys, a core going down, merged alerts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QItemSelectionModel, QSettings, Qt
from PySide6.QtWidgets import QApplication

from devkit.cores import RunningCore
from servermanager.common.alerts import Alert
from servermanager.desktop.context import AppContext
from servermanager.desktop.corealerts import CoreAlert, MergedAlertsModel
from servermanager.desktop.cores import SIGNED_OUT, UNREACHABLE
from servermanager.desktop.fleetcache import FleetCache
from servermanager.desktop.models.fleet import CoreRole, NodeIdRole, OnlineRole, SortRole
from servermanager.desktop.models.merged import node_key, split_key
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.settings import Profile
from servermanager.desktop.tray import Level, TrayState
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import (
    Cores,
    MemoryKeyring,
    Run,
    admin_password,
    enrolled,
    make_ctx,
    profile_for,
    sign_in,
    until,
)
from tests.desktop.test_console import answer
from tests.desktop.test_tls import fingerprint_text, rekey


@pytest.fixture
def other(run: Run, tmp_path: Path) -> Iterator[Cores]:
    """A second core, with its own data dir: its node ids start at 1 too."""
    box = Cores(tmp_path / "core-b")
    run(box.start())
    try:
        yield box
    finally:
        run(box.stop())


@pytest.fixture
def two(window: MainWindow, other: Cores, run: Run) -> Iterator[MainWindow]:
    """The window, whose other cores are closed before the second core stops."""
    try:
        yield window
    finally:
        run(window.cores.close())


def profile_b(core: RunningCore) -> Profile:
    return profile_for(core, name="Site B")


async def connect_b(window: MainWindow, core: RunningCore) -> AppContext:
    """File → Connect another core…, signed in as admin on core B, live."""
    dialog = window.core_menu.open_dialog()
    ctx = await window.core_menu.connect_core(dialog, profile_b(core), admin_password(core))
    assert ctx is not None, dialog.error.text()
    await until(lambda: ctx.live.state == LinkState.CONNECTED, "core B's live socket")
    return ctx


def rows(window: MainWindow) -> list[tuple[str, str]]:
    """(core, name) of every row the fleet table shows, sorted."""
    proxy = window.fleet.proxy
    fleet = window.cores.fleet
    core, name = fleet.column("core"), fleet.column("name")
    return sorted((proxy.index(r, core).data(), proxy.index(r, name).data()) for r in range(proxy.rowCount()))


def merged_cell(window: MainWindow, key: int, column: str, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
    fleet = window.cores.fleet
    row = fleet.row_of(key)
    assert row is not None, f"node key {key} is not in the table"
    return fleet.index(row, fleet.column(column)).data(role)


def test_two_fleets_merge_with_a_core_column_and_a_core_filter(
    two: MainWindow,
    ctx: AppContext,
    core: RunningCore,
    other: Cores,
    run: Run,
    keyring_backend: MemoryKeyring,
    settings_file: Path,
    qtmodeltester: Any,
) -> None:
    window = two
    a_web = run(enrolled(core, "web-1"))
    run(enrolled(core, "db-1"))
    b_web = run(enrolled(other.c, "web-1"))
    run(enrolled(other.c, "cache-1"))
    run(sign_in(ctx, core))
    fleet = window.cores.fleet
    table = window.fleet.table
    # One core: the table is what it always was.
    assert table.isColumnHidden(fleet.column("core"))
    assert window.fleet.core_filter.isHidden()
    assert not window.core_menu.disconnect_menu.isEnabled()

    ctx_b = run(connect_b(window, other.c))
    run(until(lambda: fleet.rowCount() == 4, "both fleets in the table"))
    qtmodeltester.check(fleet)  # stays attached: the rest of the test is checked as it happens
    qtmodeltester.check(window.fleet.proxy)  # and the filter over it, the core filter included
    assert not table.isColumnHidden(fleet.column("core"))
    assert table.horizontalHeader().visualIndex(fleet.column("core")) == 0  # read first
    assert rows(window) == [
        ("Site B", "cache-1"),
        ("Site B", "web-1"),
        ("Test core", "db-1"),
        ("Test core", "web-1"),
    ]
    assert window.cores.name(0) == "Test core"
    assert window.core_menu.disconnect_menu.isEnabled()
    assert [a.text() for a in window.core_menu.disconnect_menu.actions()] == ["Site B"]
    assert fleet.counts() == (4, 0) and window.counts_label.text() == "4 online · 0 offline"

    # Filter by core.
    combo = window.fleet.core_filter
    assert not combo.isHidden()
    assert [combo.itemText(i) for i in range(combo.count())] == ["All cores", "Test core", "Site B"]
    combo.setCurrentText("Site B")
    assert rows(window) == [("Site B", "cache-1"), ("Site B", "web-1")]
    window.fleet.search.setText("web")  # the other filters still apply within the core
    assert rows(window) == [("Site B", "web-1")]
    window.fleet.search.setText("")
    combo.setCurrentIndex(0)
    assert len(rows(window)) == 4

    # Both cores numbered their first node 1: two machines, two keys.
    assert a_web.node_id == b_web.node_id == 1
    key_a, key_b = node_key(0, 1), node_key(1, 1)
    assert key_a == 1 and split_key(key_b) == (1, 1)
    assert {window.fleet.proxy.index(r, 0).data(NodeIdRole) for r in range(4)} >= {key_a, key_b}
    assert merged_cell(window, key_b, "status", CoreRole) == 1
    assert fleet.display_name(key_a) == "web-1 · Test core" and fleet.display_name(key_b) == "web-1 · Site B"

    # Live updates reach the right row of the right core.
    run(b_web.send_samples(b_web.make(1, cpu=61.0)))
    run(until(lambda: merged_cell(window, key_b, "cpu_pct", SortRole) == 61.0, "core B's sample"))
    assert merged_cell(window, key_a, "cpu_pct", SortRole) == 10.0

    # A node of core B going offline is notified with its core's name.
    run(b_web.close())
    run(
        until(
            lambda: any("web-1 · Site B" in f"{t} {m}" for t, m in window.tray_state.sent),
            "the tray's notification",
        )
    )
    assert fleet.counts() == (3, 1)

    # Which cores are open is remembered by name; the token is in the keyring, never in the settings.
    assert ctx.profiles.also_open == ["Site B"]
    assert ctx.profiles.last == "Test core"  # the first core stays the one the app opens on
    kept = keyring_backend.items.get(("servermanager", profile_b(other.c).secret_key))
    assert kept
    ctx.store_sync()
    assert kept not in settings_file.read_text()
    assert (
        ctx_b.rest.session is not None and ctx_b.rest.session.refresh_token not in settings_file.read_text()
    )


def test_each_node_view_opens_on_its_own_core(
    two: MainWindow, ctx: AppContext, core: RunningCore, other: Cores, run: Run
) -> None:
    window = two
    a_web = run(enrolled(core, "web-1", cpu=11.0))
    b_web = run(enrolled(other.c, "web-1", cpu=22.0))
    assert a_web.node_id == b_web.node_id == 1
    run(sign_in(ctx, core))
    ctx_b = run(connect_b(window, other.c))
    run(until(lambda: window.cores.fleet.rowCount() == 2, "both nodes"))

    # Both via the fleet table: select the row and press Enter, as a user does.
    views = {}
    for key in (node_key(0, 1), node_key(1, 1)):
        row = next(
            r
            for r in range(window.fleet.proxy.rowCount())
            if window.fleet.proxy.index(r, 0).data(NodeIdRole) == key
        )
        window.fleet.table.selectRow(row)
        window.fleet._double_clicked(window.fleet.table.currentIndex())
        views[key] = window.node_views[key]
    view_a, view_b = views[node_key(0, 1)], views[node_key(1, 1)]
    assert view_a is not view_b
    assert view_a.ctx is ctx and view_b.ctx is ctx_b
    assert view_a.node_id == view_b.node_id == 1
    assert view_a.core_url == core.url and view_b.core_url == other.c.url
    titles = {window.tabs.tabText(window.tabs.indexOf(v)) for v in (view_a, view_b)}
    assert titles == {"web-1 · Test core", "web-1 · Site B"}
    # Each shows its own core's reading of "its" node 1.
    run(until(lambda: view_a.meters["cpu_pct"].pct == 11.0, "core A's CPU in its node view"))
    run(until(lambda: view_b.meters["cpu_pct"].pct == 22.0, "core B's CPU in its node view"))
    run(b_web.send_samples(b_web.make(2, cpu=33.0)))
    run(until(lambda: view_b.meters["cpu_pct"].pct == 33.0, "core B's live sample"))
    assert view_a.meters["cpu_pct"].pct == 11.0
    run(until(lambda: view_b.history_loads >= 1 and view_a.history_loads >= 1, "each view's history"))

    # The palette lists both, apart.
    entries = {e.text: e.key for e in window.palette_entries() if e.kind == "Node"}
    assert entries == {
        "Open node web-1 · Test core": f"node:{node_key(0, 1)}",
        "Open node web-1 · Site B": f"node:{node_key(1, 1)}",
    }
    window.close_node(node_key(1, 1))
    window.run_palette_entry(f"node:{node_key(1, 1)}")  # Ctrl+K, "web-1 · Site B", Enter
    assert window.node_views[node_key(1, 1)].ctx is ctx_b

    # Compare overlays both node 1s, each line from its own core, live.
    compare = window.open_compare([node_key(0, 1), node_key(1, 1)])
    assert compare is not None
    run(until(lambda: compare.history_loads >= 1, "both histories"))
    assert set(compare.chart.lines) == {node_key(0, 1), node_key(1, 1)}
    names = [compare.node_list.item(i).text() for i in range(compare.node_list.count())]
    assert sorted(names) == ["web-1 · Site B", "web-1 · Test core"]
    run(b_web.send_samples(b_web.make(3, cpu=44.0)))
    run(until(lambda: 44.0 in list(compare.chart.data(node_key(1, 1))[1]), "core B's live point in its line"))
    assert 44.0 not in list(compare.chart.data(node_key(0, 1))[1])

    # A console talks to one core: a selection across both is refused, with a note.
    assert window.open_console([node_key(0, 1), node_key(1, 1)]) is None
    assert "one core at a time" in window.statusBar().currentMessage()
    console = window.open_console([node_key(1, 1)])
    assert console is not None and console.ctx is ctx_b and console.targets == [1]

    # Disconnecting core B closes its tabs, takes its line out of the comparison and signs out of it;
    # core A's stay, and a filter on core B gives way to every core.
    window.fleet.core_filter.setCurrentText("Site B")
    assert window.fleet.proxy.rowCount() == 1
    assert "Disconnect core Site B" in [e.text for e in window.palette_entries()]
    window.run_palette_entry("disconnect:1")  # Ctrl+K, "disconnect", Enter
    run(until(lambda: window.cores.fleet.rowCount() == 1, "core B's rows gone"))
    assert window.fleet.proxy.rowCount() == 1 and window.fleet.core_filter.currentData() is None
    run(until(lambda: ctx_b.rest.session is None, "signed out of core B"))
    assert list(window.node_views) == [node_key(0, 1)]
    assert window.console is None
    assert window.compare is compare and compare.node_ids == [node_key(0, 1)]
    assert set(compare.chart.lines) == {node_key(0, 1)}
    assert ctx.profiles.also_open == []
    assert window.fleet.core_filter.isHidden()


def test_one_core_down_degrades_only_its_rows(
    two: MainWindow, ctx: AppContext, core: RunningCore, other: Cores, run: Run
) -> None:
    window = two
    a_web = run(enrolled(core, "web-1"))
    run(enrolled(other.c, "web-1"))
    run(sign_in(ctx, core))
    ctx_b = run(connect_b(window, other.c))
    fleet = window.cores.fleet
    run(until(lambda: fleet.rowCount() == 2, "both nodes"))
    key_a, key_b = node_key(0, 1), node_key(1, 1)
    assert merged_cell(window, key_b, "status") == "Online"

    run(other.stop())
    run(until(lambda: merged_cell(window, key_b, "status") == UNREACHABLE, "core B's row degraded"))
    assert merged_cell(window, key_b, "status", OnlineRole) is False  # drawn greyed
    assert "Site B" in merged_cell(window, key_b, "status", Qt.ItemDataRole.ToolTipRole)
    assert merged_cell(window, key_a, "status") == "Online" and merged_cell(
        window, key_a, "status", OnlineRole
    )
    assert fleet.counts() == (1, 1)
    assert "Site B: unreachable" in window.core_menu.label.text()
    assert "unreachable: Site B" in window.tray_state.tooltip
    assert ctx.live.state == LinkState.CONNECTED  # core A's link is untouched

    # Core A keeps updating live meanwhile.
    run(a_web.send_samples(a_web.make(1, cpu=77.0)))
    run(until(lambda: merged_cell(window, key_a, "cpu_pct", SortRole) == 77.0, "core A's live sample"))

    # Core B comes back on the same port: its link reconnects by itself and its rows recover.
    assert other.core is not None
    run(other.start(other.core.port))
    ctx_b.live.reconnect_now()
    run(until(lambda: merged_cell(window, key_b, "status") != UNREACHABLE, "core B's row back"), timeout=15)
    assert window.tray_state.cores_down == []


def test_merged_alerts_from_both_cores(
    two: MainWindow, ctx: AppContext, core: RunningCore, other: Cores, run: Run, qtmodeltester: Any
) -> None:
    window = two
    a_web = run(enrolled(core, "web-1", cpu=10.0))
    b_db = run(enrolled(other.c, "db-1", cpu=10.0))
    run(sign_in(ctx, core))
    ctx_b = run(connect_b(window, other.c))
    rule = {"name": "cpu high", "metric": "cpu_pct", "op": ">", "threshold": 90, "targets": {"all": True}}
    for c in (core, other.c):
        token = run(c.admin_token())
        status, body = run(c.request("POST", "/api/v1/alert-rules", token, json=rule))
        assert status == 201, body
    panel = window.core_menu.open_alerts()
    qtmodeltester.check(panel.model)
    assert panel.model.rowCount() == 0

    run(a_web.send_samples(a_web.make(1, cpu=97.0, ts=time.time())))
    run(b_db.send_samples(b_db.make(1, cpu=98.0, ts=time.time())))
    run(until(lambda: panel.model.rowCount() == 2, "both cores' alerts, pushed live"))
    got = sorted((r.core, r.alert.node, r.alert.rule) for r in panel.model.records)
    assert got == [("Site B", "db-1", "cpu high"), ("Test core", "web-1", "cpu high")]
    assert panel.model.index(0, 0).data() in ("Site B", "Test core")
    assert panel.status.text() == "2 firing alerts on 2 cores"
    # Both alerts are number 1 on their core; the tray keeps them apart and names the core.
    assert {r.alert.id for r in panel.model.records} == {1}
    run(until(lambda: len(window.tray_state.firing) == 2, "both in the tray"))
    assert sorted(a.node for a in window.tray_state.firing.values()) == ["db-1 · Site B", "web-1 · Test core"]
    # The fleet rows show them too, each on its own core.
    run(until(lambda: "1 alert" in merged_cell(window, node_key(1, 1), "status"), "core B's row"))

    # Acknowledge core B's from the merged list: it goes to core B.
    row = next(i for i, r in enumerate(panel.model.records) if r.core == "Site B")
    panel.table.selectionModel().select(
        panel.model.index(row, 0),
        QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows,
    )
    assert panel.ack_button.isEnabled()
    panel.ack_button.click()
    run(until(lambda: any(r.alert.acked_by == "admin" for r in panel.model.records), "the ack"))
    acked = [r for r in panel.model.records if r.alert.acked_by]
    assert [r.core for r in acked] == ["Site B"]
    b_alerts = run(ctx_b.rest.alerts(state="firing"))
    a_alerts = run(ctx.rest.alerts(state="firing"))
    assert [a.acked_by for a in b_alerts] == ["admin"] and [a.acked_by for a in a_alerts] == [None]

    # The tray's Acknowledge routes by the keyed id too.
    keyed_a = next(a for a in window.tray_state.firing.values() if a.node == "web-1 · Test core")
    window.acknowledge_alert(keyed_a.id)
    run(
        until(
            lambda: all(r.alert.acked_by == "admin" for r in panel.model.records),
            "core A's ack from the tray",
        )
    )
    assert [a.acked_by for a in run(ctx.rest.alerts(state="firing"))] == ["admin"]


def test_the_merged_alerts_model_keeps_two_cores_alert_1_apart(qtmodeltester: Any) -> None:
    def alert(node: str, state: str = "firing", **over: Any) -> Alert:
        values: dict[str, Any] = dict(
            id=1, rule_id=1, rule="cpu high", node_id=1, node=node, metric="cpu_pct", op=">",
            threshold=90.0, state=state, severity="warning", value=97.0, peak=98.5,
            started_at=100.0, fired_at=160.0,
        )  # fmt: skip
        values.update(over)
        return Alert(**values)

    model = MergedAlertsModel()
    qtmodeltester.check(model)
    model.fill([CoreAlert(0, "A", alert("web-1"))])
    model.upsert(CoreAlert(1, "B", alert("db-1")))  # the same id on another core: a new row
    assert [(r.core, r.alert.node) for r in model.records] == [("B", "db-1"), ("A", "web-1")]
    model.upsert(CoreAlert(1, "B", alert("db-1", acked_by="bob")))  # in place
    assert model.index(0, 7).data() == "bob" and model.rowCount() == 2
    model.upsert(CoreAlert(0, "A", alert("web-1", state="resolved", resolved_at=200.0)))  # leaves
    assert [(r.core, r.alert.node) for r in model.records] == [("B", "db-1")]
    qtmodeltester.check(model)


def test_the_cores_open_last_time_reopen_from_the_keyring(
    qapp: QApplication,
    ctx: AppContext,
    core: RunningCore,
    other: Cores,
    run: Run,
    keyring_backend: MemoryKeyring,
    settings_file: Path,
) -> None:
    run(enrolled(other.c, "cache-1"))
    run(sign_in(ctx, core))
    window = MainWindow(ctx)
    try:
        run(connect_b(window, other.c))
        run(until(lambda: window.cores.fleet.rowCount() == 1, "core B's node"))
        # Quit: the other core's socket closes, its sign-in stays in the keyring.
        run(window.cores.close())
    finally:
        window._quitting = True
        window.close()
        window.deleteLater()
    ctx.store_sync()

    # The next start, on the same settings and keyring: core B opens by itself, signed in.
    again = make_ctx(qapp, settings_file)
    second = MainWindow(again)
    try:
        second.start()
        run(until(lambda: len(second.cores.contexts) == 2, "core B back in the window"))
        b = second.cores.contexts[1]
        run(until(lambda: b.live.state == LinkState.CONNECTED, "core B live again"))
        run(until(lambda: rows(second) == [("Site B", "cache-1")] or len(rows(second)) == 1, "core B's rows"))
        assert ("Site B", "cache-1") in rows(second)

        # A kept token the core refuses (revoked) leaves the core in the window, saying so.
        run(second.cores.close())
        keyring_backend.items[("servermanager", profile_b(other.c).secret_key)] = "not-a-token"
    finally:
        second._quitting = True
        second.close()
        second.deleteLater()
        run(again.close())

    third_ctx = make_ctx(qapp, settings_file)
    third = MainWindow(third_ctx)
    try:
        third.start()
        run(until(lambda: len(third.cores.contexts) == 2, "core B in the window"))
        run(until(lambda: third.cores.fleet.problem(1) == SIGNED_OUT, "core B says it needs a sign-in"))
    finally:
        run(third.cores.close())
        third._quitting = True
        third.close()
        third.deleteLater()
        run(third_ctx.close())


@pytest.fixture
def tls_other(run: Run, tmp_path: Path) -> Iterator[Cores]:
    """A second core over HTTPS/WSS with the certificate it made for itself."""
    box = Cores(tmp_path / "core-b", tls="on")
    run(box.start())
    try:
        yield box
    finally:
        run(box.stop())


def test_another_core_is_trusted_on_first_use_and_when_it_rekeys(
    window: MainWindow,
    ctx: AppContext,
    core: RunningCore,
    tls_other: Cores,
    run: Run,
    keyring_backend: MemoryKeyring,
) -> None:
    other = tls_other
    run(enrolled(other.c, "vault-1"))
    run(sign_in(ctx, core))
    try:
        other.requests.clear()  # the agent's enrollment; from here on, only what the app sends
        # File → Connect another core…, filled in and submitted as a user does.
        window.core_menu.connect_action.trigger()
        dialog = window.core_menu.dialog
        assert dialog is not None and dialog.windowTitle() == "Connect another core"
        dialog.profile_box.setCurrentText("New profile…")
        dialog.name_edit.setText("Vault")
        dialog.url_edit.setText(other.c.url)
        dialog.user_edit.setText("admin")
        dialog.password_edit.setText(admin_password(other.c))
        dialog.connect_button.click()
        run(until(lambda: window.certificate_dialog is not None, "the certificate dialog"))
        first = window.certificate_dialog
        assert first is not None and not first.changed
        assert fingerprint_text(first, "presented") == other.c.fingerprint
        assert other.requests == [] and len(window.cores.contexts) == 1  # nothing sent before trust
        first.trust_button.click()
        run(until(lambda: len(window.cores.contexts) == 2, "the core added"))
        vault = window.cores.contexts[1]
        run(until(lambda: vault.live.state == LinkState.CONNECTED, "its live link over wss"))
        assert window.core_menu.dialog is None
        saved = ctx.profiles.get("Vault")
        assert saved is not None and saved.fingerprint == other.c.fingerprint
        assert (
            ctx.rest.session is not None and ctx.rest.session.url == core.url
        )  # the first core is untouched
        run(until(lambda: ("Vault", "vault-1") in rows(window), "its node"))

        # It re-keys while signed in: its link stops, the window asks, and trusting it brings it back.
        new = run(rekey(other))
        run(until(lambda: window.certificate_dialog is not None, "the changed-certificate warning"))
        warning = window.certificate_dialog
        assert warning is not None and warning.changed and fingerprint_text(warning, "presented") == new
        run(until(lambda: window.cores.fleet.problem(1) == UNREACHABLE, "its rows marked"))
        assert other.requests == []  # no token went to the re-keyed core
        assert ctx.live.state == LinkState.CONNECTED
        assert warning.confirm_box is not None
        warning.confirm_box.setChecked(True)
        warning.trust_button.click()
        run(until(lambda: vault.live.state == LinkState.CONNECTED, "its link with the new pin"), timeout=15)
        assert vault.rest.session is not None and vault.rest.session.pin == new
        saved = ctx.profiles.get("Vault")
        assert saved is not None and saved.fingerprint == new
        run(until(lambda: window.cores.fleet.problem(1) is None, "its rows current again"))
    finally:
        run(window.cores.close())


def test_offline_start_shows_each_cores_kept_rows_and_only_the_down_one_degrades(
    qapp: QApplication,
    core: RunningCore,
    other: Cores,
    run: Run,
    keyring_backend: MemoryKeyring,
    settings_file: Path,
    tmp_path: Path,
) -> None:
    cache = FleetCache(tmp_path / "fleet-cache")

    def make() -> AppContext:
        store = QSettings(str(settings_file), QSettings.Format.IniFormat)
        return AppContext.create(
            qapp, store, backoff=(0.1, 0.5), ping_every=0.3, request_timeout=3.0, fleet_cache=cache
        )

    run(enrolled(core, "web-1"))
    run(enrolled(other.c, "cache-1"))
    first = make()
    window = MainWindow(first)
    try:
        run(sign_in(first, core))
        run(connect_b(window, other.c))
        run(until(lambda: len(rows(window)) == 2, "both cores' rows"))
        run(window.cores.close())  # quit: each core's fleet is kept, per core
    finally:
        window._quitting = True
        window.close()
        window.deleteLater()
        run(first.close())
    assert cache.load(other.c.url) is not None and cache.load(core.url) is not None

    # Core B is down when the app starts again: its kept rows show at once, marked, and stay
    # "Unreachable" while core A's go live.
    run(other.stop())
    again = make()
    window = MainWindow(again)
    try:
        window.start()
        assert len(window.cores.contexts) == 2  # before any answer from either core
        assert ("Site B", "cache-1") in rows(window)
        b = window.cores.contexts[1]
        assert b.model.stale_since is not None
        run(until(lambda: again.live.state == LinkState.CONNECTED, "core A live"))
        run(until(lambda: window.cores.fleet.problem(1) == UNREACHABLE, "core B marked unreachable"))
        key_b = node_key(1, 1)
        assert merged_cell(window, key_b, "status") == UNREACHABLE
        assert "Cannot reach" in merged_cell(window, key_b, "status", Qt.ItemDataRole.ToolTipRole)
        assert merged_cell(window, node_key(0, 1), "status") == "Online"
    finally:
        run(window.cores.close())
        window._quitting = True
        window.close()
        window.deleteLater()
        run(again.close())


def test_a_refused_or_repeated_core_is_not_added(
    two: MainWindow, ctx: AppContext, core: RunningCore, other: Cores, run: Run
) -> None:
    window = two
    run(sign_in(ctx, core))
    dialog = window.core_menu.open_dialog()
    assert run(window.core_menu.connect_core(dialog, profile_b(other.c), "wrong password")) is None
    assert "password" in dialog.error.text().lower()
    assert len(window.cores.contexts) == 1 and ctx.profiles.also_open == []
    # The first core again: said, not added twice.
    again = run(window.core_menu.connect_core(dialog, profile_for(core, name="Same"), admin_password(core)))
    assert again is None and "already in this window" in dialog.error.text()
    assert len(window.cores.contexts) == 1
    run(window.core_menu.connect_core(dialog, profile_b(other.c), admin_password(other.c)))
    assert len(window.cores.contexts) == 2 and window.core_menu.dialog is None


def test_a_command_on_another_core_confirms_it_is_you_there(
    two: MainWindow, ctx: AppContext, core: RunningCore, other: Cores, run: Run
) -> None:
    window = two
    b_web = run(enrolled(other.c, "web-1"))
    run(sign_in(ctx, core))
    ctx_b = run(connect_b(window, other.c))
    window.show()
    assert b_web.node_id is not None
    run(other.c.core.db.execute("UPDATE tokens SET stepped_up_at = stepped_up_at - 3600"))  # long ago
    console = window.open_console([node_key(1, b_web.node_id)])
    assert console is not None and console.ctx is ctx_b
    console.command.setText("uptime")
    console.run_button.click()
    flow = window.core_menu.flows[1]
    run(until(lambda: flow.step_up_dialog is not None, "Confirm it's you, for core B"))
    assert window.account.step_up_dialog is None  # not the first core's prompt
    step = flow.step_up_dialog
    assert step is not None
    step.secret.setText(admin_password(other.c))
    step.confirm_button.click()
    cmd = run(answer(b_web, stdout="up 3 days\n"))  # the command reached core B's agent
    assert cmd.shell == "uptime"
    out = console.outputs[b_web.node_id]
    run(until(lambda: out.done, "the result"))
    assert out.stdout == "up 3 days\n"

    # Disconnecting core B unhooks its prompt.
    window.core_menu.disconnect_core(1)
    run(until(lambda: ctx_b.rest.session is None, "signed out of core B"))
    assert 1 not in window.core_menu.flows and ctx_b.rest.confirm_identity is None


def test_signing_out_of_the_first_core_leaves_the_others_watched(
    two: MainWindow, ctx: AppContext, core: RunningCore, other: Cores, run: Run
) -> None:
    window = two
    run(enrolled(core, "web-1"))
    run(enrolled(other.c, "cache-1"))
    run(sign_in(ctx, core))
    ctx_b = run(connect_b(window, other.c))
    run(until(lambda: window.cores.fleet.rowCount() == 2, "both cores' rows"))
    assert window.tray_state.level == Level.UP

    run(ctx.signin.sign_out())
    run(until(lambda: rows(window) == [("Site B", "cache-1")], "only core B's rows"))
    assert ctx_b.live.state == LinkState.CONNECTED
    # The tray goes on watching core B: its colour and counts, not "not signed in".
    run(until(lambda: window.tray_state.level == Level.UP, "the tray on core B"))
    assert window.tray_state.tooltip.startswith("Server Manager: 1 online, 0 offline")

    # Connect… to core B as the first core is refused: it is in the window already.
    dialog = window.open_connection()
    run(window._connect(dialog, profile_b(other.c), admin_password(other.c), True, False))
    assert "already in this window" in dialog.error.text() and ctx.rest.session is None


def test_the_tray_with_only_other_cores_live(qapp: QApplication) -> None:
    state = TrayState()
    assert state.level == Level.DISCONNECTED and state.tooltip == "Server Manager: not signed in"
    state.set_cores_live(1)
    state.set_counts(3, 0)
    assert state.level == Level.UP and state.tooltip == "Server Manager: 3 online, 0 offline"
    state.set_cores_down(["Site C"])
    assert state.level == Level.DOWN and state.tooltip.endswith("; unreachable: Site C")
    state.set_link(LinkState.OFFLINE.value, "refused")  # the first core failing still shows
    assert state.level == Level.DISCONNECTED
