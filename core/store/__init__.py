"""The core's SQLite storage: schema, connections, and the sample writer, history reads and upkeep."""
