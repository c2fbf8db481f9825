"""`python -m agent`: the same as `servermanager agent`."""

from agent.main import cli

raise SystemExit(cli())
