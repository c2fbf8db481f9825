"""Benchmark scripts: the fleet simulator, the harness and one module per benchmark (docs/benchmarks.md)."""
