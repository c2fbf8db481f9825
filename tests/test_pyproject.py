"""The wheel's package list in pyproject.toml names every package of the source tree, under servermanager."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("common", "core", "agent", "desktop")


def _setuptools() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return dict(tomllib.load(fh)["tool"]["setuptools"])


def test_every_source_package_is_in_the_wheel_under_servermanager() -> None:
    tree = {"servermanager"} | {
        "servermanager." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in SOURCES
        for init in (ROOT / top).rglob("__init__.py")
    }
    listed = set(_setuptools()["packages"])  # type: ignore[arg-type]
    missing = sorted(tree - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_each_top_level_folder_maps_to_its_namespace_and_is_linked_for_the_source_tree() -> None:
    mapping = _setuptools()["package-dir"]
    for top in SOURCES:
        assert mapping[f"servermanager.{top}"] == top  # type: ignore[index]
        link = ROOT / "servermanager" / top
        # The source tree imports servermanager.<top> through this link, as the wheel installs it.
        assert link.is_symlink() and link.resolve() == (ROOT / top).resolve(), link
