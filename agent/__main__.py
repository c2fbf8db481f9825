"""`python -m servermanager.agent`: the same as `servermanager agent`."""

from servermanager.agent.cli import cli

raise SystemExit(cli())
