"""Read-only log access for the core: the journal and the files the agent's [logs] config allowlists."""
