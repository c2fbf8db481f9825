"""The lines an admin pastes, as `servermanager admin enroll-token` prints them beside the bare agent command."""

from __future__ import annotations

import shlex
from pathlib import Path

import msgspec
import pytest

from servermanager.core.admin import enroll_command
from servermanager.core.install.commands import origin
from servermanager.core.settings import CoreSettings
from servermanager.core.tls import current_pins, server_tls


def test_the_cli_prints_the_one_line_installers_with_the_pins(tmp_path: Path) -> None:
    settings = msgspec.convert(
        {"listen": "0.0.0.0:8760", "data_dir": str(tmp_path), "tls": "on"}, CoreSettings
    )
    assert server_tls(settings, tmp_path) is not None  # the certificate, as the first start makes it
    pins = current_pins(settings, tmp_path)
    assert pins is not None
    text = enroll_command(settings, "sme_abc", host="core.example")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    linux = next(ln for ln in lines if ln.startswith("printf"))
    words = shlex.split(linux)
    assert words[words.index("--pinnedpubkey") + 1] == pins[1]
    assert "https://core.example:8760/api/v1/agent/install.sh" in words
    windows = next(ln for ln in lines if ln.startswith("$token='sme_abc'"))
    assert f"'{pins[0].partition(':')[2]}'" in windows
    assert "iex $w.DownloadString('https://core.example:8760/api/v1/agent/install.ps1')" in windows
    # The bare agent command stays first, as before.
    assert next(ln for ln in lines if "servermanager agent" in ln).startswith(
        "SM_AGENT_ENROLL_TOKEN=sme_abc "
    )


@pytest.mark.parametrize(
    "bad",
    ["ftp://core:1", "https://core:1/path", "https://core:1?x=1", "https://u:p@core:1", "https://co re:1"],
)
def test_a_core_address_is_a_scheme_a_host_and_a_port(bad: str) -> None:
    with pytest.raises(ValueError, match="not a core address"):
        origin(bad)
    assert origin("HTTPS://core.example:8760/") == "https://core.example:8760"
    assert origin("https://[::1]:8760") == "https://[::1]:8760"
