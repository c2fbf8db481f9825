"""Offline start: the fleet kept per core (atomic, 0600, no secrets) opens stale at once and the live list replaces it."""

from __future__ import annotations

import stat
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from servermanager.common import protocol as p
from servermanager.desktop.context import AppContext
from servermanager.desktop.fleetcache import FleetCache
from servermanager.desktop.net.live import LinkState
from servermanager.desktop.window import MainWindow
from tests.desktop.conftest import (
    Cores,
    MemoryKeyring,
    Run,
    admin_password,
    close_agents,
    enrolled,
    sign_in,
    until,
)


def node(node_id: int, name: str) -> p.NodeInfo:
    return p.NodeInfo(node_id, name, "", [], True, 1000.0, 900.0)


def test_the_cache_is_per_core_atomic_and_private(tmp_path: Path) -> None:
    cache = FleetCache(tmp_path / "cache")
    assert cache.load("http://a:1") is None
    cache.save("http://a:1", [node(1, "web-1")], now=1234.0)
    cache.save("http://b:2", [node(1, "other")])
    kept = cache.load("http://a:1")
    assert kept is not None and kept.saved_at == 1234.0 and [n.name for n in kept.nodes] == ["web-1"]
    path = cache.path_for("http://a:1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [f.name for f in path.parent.iterdir() if f.name.startswith(".")] == []  # no temp file left
    other = cache.load("http://b:2")
    assert other is not None and other.nodes[0].name == "other"
    # A damaged file is ignored (one log line), not a traceback at start-up.
    path.write_bytes(b"{not json")
    assert cache.load("http://a:1") is None


def make(qapp: QApplication, settings_file: Path, cache: FleetCache) -> AppContext:
    store = QSettings(str(settings_file), QSettings.Format.IniFormat)
    return AppContext.create(
        qapp, store, backoff=(0.1, 0.5), ping_every=0.3, request_timeout=3.0, fleet_cache=cache
    )


def test_offline_start_shows_the_kept_fleet_stale_until_the_core_answers(
    cores: Cores,
    run: Run,
    keyring_backend: MemoryKeyring,
    qapp: QApplication,
    settings_file: Path,
    tmp_path: Path,
) -> None:
    cache = FleetCache(tmp_path / "cache")
    core = cores.c
    run(enrolled(core, "web-1", cpu=42.0))
    run(enrolled(core, "db-1", cpu=7.0))
    first = make(qapp, settings_file, cache)
    try:
        run(sign_in(first, core))
        run(until(lambda: first.model.rowCount() == 2, "two nodes"))
    finally:
        run(first.close())
    kept = cache.load(core.url)
    assert kept is not None and sorted(n.name for n in kept.nodes) == ["db-1", "web-1"]
    raw = cache.path_for(core.url).read_text()
    assert admin_password(core) not in raw and "token" not in raw.lower()
    assert all(secret not in raw for secret in keyring_backend.items.values())

    # The next start, with the core down: the kept fleet shows at once, marked stale, no dialog.
    port = core.port
    run(close_agents())
    run(cores.stop())
    ctx = make(qapp, settings_file, cache)
    window = MainWindow(ctx)
    try:
        window.start()
        assert ctx.model.rowCount() == 2 and ctx.model.stale_since == kept.saved_at
        fleet = window.fleet
        assert fleet.proxy.rowCount() == 2
        assert not fleet.stale_label.isHidden() and "Offline since" in fleet.stale_label.text()
        status = ctx.model.column("status")
        assert all("(cached)" in str(ctx.model.index(r, status).data()) for r in range(2))
        run(until(lambda: "Cannot reach" in fleet.stale_label.text(), "the reason it is still stale"))
        assert window.connection_dialog is None and ctx.rest.session is None
        assert ctx.model.rowCount() == 2  # still the kept rows while it retries

        # The core comes back: the retry signs in, and the live list replaces the kept one.
        run(cores.start(port))
        run(until(lambda: ctx.live.state == LinkState.CONNECTED, "the live link"))
        run(until(lambda: ctx.model.stale_since is None, "live rows"))
        assert fleet.stale_label.isHidden()
        assert ctx.model.rowCount() == 2
        texts = [str(ctx.model.index(r, status).data()) for r in range(2)]
        assert all("(cached)" not in t for t in texts), texts
        assert all(not n.online for n in ctx.model.nodes())  # live truth: their agents are gone
        assert window.connection_dialog is None
    finally:
        window._quitting = True
        window.close()
        run(ctx.close())
