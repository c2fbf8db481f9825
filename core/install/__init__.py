"""Adding a server in one line: the agent package, the install scripts the core renders, and the lines to paste."""
