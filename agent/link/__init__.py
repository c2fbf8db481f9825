"""The agent's link to the core: the connection state machine and the stream over one socket."""
