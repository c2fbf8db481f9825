"""`python -m agent`: the same as `servermanager agent`."""

from agent.cli import cli

raise SystemExit(cli())
