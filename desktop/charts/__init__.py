"""History charts: pyqtgraph widgets that draw metric series, and the ranges they ask the core for."""
