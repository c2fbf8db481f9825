"""Server Manager agent: the daemon on each server (collectors, spool, link to the core, remote operations)."""
