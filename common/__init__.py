"""The wire contract every part shares: frames, REST bodies, the metric table, settings loading."""

# The one place the version is written; pyproject.toml reads it from here.
__version__ = "0.1.0"
