"""Development kit shared by tests, benchmarks and tools (not shipped): real cores on loopback ports."""
