"""Talking to the core: REST calls, the live socket with its fallback to polling, and signing in."""
