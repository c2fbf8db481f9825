"""The HTTP side of the core: routing, the REST handlers, the OpenAPI document and the Prometheus export."""
