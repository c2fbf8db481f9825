"""Entry point of the frozen desktop app: the flags of `servermanager desktop` (--core, --self-test, --version)."""

import sys

from servermanager.desktop.main import cli

if __name__ == "__main__":
    sys.exit(cli(prog="servermanager-desktop"))
