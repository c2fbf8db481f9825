"""The four benchmark parts run by benchmarks.run: agent overhead, core load, storage, history queries."""
