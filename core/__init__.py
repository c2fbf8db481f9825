"""Server Manager core: the hub daemon (gateways, storage, auth, REST, commands)."""
