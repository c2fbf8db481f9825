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

ROOT = Path(__file__).resolve().parents[1]


def build_debs(args: argparse.Namespace) -> list[Path]:
    return debs.build(
        args.out.resolve(), python=args.python, cache=args.cache.resolve() if args.cache else None
    )


# Each target builds into args.out and returns what it wrote.
TARGETS: dict[str, Callable[[argparse.Namespace], list[Path]]] = {"deb": build_debs}


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
        except debs.BuildError as exc:
            print(f"packaging/build.py: {name}: {exc}", file=sys.stderr)
            return 1
    for path in made:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
