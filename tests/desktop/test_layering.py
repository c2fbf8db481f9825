"""The shipped desktop package imports only the contract (servermanager.common) and itself: never the core or agent."""

from __future__ import annotations

import ast
from pathlib import Path

DESKTOP = Path(__file__).resolve().parents[2] / "desktop"
FORBIDDEN = ("servermanager.core", "servermanager.agent", "servermanager.cli", "servermanager.demo")


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
    return out


def test_nothing_under_desktop_imports_the_core_or_the_agent() -> None:
    files = sorted(DESKTOP.rglob("*.py"))
    assert len(files) > 20
    wrong = {
        f"{path.relative_to(DESKTOP)}: {name}"
        for path in files
        for name in _imports(path)
        if name.startswith(FORBIDDEN) or name.split(".")[0] in ("core", "agent", "desktop", "common")
    }
    assert not wrong, sorted(wrong)
