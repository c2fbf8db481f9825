"""The operator's signing key in the desktop app: made once, kept in the keyring, signing what the
console and the services panel send, which a real agent trusting it runs (and one that does not, refuses)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backends.fail
import pytest
from PySide6.QtGui import QGuiApplication

from devkit.cores import RunningCore
from servermanager.agent.exec.signing import UNSIGNED
from servermanager.agent.settings import ExecSettings
from servermanager.common.signing import parse_public_key
from servermanager.desktop.context import AppContext
from servermanager.desktop.secrets import SERVICE, Kept, TokenStore
from servermanager.desktop.signing import ACCOUNT, OperatorKey
from servermanager.desktop.window import MainWindow
from tests.agent.fakes import fake_systemctl
from tests.desktop.agents import Agents
from tests.desktop.conftest import MemoryKeyring, Run, sign_in, until
from tests.helpers.signing import Operator


@pytest.fixture
def agents(run: Run, tmp_path: Path, core: RunningCore) -> Iterator[Agents]:
    box = Agents(run, tmp_path)
    try:
        yield box
    finally:
        box.stop()


def test_the_key_is_made_once_and_kept_only_in_the_keyring(
    keyring_backend: MemoryKeyring, run: Run, settings_file: Path
) -> None:
    first = OperatorKey(TokenStore(), comment="alice@desk")
    run(first.key())
    assert first.kept == Kept.KEYRING
    stored = keyring_backend.items[(SERVICE, ACCOUNT)]
    assert stored.startswith("ed25519-seed:")
    line = first.public_line()
    assert line.endswith(" alice@desk") and parse_public_key(line).key_id == first.key_id()
    # The next start of the app (a new store, the same keyring) signs with the same key.
    again = OperatorKey(TokenStore(), comment="alice@desk")
    run(again.key())
    assert again.public_line() == line
    assert keyring_backend.writes == 1
    # Nothing of it is in the app's settings file.
    assert not settings_file.exists() or stored.split(":", 1)[1] not in settings_file.read_text()


@pytest.fixture
def no_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


def test_without_a_keyring_the_key_lasts_the_session(run: Run, no_keyring: None) -> None:
    key = OperatorKey(TokenStore())
    run(key.key())
    assert key.kept == Kept.SESSION
    other = OperatorKey(TokenStore())
    run(other.key())
    assert other.public_line() != key.public_line()


def test_the_console_signs_with_the_keyring_key(
    window: MainWindow,
    ctx: AppContext,
    core: RunningCore,
    run: Run,
    keyring_backend: MemoryKeyring,
    agents: Agents,
    tmp_path: Path,
) -> None:
    run(ctx.signing.key())
    mine = ctx.signing.public_line()
    stored = keyring_backend.items[(SERVICE, ACCOUNT)]
    trusting = run(
        agents.start(core, "web", ExecSettings(enabled=True, allow=["echo *"], trusted_keys=[mine]))
    )
    other = run(
        agents.start(core, "db", ExecSettings(enabled=True, allow=["echo *"], trusted_keys=[Operator().line]))
    )
    run(sign_in(ctx, core))
    window.show()
    window.fleet.select_nodes([trusting, other])
    window.fleet.run_button.click()
    console = window.console
    assert console is not None
    console.argv.setChecked(True)
    console.command.setText("echo signed by the desktop")
    console.run_button.click()
    run(until(lambda: all(o.done for o in console.outputs.values()) and console.outputs, "both results"))
    ok, refused = console.outputs[trusting], console.outputs[other]
    assert (ok.badge.text(), ok.stdout) == ("ok", "signed by the desktop\n")
    assert refused.status == "refused" and refused.stdout == ""
    assert f"{ctx.signing.key_id()} is not one of this agent's [exec] trusted keys" in refused.badge.text()
    assert console.command_id is not None
    info = run(ctx.rest.command(console.command_id))
    assert {r.node_id: r.signed_by for r in info.runs} == {
        trusting: ctx.signing.key_id(),
        other: ctx.signing.key_id(),
    }
    # The key was made once, in the keyring, and that one signed.
    assert keyring_backend.items[(SERVICE, ACCOUNT)] == stored


def test_the_services_panel_signs_its_requests(
    window: MainWindow,
    ctx: AppContext,
    core: RunningCore,
    run: Run,
    keyring_backend: MemoryKeyring,
    agents: Agents,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    systemctl = fake_systemctl(tmp_path, monkeypatch)
    run(ctx.signing.key())
    node = run(
        agents.start(
            core,
            "web",
            ExecSettings(enabled=True, allow=["service *"], trusted_keys=[ctx.signing.public_line()]),
        )
    )
    run(sign_in(ctx, core))
    window.show()
    panel = window.open_node(node).show_services()
    run(until(lambda: panel.loads == 1, "the service list"))
    assert panel.status.text() == "1 services"
    assert panel.select("nginx")
    box = panel.ask("restart")
    assert box is not None
    [confirm] = [b for b in box.buttons() if b.text() == "Restart"]
    confirm.click()
    run(until(lambda: "nginx" in panel.status.text() and not panel.busy, "the restart outcome"))
    assert panel.status.text() == "Restart nginx: done."
    actions = [c for c in systemctl.calls if c[0] not in ("list-units", "list-unit-files")]
    assert actions == [["--no-ask-password", "restart", "nginx.service"]]

    # Without its signer, the same app is refused by this agent.
    ctx.rest.signer = None
    panel.refresh()
    run(until(lambda: panel.loads == 2, "the unsigned list"))
    assert panel.status.text().startswith("Could not list services: ")
    assert UNSIGNED in panel.status.text()


def test_the_signing_key_dialog_shows_the_line_to_trust(
    window: MainWindow, ctx: AppContext, run: Run, keyring_backend: MemoryKeyring
) -> None:
    dialog = run(window.open_signing_key())
    line = ctx.signing.public_line()
    assert dialog.line.text() == line and dialog.isVisible()
    assert f'trusted_keys = ["{line}"]' in dialog.instruction.text()
    dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == line
    assert run(window.open_signing_key()) is dialog
