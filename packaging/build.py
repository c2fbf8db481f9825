#!/usr/bin/env python3
"""Builds what this machine can build into dist/: `python3 packaging/build.py [--only deb]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

# packaging/ is not an importable package (the name would shadow PyPI's `packaging`): its modules
# are imported from beside this script.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import debs
import desktop_bundle

ROOT = Path(__file__).resolve().parents[1]


def build_debs(args: argparse.Namespace) -> list[Path]:
    return debs.build(
        args.out.resolve(), python=args.python, cache=args.cache.resolve() if args.cache else None
    )


def build_desktop(args: argparse.Namespace) -> list[Path]:
    """The frozen desktop app: its folder, and on Linux the .tar.gz beside it."""
    folder = desktop_bundle.build(args.out.resolve())
    return [folder, *sorted(args.out.resolve().glob(f"{desktop_bundle.NAME}-*.tar.gz"))]


def build_wheel(args: argparse.Namespace) -> list[Path]:
    """The wheel that `pip install 'servermanager[core]'` (or agent, desktop) takes."""
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    wheel = debs.build_wheel(out / ".wheel-work")
    dest = out / wheel.name
    wheel.replace(dest)
    (out / ".wheel-work" / "wheel").rmdir()
    (out / ".wheel-work").rmdir()
    return [dest]


# Each target builds into args.out and returns what it wrote.
TARGETS: dict[str, Callable[[argparse.Namespace], list[Path]]] = {
    "deb": build_debs,
    "desktop": build_desktop,
    "wheel": build_wheel,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="packaging/build.py", description=__doc__)
    ap.add_argument("--only", action="append", choices=sorted(TARGETS), help="build only this (repeat)")
    ap.add_argument("--out", type=Path, default=ROOT / "dist", help="where artifacts go (default dist/)")
    ap.add_argument(
        "--python",
        default="/usr/bin/python3",
        help="the target's system interpreter the .debs' venvs are built on (default %(default)s)",
    )
    ap.add_argument(
        "--cache",
        type=Path,
        help="reuse builds of unchanged sources from this dir (tests and CI; a release builds afresh)",
    )
    args = ap.parse_args(argv)
    made: list[Path] = []
    for name in args.only or sorted(TARGETS):
        try:
            made += TARGETS[name](args)
        except (debs.BuildError, desktop_bundle.BuildError) as exc:
            print(f"packaging/build.py: {name}: {exc}", file=sys.stderr)
            return 1
    for path in made:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
