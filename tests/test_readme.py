"""The README's configuration reference lists every setting the daemons accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from servermanager.agent.settings import AgentSettings
from servermanager.core.settings import CoreSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("cls", [CoreSettings, AgentSettings])
def test_every_setting_is_documented(cls: type) -> None:
    missing = [f for f in cls.__struct_fields__ if f"| `{f}` |" not in README]
    assert missing == []


def test_two_setup_commands() -> None:
    assert "python3 dev.py run" in README
    assert "python3 dev.py test" in README
    assert "python3 dev.py test" in (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
